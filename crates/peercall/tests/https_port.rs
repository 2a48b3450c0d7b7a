//! The HTTPS port serves the web and TURN: after the TLS handshake, HTTP goes to the web server and STUN to the
//! TURN server, under the TURNS port's connection caps and deadlines; anything else is closed.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, free_port, http_get};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

/// Accepts any certificate: this test is about what is served behind the handshake, not about the certificate
/// (server.rs checks the self-signed one against the banner's fingerprint).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn connect(addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<tokio::net::TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake on the HTTPS port")
}

/// A STUN Binding request (no attributes).
fn binding_request(tid: u8) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[tid; 12]);
    m
}

/// Sends a Binding request and returns the response's message type, or None when the server closed instead.
async fn binding(tls: &mut TlsStream<tokio::net::TcpStream>, tid: u8) -> Option<u16> {
    tls.write_all(&binding_request(tid)).await.ok()?;
    let mut header = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut header))
        .await
        .ok()?
        .ok()?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).await.ok()?;
    assert_eq!(header[8..20], [tid; 12], "the response to our transaction");
    Some(u16::from_be_bytes([header[0], header[1]]))
}

async fn get(tls: &mut TlsStream<tokio::net::TcpStream>, path: &str) -> String {
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// Reads until the server closes; the time it took, or None if it stayed open for `limit`.
async fn closed_within(
    tls: &mut TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), tls.read(&mut buf)).await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn metric(metrics: SocketAddr, name: &str) -> f64 {
    let (status, _, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

#[test]
fn https_port_serves_web_and_turn_and_closes_the_rest() {
    let metrics_port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let server = Server::start(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--tls-self-signed",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--relay-ip",
            "127.0.0.1",
            "--metrics-listen",
            &metrics.to_string(),
            "--tcp-first-message-timeout",
            "2",
            "--tcp-per-address",
            "3",
        ],
        &[],
    );
    let addr = server.http_addr();
    // No certificate files: no TURNS port, TURN over TLS only on the HTTPS port, and the banner says so.
    let turns = server.banner_value("TURNS");
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("TURNS") && l.contains(&format!("HTTPS port {addr}"))),
        "{turns}: {:#?}",
        server.banner
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Web: with ALPN as browsers send it, and without (the first bytes are put back for the web server).
        for alpn in [
            &[&b"http/1.1"[..]][..],
            &[&b"h2"[..], &b"http/1.1"[..]],
            &[],
        ] {
            let mut tls = connect(addr, alpn).await;
            let page = get(&mut tls, "/").await;
            assert!(
                page.starts_with("HTTP/1.1 200"),
                "ALPN {alpn:?}: {page:.200}"
            );
            assert!(page.contains("<html"), "the web client: {page:.300}");
        }
        // TURN: no ALPN (as browsers), RFC 7443's stun.turn, or both it and HTTP (as coturn's client offers).
        // Success response 0x0101.
        let turn_alpns: [&[&[u8]]; 3] = [&[], &[b"stun.turn"], &[b"http/1.1", b"stun.turn"]];
        for (i, alpn) in turn_alpns.into_iter().enumerate() {
            let mut tls = connect(addr, alpn).await;
            let tid = u8::try_from(i).unwrap() + 1;
            assert_eq!(binding(&mut tls, tid).await, Some(0x0101), "ALPN {alpn:?}");
            // The same connection stays TURN's: a second request is answered too.
            assert_eq!(binding(&mut tls, tid + 10).await, Some(0x0101));
        }
        // The client closed; the server sees it within moments.
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(metrics, "peercall_turn_stream_connections") != 0.0 {
            assert!(
                Instant::now() < deadline,
                "TURN connections still counted as open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The TURNS caps count these connections: 3 per address, the 4th is refused.
        let mut held = Vec::new();
        for i in 0..3 {
            let mut tls = connect(addr, &[]).await;
            assert_eq!(binding(&mut tls, 20 + i).await, Some(0x0101));
            held.push(tls);
        }
        assert_eq!(metric(metrics, "peercall_turn_stream_connections"), 3.0);
        let mut fourth = connect(addr, &[]).await;
        assert_eq!(
            binding(&mut fourth, 30).await,
            None,
            "over --tcp-per-address"
        );
        assert_eq!(
            metric(
                metrics,
                "peercall_turn_stream_refused_total{limit=\"per_address\"}"
            ),
            1.0
        );
        drop(held);

        // Garbage after the handshake is closed at once, and the web port still serves.
        let mut junk = connect(addr, &[]).await;
        junk.write_all(&[0xff; 8]).await.unwrap();
        let took = closed_within(&mut junk, Duration::from_secs(5)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "garbage: {took:?}"
        );
        // A connection that sends nothing after its handshake is closed at the first-message deadline (2 s).
        let mut silent = connect(addr, &[]).await;
        let took = closed_within(&mut silent, Duration::from_secs(8)).await;
        assert!(
            took.is_some_and(|t| t >= Duration::from_secs(1) && t < Duration::from_secs(4)),
            "silent: {took:?}"
        );
        // A TURN client that sends nothing after its handshake is closed as on the TURNS port: the first-message
        // deadline counts from accept.
        let mut tls = connect(addr, &[&b"stun.turn"[..]]).await;
        let took = closed_within(&mut tls, Duration::from_secs(8)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(4)),
            "silent TURN: {took:?}"
        );
        let mut tls = connect(addr, &[]).await;
        assert!(get(&mut tls, "/healthz").await.starts_with("HTTP/1.1 200"));
    });
    assert!(
        metric(
            metrics,
            "peercall_turn_stream_closed_total{reason=\"first_message_timeout\"}"
        ) >= 1.0,
        "the silent stun.turn connection is counted as TURN's"
    );
}
