//! The command line, the configuration layers and start-up errors, through the real binary.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{TcpListener, UdpSocket};

use common::{free_port, one_error_line, run};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_names_every_subcommand_and_examples() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let text = stdout(&out);
    for word in [
        "serve",
        "turn",
        "signal",
        "join",
        "Examples:",
        "--http",
        "--listen",
        "--tls-self-signed",
        "PEERCALL_",
    ] {
        assert!(text.contains(word), "--help lacks {word:?}:\n{text}");
    }
    // Each subcommand shows the flags it uses, and only those.
    let turn = stdout(&run(&["turn", "--help"], &[]));
    assert!(
        turn.contains("--listen") && turn.contains("--auth-secret") && turn.contains("--http"),
        "{turn}"
    );
    assert!(
        !turn.contains("--room-capacity") && !turn.contains("--turn-secret"),
        "{turn}"
    );
    let signal = stdout(&run(&["signal", "--help"], &[]));
    assert!(
        signal.contains("--turn-secret") && signal.contains("--room-capacity"),
        "{signal}"
    );
    assert!(!signal.contains("--relay-ip"), "{signal}");
    let version = stdout(&run(&["--version"], &[]));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

#[test]
fn a_flag_of_another_subcommand_is_a_usage_error() {
    let out = run(&["turn", "--room-capacity", "3"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--room-capacity"));
}

#[test]
fn join_shows_its_own_flags_and_refuses_a_link_that_is_not_one() {
    let help = stdout(&run(&["join", "--help"], &[]));
    for flag in [
        "ROOM_URL",
        "--record",
        "--expect-peers",
        "--relay",
        "--json",
        "--duration",
    ] {
        assert!(help.contains(flag), "join --help lacks {flag}: {help}");
    }
    assert!(!help.contains("--room-capacity"), "{help}");
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("repeatable: encodings of one video at different bitrates"),
        "--video says it takes several bitrates: {help}"
    );
    let out = run(&["join"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing ROOM_URL is a usage error"
    );
    let out = run(&["join", "some-room"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a room link"), "{stderr}");
}

#[test]
fn print_config_shows_precedence_flag_over_env_over_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("peercall.toml");
    std::fs::write(
        &file,
        "http = \"127.0.0.1:9001\"\nrealm = \"from-file\"\nroom-capacity = 3\nmax-rooms = 11\nlisten = [\"127.0.0.1:4001\"]\n",
    )
    .expect("write config");
    let path = file.to_str().expect("utf-8 path");
    let out = run(
        &[
            "serve",
            "--config",
            path,
            "--print-config",
            "--room-capacity",
            "5",
        ],
        &[
            ("PEERCALL_REALM", "from-env"),
            ("PEERCALL_ROOM_CAPACITY", "4"),
            ("PEERCALL_LISTEN", "127.0.0.1:4002,127.0.0.1:4003"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .to_owned()
    };
    assert!(
        line("room-capacity").contains("= 5")
            && line("room-capacity").ends_with("# flag --room-capacity")
    );
    assert!(line("realm").contains("\"from-env\"") && line("realm").ends_with("PEERCALL_REALM"));
    assert!(line("listen").contains("127.0.0.1:4002") && line("listen").contains("127.0.0.1:4003"));
    assert!(
        !line("listen").contains("4001"),
        "env list replaces the file's: {}",
        line("listen")
    );
    assert!(
        line("http").contains("127.0.0.1:9001")
            && line("http").ends_with(&format!("# config file {path}"))
    );
    assert!(line("max-rooms").contains("= 11"));
    assert!(
        line("max-message-bytes").contains("65536")
            && line("max-message-bytes").ends_with("# default")
    );
}

#[test]
fn config_file_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "realm = \"env-named-file\"\n").expect("write");
    let out = run(
        &["turn", "--print-config"],
        &[("PEERCALL_CONFIG", file.to_str().expect("utf-8"))],
    );
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("realm = \"env-named-file\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn print_config_redacts_secrets() {
    let out = run(
        &[
            "--print-config",
            "--auth-secret",
            "super-secret-value-123",
            "--user",
            "alice:hunter2hunter2",
        ],
        &[("PEERCALL_JOIN_TOKEN_SECRET", "another-secret-value")],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        !text.contains("super-secret")
            && !text.contains("hunter2")
            && !text.contains("another-secret"),
        "{text}"
    );
    assert!(text.contains("alice:<redacted>"), "{text}");
}

#[test]
fn unknown_key_in_file_is_one_clear_line_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "realm = \"ok\"\nrelay_ipp = [\"10.0.0.1\"]\n").expect("write");
    let line = one_error_line(&run(&["--config", file.to_str().expect("utf-8")], &[]));
    assert!(line.contains(file.to_str().expect("utf-8")), "{line}");
    assert!(
        line.contains("line 2") && line.contains("relay_ipp") && line.contains("unknown key"),
        "{line}"
    );
    assert!(line.contains("did you mean `relay-ip`"), "{line}");
}

#[test]
fn bad_value_in_file_names_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "# comment\nmin-port = \"low\"\n").expect("write");
    let line = one_error_line(&run(
        &["turn", "--config", file.to_str().expect("utf-8")],
        &[],
    ));
    assert!(line.contains("bad.toml, line 2, key `min-port`"), "{line}");
}

#[test]
fn missing_config_file_is_named() {
    let line = one_error_line(&run(&["--config", "/nonexistent/peercall.toml"], &[]));
    assert!(
        line.contains("cannot read config file /nonexistent/peercall.toml"),
        "{line}"
    );
}

#[test]
fn bad_environment_value_names_the_variable() {
    let line = one_error_line(&run(
        &["turn"],
        &[("PEERCALL_LISTEN", "127.0.0.1:1,not-an-address")],
    ));
    assert!(
        line.contains("environment variable PEERCALL_LISTEN"),
        "{line}"
    );
    assert!(line.contains("not-an-address"), "{line}");
}

#[test]
fn inconsistent_settings_name_the_key_and_source() {
    let line = one_error_line(&run(
        &["turn", "--min-port", "60000"],
        &[("PEERCALL_MAX_PORT", "50000")],
    ));
    assert!(
        line.contains("invalid min-port (from flag --min-port)"),
        "{line}"
    );
    let line = one_error_line(&run(&["serve", "--tls-cert", "/x.pem"], &[]));
    assert!(line.contains("tls-key"), "{line}");
}

#[test]
fn http_port_in_use_names_address_and_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let line = one_error_line(&run(&["--http", &addr, "--listen", &listen], &[]));
    assert!(line.contains(&addr) && line.contains("--http"), "{line}");
    assert!(line.to_ascii_lowercase().contains("in use"), "{line}");
}

#[test]
fn turn_port_in_use_names_address_and_flag() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let line = one_error_line(&run(
        &["turn", "--http", "127.0.0.1:0", "--listen", &addr],
        &[],
    ));
    assert!(line.contains(&addr) && line.contains("--listen"), "{line}");
}

#[test]
fn unreadable_certificate_names_the_file() {
    let line = one_error_line(&run(
        &[
            "--http",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        &[],
    ));
    assert!(
        line.contains("/nonexistent/cert.pem") && line.contains("--tls-cert"),
        "{line}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").expect("write");
    let junk = junk.to_str().expect("utf-8");
    let line = one_error_line(&run(
        &[
            "--http",
            "127.0.0.1:0",
            "--tls-cert",
            junk,
            "--tls-key",
            junk,
        ],
        &[],
    ));
    assert!(
        line.contains(junk) && line.contains("no PEM certificate"),
        "{line}"
    );
}

#[test]
fn invalid_rust_log_is_a_clear_error() {
    let line = one_error_line(&run(
        &["turn", "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info,,==")],
    ));
    assert!(line.contains("RUST_LOG"), "{line}");
}
