//! Automatic HTTPS against a real ACME CA: Debian's `pebble` runs on loopback with a tiny DNS responder that
//! sends the test domain to 127.0.0.1, and validates peercall's TLS-ALPN-01 answers for real (no
//! PEBBLE_VA_ALWAYS_VALID). Checked the way a user would notice: a client that trusts only pebble's root sees a
//! valid chain for the domain on the HTTPS port and on the TURNS port; a short-lived certificate is renewed
//! while a WebSocket and a TURNS allocation stay up; with the CA gone, a restart serves the cached certificate;
//! with no certificate and no CA, the server still serves and the banner says why.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, free_port};
use futures_util::{SinkExt, StreamExt};
use peercall_stun::{Class, Message, MessageWriter, Method, attr};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOMAIN: &str = "call.peercall.test";
/// Lifetime of pebble's certificates: renewal starts with a third left, 8 s after issuance.
const VALIDITY_SECS: u64 = 12;

/// Answers A queries for every name with 127.0.0.1 and everything else with no records.
struct Dns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Dns {
    fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Dns { addr, stop }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + usize::from(query[at]);
    }
    let end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let mut reply = Vec::with_capacity(end + 16);
    reply.extend_from_slice(&query[..2]);
    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(qtype == 1), 0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..end)?);
    if qtype == 1 {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(reply)
}

/// Pebble with its own HTTPS certificate, validating on peercall's ports through our DNS.
struct Pebble {
    child: Child,
    dir_url: String,
    management: SocketAddr,
    /// The certificate of pebble's own HTTPS (what --acme-ca-file trusts).
    https_cert: PathBuf,
    https_roots: Arc<rustls::RootCertStore>,
}

impl Pebble {
    fn start(dir: &Path, dns: SocketAddr, https_port: u16, http_port: u16) -> Pebble {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let https_cert = dir.join("pebble-https.pem");
        std::fs::write(&https_cert, made.cert.pem()).unwrap();
        std::fs::write(dir.join("pebble-https.key"), made.key_pair.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let (acme_port, management_port) = (free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("pebble-https.pem"),
            "privateKey": dir.join("pebble-https.key"),
            "httpPort": http_port,
            "tlsPort": https_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": VALIDITY_SECS,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            // No random sleeps before validating, no random bad nonces, a fresh validation for every order.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (Debian package `pebble`; scripts/test installs it)");
        let pebble = Pebble {
            child,
            dir_url: format!("https://127.0.0.1:{acme_port}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management_port)),
            https_cert,
            https_roots: Arc::new(roots),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    /// Pebble's root CA, from its management interface.
    async fn root(&self) -> CertificateDer<'static> {
        let config = client_config(self.https_roots.clone());
        let (_, body) = https_get(config, self.management, "localhost", "/roots/0")
            .await
            .unwrap();
        let mut certs: Vec<_> = rustls_pemfile::certs(&mut body.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 1, "{body}");
        certs.remove(0)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: Arc<rustls::RootCertStore>) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn trusting(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    client_config(Arc::new(roots))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection that verifies the chain for `name`; the error says why not.
async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<(Tls, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate")?;
    Ok((tls, leaf))
}

async fn https_get(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let (mut tls, _) = connect(config, addr, name).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    let (status, _, body) = common::parse_response(&raw);
    Ok((status, body))
}

/// Waits until `addr` presents a chain that verifies for DOMAIN, other than `not`; returns its leaf.
async fn wait_for_certificate(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    not: Option<&CertificateDer<'static>>,
    limit: Duration,
    server: &Server,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        match connect(config.clone(), addr, DOMAIN).await {
            Ok((_, leaf)) if Some(&leaf) != not => return leaf,
            Ok(_) => last = "still the old certificate".into(),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "no valid certificate for {DOMAIN} on {addr} within {limit:?}: {last}; peercall's stderr:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TURN allocation over TLS with a static user, kept open to be refreshed later.
struct TurnsAllocation {
    tls: Tls,
    nonce: Vec<u8>,
    key: [u8; 16],
}

const USER: &str = "alice";
const PASSWORD: &str = "acme-test-password";
const REALM: &str = "peercall";

fn stun_request(method: Method, auth: Option<(&[u8], &[u8; 16])>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let tid: [u8; 12] = rand::random();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, &tid).unwrap();
    if method == Method::ALLOCATE {
        w.add_raw(attr::REQUESTED_TRANSPORT, &[&[17, 0, 0, 0]])
            .unwrap();
    }
    if let Some((nonce, key)) = auth {
        w.add_raw(attr::USERNAME, &[USER.as_bytes()]).unwrap();
        w.add_raw(attr::REALM, &[REALM.as_bytes()]).unwrap();
        w.add_raw(attr::NONCE, &[nonce]).unwrap();
        w.add_message_integrity(key).unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

async fn stun_exchange(tls: &mut Tls, request: &[u8]) -> Vec<u8> {
    tls.write_all(request).await.unwrap();
    let mut header = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut header))
        .await
        .expect("a STUN answer within 5 s")
        .unwrap();
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut message = header.to_vec();
    message.resize(20 + len, 0);
    tls.read_exact(&mut message[20..]).await.unwrap();
    message
}

impl TurnsAllocation {
    async fn open(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> TurnsAllocation {
        let (mut tls, _) = connect(config, addr, DOMAIN).await.unwrap();
        let challenge = stun_exchange(&mut tls, &stun_request(Method::ALLOCATE, None)).await;
        let challenge = Message::parse(&challenge).unwrap();
        assert_eq!(challenge.class(), Class::Error);
        let nonce = challenge.get(attr::NONCE).unwrap().value.to_vec();
        let key = peercall_stun::long_term_key_md5(USER, REALM, PASSWORD);
        let answer = stun_exchange(
            &mut tls,
            &stun_request(Method::ALLOCATE, Some((&nonce, &key))),
        )
        .await;
        let answer = Message::parse(&answer).unwrap();
        assert_eq!(answer.class(), Class::Success, "Allocate over TURNS");
        TurnsAllocation { tls, nonce, key }
    }

    /// Refreshes the allocation on the same TLS connection: the connection and the allocation are alive.
    async fn refresh(&mut self) {
        let request = stun_request(Method::REFRESH, Some((&self.nonce, &self.key)));
        let answer = stun_exchange(&mut self.tls, &request).await;
        let answer = Message::parse(&answer).unwrap();
        assert_eq!(
            (answer.class(), answer.method()),
            (Class::Success, Method::REFRESH),
            "Refresh on the TURNS connection opened before the renewal"
        );
    }
}

fn serve_args<'a>(
    pebble_dir: &'a str,
    ca_file: &'a str,
    state_dir: &'a str,
    https: &'a str,
    redirect: &'a str,
    turn: &'a str,
    turns: &'a str,
) -> Vec<&'a str> {
    vec![
        "serve",
        "--domain",
        DOMAIN,
        "--acme-directory",
        pebble_dir,
        "--acme-ca-file",
        ca_file,
        "--acme-email",
        "ops@peercall.test",
        "--state-dir",
        state_dir,
        "--http",
        https,
        "--http-redirect",
        redirect,
        "--listen",
        turn,
        "--tls-listen",
        turns,
        "--user",
        "alice:acme-test-password",
        "--relay-ip",
        "127.0.0.1",
        "--log-level",
        "info,peercall=debug",
    ]
}

/// Waits up to 15 s for a line of peercall's log that contains `text`; returns that line.
async fn wait_for_log(server: &Server, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = server.stderr();
        if let Some(line) = log.lines().find(|l| l.contains(text)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn certificate_banner(server: &Server) -> String {
    let at = server
        .banner
        .iter()
        .position(|l| l.trim_start().starts_with("certificate"))
        .unwrap_or_else(|| panic!("no certificate line in {:#?}", server.banner));
    server.banner[at..at + 3].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_pebble_are_served_renewed_and_cached() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let state = state_dir.to_str().unwrap().to_owned();
    let (https_port, redirect_port, turn_port, turns_port) =
        (free_port(), free_port(), free_port(), free_port());
    let https_addr = SocketAddr::from(([127, 0, 0, 1], https_port));
    let turns_addr = SocketAddr::from(([127, 0, 0, 1], turns_port));
    let (https, redirect, turn, turns) = (
        https_addr.to_string(),
        format!("127.0.0.1:{redirect_port}"),
        format!("127.0.0.1:{turn_port}"),
        turns_addr.to_string(),
    );
    let dns = Dns::start();
    let pebble = Pebble::start(dir.path(), dns.addr, https_port, redirect_port);
    let ca_file = pebble.https_cert.to_str().unwrap().to_owned();
    let dir_url = pebble.dir_url.clone();
    let args = serve_args(&dir_url, &ca_file, &state, &https, &redirect, &turn, &turns);
    let server = Server::start(&args, &[]);
    let banner = certificate_banner(&server);
    assert!(
        banner.contains(DOMAIN) && banner.contains("TLS-ALPN-01") && banner.contains(&state),
        "{banner}"
    );

    // 1. Issued through a real TLS-ALPN-01 validation, served on HTTPS and TURNS with a chain to pebble's root.
    let root = pebble.root().await;
    let verified = trusting(&root);
    let first = wait_for_certificate(
        &verified,
        https_addr,
        None,
        Duration::from_secs(20),
        &server,
    )
    .await;
    let on_turns =
        wait_for_certificate(&verified, turns_addr, None, Duration::from_secs(5), &server).await;
    assert_eq!(on_turns, first, "TURNS serves the ACME certificate");
    let (status, body) = https_get(verified.clone(), https_addr, DOMAIN, "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // Loopback clients see the details, the certificate's state among them.
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["certificate"]["status"], "valid", "{body}");
    assert!(
        health["certificate"]["not_after"]
            .as_str()
            .is_some_and(|d| d.ends_with(" UTC")),
        "{body}"
    );
    // Plain HTTP on the redirect port goes to HTTPS.
    let (status, head, _) = common::http_get(redirect.parse().unwrap(), "/r/team?x=1");
    assert_eq!(status, 308, "{head}");
    assert!(
        head.contains(&format!(
            "location: https://127.0.0.1:{https_port}/r/team?x=1"
        )),
        "{head}"
    );
    // The account key and the certificate's key are the owner's only.
    let mut private = Vec::new();
    let mut stack = vec![state_dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                private.push(path);
            }
        }
    }
    assert_eq!(
        private.len(),
        2,
        "an account key and a certificate: {private:?}"
    );
    for path in &private {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    // 2. Renewal of the short-lived certificate while a WebSocket and a TURNS allocation stay up.
    let (ws_tls, _) = connect(verified.clone(), https_addr, DOMAIN).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://{DOMAIN}:{https_port}/ws"), ws_tls)
            .await
            .expect("WebSocket over the ACME certificate");
    let mut allocation = TurnsAllocation::open(verified.clone(), turns_addr).await;
    let renewed = wait_for_certificate(
        &verified,
        https_addr,
        Some(&first),
        Duration::from_secs(VALIDITY_SECS + 10),
        &server,
    )
    .await;
    assert_ne!(renewed, first);
    let renewed_turns = wait_for_certificate(
        &verified,
        turns_addr,
        Some(&first),
        Duration::from_secs(5),
        &server,
    )
    .await;
    assert_eq!(
        renewed_turns, renewed,
        "TURNS got the renewed certificate too"
    );
    ws.send(tokio_tungstenite::tungstenite::Message::Ping(
        b"still there?".to_vec(),
    ))
    .await
    .expect("the WebSocket opened before the renewal is still open");
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Pong(data) = message.unwrap() {
                return data;
            }
        }
        panic!("the WebSocket closed during the renewal");
    })
    .await
    .expect("a pong within 5 s");
    assert_eq!(pong, b"still there?");
    allocation.refresh().await;
    let stderr = server.stderr();
    assert!(stderr.contains("saved in the state directory"), "{stderr}");
    drop(server);

    // 3. HTTP-01 on the redirect port: refused while nothing answers where the CA looks (the banner says
    // why and what to check), issued once the redirect port is the one the CA connects to.
    let http01_state = dir.path().join("http01");
    let http01 = http01_state.to_str().unwrap().to_owned();
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let mut refused_args = serve_args(
        &dir_url, &ca_file, &http01, &https, &elsewhere, &turn, &turns,
    );
    refused_args.extend(["--acme-challenge", "http-01"]);
    let refused = Server::start(&refused_args, &[]);
    let banner = certificate_banner(&refused);
    assert!(banner.contains("HTTP-01"), "{banner}");
    // Usually already in the banner; on a slow machine a moment later in the log.
    let why = wait_for_log(
        &refused,
        &format!("failing: the CA could not validate {DOMAIN}"),
    )
    .await;
    assert!(why.contains("TCP port 80"), "{why}");
    drop(refused);
    let mut http01_args = serve_args(
        &dir_url, &ca_file, &http01, &https, &redirect, &turn, &turns,
    );
    http01_args.extend(["--acme-challenge", "http-01"]);
    let server = Server::start(&http01_args, &[]);
    let by_http01 = wait_for_certificate(
        &verified,
        https_addr,
        None,
        Duration::from_secs(20),
        &server,
    )
    .await;
    assert!(
        by_http01 != first && by_http01 != renewed,
        "a new certificate, through HTTP-01"
    );
    drop(server);

    // `auto` with the redirect port bound: when TLS-ALPN-01 fails (the CA finds nothing on the port it
    // connects to), the next try is HTTP-01 on the redirect port, and the certificate is issued.
    let auto_state = dir.path().join("auto");
    let auto = auto_state.to_str().unwrap().to_owned();
    let other_https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let other = other_https.to_string();
    let auto_args = serve_args(&dir_url, &ca_file, &auto, &other, &redirect, &turn, &turns);
    let server = Server::start(&auto_args, &[]);
    let by_auto = wait_for_certificate(
        &verified,
        other_https,
        None,
        Duration::from_secs(20),
        &server,
    )
    .await;
    assert!(by_auto != by_http01, "a certificate of its own");
    let log = server.stderr();
    assert!(
        log.contains("(TLS-ALPN-01 challenge)") && log.contains("next with the HTTP-01 challenge"),
        "{log}"
    );
    assert!(
        log.contains("(HTTP-01 challenge); saved in the state directory"),
        "{log}"
    );
    drop(server);

    // 4. The CA gone: a restart serves the cached certificate at once (the one issued last, which a 12 s
    // lifetime leaves valid), and the banner says how it stands.
    drop(pebble);
    let server = Server::start(&auto_args, &[]);
    let banner = certificate_banner(&server);
    assert!(banner.contains("valid until"), "{banner}");
    let cached = wait_for_certificate(
        &verified,
        other_https,
        None,
        Duration::from_secs(5),
        &server,
    )
    .await;
    assert_eq!(cached, by_auto, "the certificate from the state directory");
    drop(server);

    // 5. No certificate and no CA: the server serves anyway (a stand-in certificate) and the banner says why.
    let empty_state = dir.path().join("empty");
    let empty = empty_state.to_str().unwrap().to_owned();
    let args = serve_args(
        "https://127.0.0.1:9/dir",
        &ca_file,
        &empty,
        &https,
        &redirect,
        &turn,
        &turns,
    );
    let server = Server::start(&args, &[]);
    let banner = certificate_banner(&server);
    assert!(
        banner.contains(
            "failing: cannot reach the ACME directory https://127.0.0.1:9/dir: connection refused"
        ) && banner.contains("retrying in"),
        "{banner}"
    );
    assert!(
        connect(verified.clone(), https_addr, DOMAIN).await.is_err(),
        "the stand-in is not a CA certificate"
    );
    let (status, _, _) = common::http_request(redirect.parse().unwrap(), "/", &[]);
    assert_eq!(
        status, 308,
        "the redirect port serves without a certificate"
    );
    drop(server);
    drop(dns);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
