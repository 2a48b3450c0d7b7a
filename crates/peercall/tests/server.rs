//! The running server over real loopback sockets: /healthz, /metrics, TLS, signals and shutdown.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, free_port, healthz, http_get, http_request};
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn serve_args(listen_port: u16) -> Vec<String> {
    vec![
        "serve".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--listen".into(),
        format!("127.0.0.1:{listen_port}"),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn healthz_and_metrics_answer_over_a_real_socket() {
    let port = free_port();
    let server = Server::start(&refs(&serve_args(port)), &[]);
    let addr = server.http_addr();

    let (status, health) = healthz(addr);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["mode"], "serve");
    assert_eq!(health["parts"]["http"]["status"], "up");
    assert_eq!(health["parts"]["signaling"]["status"], "up");
    assert_eq!(health["parts"]["web"]["status"], "up");
    assert_eq!(health["parts"]["turn"]["status"], "up");
    let want = format!("127.0.0.1:{port}");
    assert_eq!(health["parts"]["turn"]["udp"][0], want.as_str(), "{health}");
    assert_eq!(health["parts"]["turn"]["tcp"][0], want.as_str(), "{health}");

    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for name in [
        "peercall_build_info{version=\"",
        "peercall_uptime_seconds ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "peercall_part_up{part=\"turn\"} 1",
        "peercall_turn_allocations ",
        "peercall_signal_",
    ] {
        assert!(body.contains(name), "/metrics lacks {name:?}:\n{body}");
    }
    // Every sample line is NAME[{labels}] VALUE with a numeric value (Prometheus text format).
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }

    // The web client is served on the same port.
    let (status, _, page) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert!(
        page.to_ascii_lowercase().contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("STUN/TURN") && l.contains(&want)),
        "{:?}",
        server.banner
    );
}

#[test]
fn turn_alone_serves_health_and_metrics_but_no_web_client() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start(
        &[
            "turn",
            "--http",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--user",
            "u:p",
            "--realm",
            "example",
        ],
        &[],
    );
    let addr = server.http_addr();
    let (status, health) = healthz(addr);
    assert_eq!(status, 200);
    assert_eq!(health["parts"]["signaling"]["status"], "not running");
    assert_eq!(health["parts"]["turn"]["status"], "up");
    let (status, _, _) = http_get(addr, "/");
    assert_eq!(status, 404);
    let (_, _, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("peercall_turn_allocations") && !metrics.contains("peercall_signal_"),
        "{metrics}"
    );
    // A STUN Binding request over UDP is answered (the TURN part is really up, not only reported up).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(&[7u8; 12]);
    udp.send_to(&request, &listen).expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = udp.recv_from(&mut buf).expect("a STUN answer");
    assert!(
        n >= 20 && buf[0] == 0x01 && buf[1] == 0x01,
        "Binding success response expected"
    );
    assert_eq!(&buf[8..20], &[7u8; 12], "same transaction id");
}

#[test]
fn environment_beats_file_on_a_running_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("p.toml");
    let file_port = free_port();
    let env_port = free_port();
    std::fs::write(
        &file,
        format!("listen = [\"127.0.0.1:{file_port}\"]\nrealm = \"file-realm\"\n"),
    )
    .expect("write");
    let env_listen = format!("127.0.0.1:{env_port}");
    let server = Server::start(
        &[
            "turn",
            "--config",
            file.to_str().expect("utf-8"),
            "--http",
            "127.0.0.1:0",
            "--user",
            "u:p",
        ],
        &[("PEERCALL_LISTEN", &env_listen)],
    );
    let (_, health) = healthz(server.http_addr());
    assert_eq!(
        health["parts"]["turn"]["udp"][0],
        env_listen.as_str(),
        "{health}"
    );
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("realm \"file-realm\"")),
        "{:?}",
        server.banner
    );
}

#[test]
fn json_logs_are_json_lines() {
    let port = free_port();
    let mut args = serve_args(port);
    args.extend(["--log-format".into(), "json".into()]);
    let mut server = Server::start(&refs(&args), &[]);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(100));
    let stderr = server.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "some log lines expected");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

#[test]
fn sigterm_closes_websockets_and_exits_zero_within_seconds() {
    let port = free_port();
    let mut server = Server::start(&refs(&serve_args(port)), &[]);
    let ws_url = server.banner_value("signaling");
    assert!(
        ws_url.starts_with("ws://127.0.0.1:") && ws_url.ends_with("/ws"),
        "{ws_url}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut ws, _) = runtime
        .block_on(tokio_tungstenite::connect_async(ws_url.as_str()))
        .expect("WebSocket connects");
    let join = r#"{"v":1,"type":"join","room":"shutdown-test","name":"tester"}"#;
    runtime
        .block_on(futures_util::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::Text(join.into()),
        ))
        .expect("send join");
    let welcome = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), ws.next()).await })
        .expect("welcome in time")
        .expect("a message")
        .expect("no error");
    assert!(
        welcome.to_text().unwrap_or("").contains("welcome"),
        "{welcome:?}"
    );

    let started = Instant::now();
    server.signal(libc::SIGTERM);
    // The client is told: a close frame with 1001 (going away).
    let close = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => return frame,
                    Ok(_) => continue,
                    Err(e) => panic!("socket error before close frame: {e}"),
                }
            }
            panic!("socket ended without a close frame");
        })
        .await
        .expect("close frame within 5 s")
    });
    let frame = close.expect("close frame with a code");
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");

    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("exits within 8 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; stderr: {}",
        server.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The ports are released: binding the TURN port again works.
    std::net::UdpSocket::bind(("127.0.0.1", port)).expect("TURN port free after exit");
}

#[test]
fn sigint_stops_turn_alone_with_status_zero() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start(
        &[
            "turn",
            "--http",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--user",
            "u:p",
        ],
        &[],
    );
    let addr = server.http_addr();
    assert_eq!(healthz(addr).0, 200);
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("exits within 8 s of SIGINT");
    assert!(status.success(), "{status:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "HTTP port closed after exit"
    );
}

/// Accepts exactly the certificate whose SHA-256 the banner printed, then checks that certificate's names with
/// webpki, treating it as its own root.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) != self.fingerprint {
            return Err(rustls::Error::General(
                "certificate fingerprint differs from the printed one".into(),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(end_entity.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// GET `path` over TLS to `addr` presenting `name` as SNI; returns the status, the body and the certificate seen.
async fn https_get(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> Result<(u16, String, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A TLS close_notify-less end is fine here: the body is complete when the server closes.
    let _ = tls.read_to_end(&mut raw).await;
    let (status, _, body) = common::parse_response(&raw);
    Ok((status, body, cert))
}

#[test]
fn self_signed_tls_handshake_matches_the_printed_fingerprint() {
    let port = free_port();
    let mut args = serve_args(port);
    args.push("--tls-self-signed".into());
    let server = Server::start(&refs(&args), &[]);
    let url = server.banner_value("health");
    assert!(url.starts_with("https://"), "{url}");
    assert!(server.banner_value("signaling").starts_with("wss://"));
    let printed = server
        .banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("SHA-256 "))
        .unwrap_or_else(|| panic!("no fingerprint in {:?}", server.banner))
        .to_owned();
    let addr = server.http_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let verifier = Arc::new(PinnedVerifier {
        fingerprint: printed.clone(),
        provider: provider(),
    });
    // The certificate is valid for the names browsers use on this machine.
    for name in ["localhost", "127.0.0.1"] {
        let (status, body, cert) = runtime
            .block_on(https_get(
                client_config(verifier.clone()),
                addr,
                name,
                "/healthz",
            ))
            .unwrap_or_else(|e| panic!("HTTPS as {name}: {e}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(fingerprint(&cert), printed);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["parts"]["http"]["tls"], true);
    }
    // A client pinning another fingerprint is refused: the check above can fail.
    let wrong = Arc::new(PinnedVerifier {
        fingerprint: "00".into(),
        provider: provider(),
    });
    assert!(
        runtime
            .block_on(https_get(
                client_config(wrong),
                addr,
                "localhost",
                "/healthz"
            ))
            .is_err()
    );
    // Plain HTTP on the HTTPS port gets no page.
    let mut plain = std::net::TcpStream::connect(addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP must not be served on the HTTPS port"
    );
}

fn write_cert(dir: &std::path::Path, name: &str) -> (String, String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    (
        cert.to_str().expect("utf-8").to_owned(),
        key.to_str().expect("utf-8").to_owned(),
        fingerprint(certified.cert.der()),
    )
}

#[test]
fn tls_cert_files_serve_https_and_turns_and_reload_on_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, first) = write_cert(dir.path(), "site");
    let port = free_port();
    let tls_port = free_port();
    let mut args = serve_args(port);
    args.extend([
        "--tls-cert".into(),
        cert.clone(),
        "--tls-key".into(),
        key.clone(),
        "--tls-listen".into(),
        format!("127.0.0.1:{tls_port}"),
    ]);
    let server = Server::start(&refs(&args), &[]);
    let addr = server.http_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let get = |fp: &str, target: SocketAddr| {
        let verifier = Arc::new(PinnedVerifier {
            fingerprint: fp.to_owned(),
            provider: provider(),
        });
        runtime.block_on(https_get(
            client_config(verifier),
            target,
            "localhost",
            "/healthz",
        ))
    };
    let (status, body, _) = get(&first, addr).expect("HTTPS with the given certificate");
    assert_eq!(status, 200, "{body}");
    // TURNS uses the same certificate by default.
    let (_, health) = {
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        (status, json)
    };
    assert_eq!(
        health["parts"]["turn"]["tls"][0],
        format!("127.0.0.1:{tls_port}").as_str(),
        "{health}"
    );
    let turns = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let handshake = |fp: &str| {
        let verifier = Arc::new(PinnedVerifier {
            fingerprint: fp.to_owned(),
            provider: provider(),
        });
        runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(turns)
                .await
                .map_err(|e| e.to_string())?;
            tokio_rustls::TlsConnector::from(client_config(verifier))
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    handshake(&first).expect("TURNS handshake with the --tls-cert certificate");

    // SIGHUP: new certificate files are picked up by new connections of both ports.
    let (_, _, second) = write_cert(dir.path(), "next");
    std::fs::copy(dir.path().join("next.crt"), &cert).expect("replace cert");
    std::fs::copy(dir.path().join("next.key"), &key).expect("replace key");
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if get(&second, addr).is_ok() && handshake(&second).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 5 s of SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        get(&first, addr).is_err(),
        "the old certificate is no longer served"
    );
    // Still running after SIGHUP.
    assert_eq!(get(&second, addr).expect("https").0, 200);
}

#[test]
fn two_turn_servers_on_one_host_start_without_extra_flags_and_keep_health_on_their_address() {
    // Without --http, `peercall turn` used to open /healthz on 0.0.0.0:8080: on every interface although
    // TURN listened on one address, and a second instance failed on the taken port.
    let first_port = free_port();
    let second_port = free_port();
    let args = |port: u16| {
        vec![
            "turn".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--user".into(),
            "u:p".into(),
        ]
    };
    let first = Server::start(&refs(&args(first_port)), &[]);
    let second = Server::start(&refs(&args(second_port)), &[]);
    let (a, b) = (first.http_addr(), second.http_addr());
    assert_eq!(a.ip().to_string(), "127.0.0.1", "{:?}", first.banner);
    assert_eq!(b.ip().to_string(), "127.0.0.1", "{:?}", second.banner);
    assert_ne!(a.port(), b.port());
    for addr in [a, b] {
        let (status, health) = healthz(addr);
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["parts"]["turn"]["status"], "up");
    }
}

/// What a stranger on the internet sees: a request that came through a reverse proxy (it carries
/// X-Forwarded-For) or, below, one without the token.
const VIA_PROXY: &str = "X-Forwarded-For: 203.0.113.50";

#[test]
fn public_healthz_says_only_ok_and_metrics_need_loopback_or_the_token() {
    let port = free_port();
    let mut args = serve_args(port);
    args.extend([
        "--metrics-token".into(),
        "prometheus-token-0123456789".into(),
    ]);
    let server = Server::start(&refs(&args), &[]);
    let addr = server.http_addr();
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("(loopback, or with --metrics-token)")),
        "{:#?}",
        server.banner
    );

    // The public /healthz: status only, no addresses, no counts, no version.
    let (status, _, body) = http_request(addr, "/healthz", &[VIA_PROXY]);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v, serde_json::json!({"status": "ok"}), "{body}");
    assert!(!body.contains(&port.to_string()), "{body}");
    // /metrics: 401 with a challenge and a readable body.
    let (status, head, body) = http_request(addr, "/metrics", &[VIA_PROXY]);
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(body.contains("--metrics-token"), "{body}");
    let (status, _, _) = http_request(
        addr,
        "/metrics",
        &[VIA_PROXY, "Authorization: Bearer wrong-token-0123456789"],
    );
    assert_eq!(status, 401);
    // With the token: everything, from anywhere.
    let bearer = "Authorization: Bearer prometheus-token-0123456789";
    let (status, _, metrics) = http_request(addr, "/metrics", &[VIA_PROXY, bearer]);
    assert_eq!(status, 200);
    assert!(metrics.contains("peercall_turn_allocations "), "{metrics}");
    assert!(
        metrics.contains("peercall_metrics_refused_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("peercall_signal_joins_refused_total{reason=\"backoff\"} 0"),
        "{metrics}"
    );
    let (_, _, body) = http_request(addr, "/healthz", &[VIA_PROXY, bearer]);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["parts"]["turn"]["udp"][0],
        format!("127.0.0.1:{port}").as_str(),
        "{body}"
    );
    // A loopback client without proxy headers (the operator on the host) still sees everything.
    let (_, health) = healthz(addr);
    assert_eq!(health["parts"]["signaling"]["status"], "up");
    assert_eq!(http_get(addr, "/metrics").0, 200);
}

#[test]
fn metrics_listen_serves_details_on_its_own_port_only() {
    let port = free_port();
    let metrics_port = free_port();
    let mut args = serve_args(port);
    args.extend([
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
    ]);
    let server = Server::start(&refs(&args), &[]);
    let addr = server.http_addr();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().expect("addr");
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains(&format!("metrics http://{metrics_addr}/metrics"))),
        "{:#?}",
        server.banner
    );
    // The public port: minimal /healthz and no /metrics, even from loopback.
    let (status, health) = healthz(addr);
    assert_eq!(status, 200);
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    let (status, _, body) = http_get(addr, "/metrics");
    assert_eq!(status, 403);
    assert!(body.contains("--metrics-listen"), "{body}");
    // The metrics port: everything.
    let (status, health) = healthz(metrics_addr);
    assert_eq!(status, 200);
    assert_eq!(health["parts"]["turn"]["status"], "up");
    let (status, _, metrics) = http_get(metrics_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("peercall_metrics_refused_total 1"),
        "{metrics}"
    );
    // The web client and /ws are not on the metrics port.
    assert_eq!(http_get(metrics_addr, "/").0, 404);
}

#[test]
fn ws_from_another_site_is_refused_by_the_binary_and_allowed_with_allowed_origin() {
    let port = free_port();
    let mut args = serve_args(port);
    args.extend(["--allowed-origin".into(), "https://app.example.com".into()]);
    let server = Server::start(&refs(&args), &[]);
    let addr = server.http_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handshake = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/ws")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("origin", origin.parse().expect("origin"));
        match runtime.block_on(tokio_tungstenite::connect_async(req)) {
            Ok(_) => (101, String::new()),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
                resp.status().as_u16(),
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
            ),
            Err(e) => panic!("handshake: {e}"),
        }
    };
    let (status, body) = handshake("https://evil.example");
    assert_eq!(status, 403);
    assert!(body.contains("--allowed-origin"), "{body}");
    assert_eq!(handshake("https://app.example.com").0, 101);
    assert_eq!(
        handshake(&format!("http://{addr}")).0,
        101,
        "the page peercall served"
    );
    let (_, _, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("peercall_signal_origin_refused_total 1"),
        "{metrics}"
    );
}

#[test]
fn soft_open_file_limit_is_raised_to_the_hard_limit_and_reported() {
    // The hard limit of this machine, as the shell sees it; the server starts with a soft limit of 256.
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("sh");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let port = free_port();
    let args = serve_args(port);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
        .arg(common::BIN)
        .args(&args)
        .env_clear();
    let server = Server::spawn(cmd, &refs(&args));
    let line = server
        .banner
        .iter()
        .find(|l| l.trim_start().starts_with("open files"))
        .unwrap_or_else(|| panic!("no open files line in {:#?}", server.banner));
    if hard == "unlimited" {
        assert!(line.contains("unlimited"), "{line}");
        return;
    }
    assert!(
        line.contains(&format!("{hard} (soft limit raised from 256)")),
        "{line} (hard limit {hard})"
    );
    assert!(line.contains("relay allocations"), "{line}");
    let (status, _, body) = http_get(server.http_addr(), "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.lines().any(|l| l == format!("process_max_fds {hard}")),
        "process_max_fds is not {hard}:\n{body}"
    );
}
