//! `peercall check`: all OK on free loopback ports; a taken port or an expired certificate fails, in words.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{free_port, run};

fn base(http: u16, turn: u16) -> Vec<String> {
    [
        "check".to_owned(),
        "--http".into(),
        format!("127.0.0.1:{http}"),
        "--listen".into(),
        format!("127.0.0.1:{turn}"),
        "--relay-ip".into(),
        "127.0.0.1".into(),
    ]
    .into()
}

fn check(args: &[String]) -> (bool, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs, &[]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn all_ok_on_free_loopback_ports() {
    let (ok, text) = check(&base(free_port(), free_port()));
    assert!(ok, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
}

#[test]
fn a_taken_port_fails_and_names_the_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (ok, text) = check(&base(port, free_port()));
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("FAIL  cannot listen on 127.0.0.1:{port}/tcp"))
            && text.contains("change --http"),
        "{text}"
    );
}

#[test]
fn an_expired_or_foreign_certificate_fails_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let mut args = base(free_port(), free_port());
    args.extend([
        "--tls-cert".into(),
        c.display().to_string(),
        "--tls-key".into(),
        k.display().to_string(),
        "--tls-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--public-host".into(),
        "127.0.0.1".into(),
    ]);
    let (ok, text) = check(&args);
    assert!(!ok, "{text}");
    assert!(text.contains("expired on"), "{text}");
    assert!(text.contains("is not valid for 127.0.0.1"), "{text}");
    // A certificate file that is not one.
    std::fs::write(&c, "junk").unwrap();
    let (ok, text) = check(&args);
    assert!(
        !ok && text.contains("the certificate does not load"),
        "{text}"
    );
}
