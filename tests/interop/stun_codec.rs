//! Interop with a real third-party STUN client: coturn's `turnutils_stunclient` sends Binding requests to a
//! tiny loopback responder built on this codec, and must report the mapped address we encoded.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use peercall_stun::*;

/// Answers Binding requests on `socket` until `stop` fires or 10 s pass; returns what it saw.
fn responder(socket: UdpSocket, stop: mpsc::Receiver<()>) -> Vec<(SocketAddr, Vec<u16>, bool)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1500];
    let mut out = [0u8; 1500];
    while Instant::now() < deadline && stop.try_recv().is_err() && seen.len() < 50 {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let msg = Message::parse(&buf[..n]).expect("coturn sends valid STUN");
        let types: Vec<u16> = msg.wire_attributes().map(|a| a.typ).collect();
        let fingerprint_ok = !msg.has_fingerprint() || msg.verify_fingerprint().is_ok();
        seen.push((from, types, fingerprint_ok));
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            continue;
        }
        let mut w = MessageWriter::response(&mut out, &msg, Class::Success).expect("fits");
        w.add(&XorMappedAddress(from)).expect("fits");
        w.add(&MappedAddress(from)).expect("fits");
        w.add(&Software("peercall-stun interop test"))
            .expect("fits");
        if msg.has_fingerprint() {
            w.add_fingerprint().expect("fits");
        }
        let m = w.finish();
        socket.send_to(&out[..m], from).expect("send");
    }
    seen
}

#[test]
fn turnutils_stunclient_reads_our_binding_response() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let port = socket.local_addr().expect("addr").port();
    let (stop_tx, stop_rx) = mpsc::channel();
    let server = thread::spawn(move || responder(socket, stop_rx));

    let output = Command::new("timeout")
        .args([
            "10",
            "turnutils_stunclient",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("turnutils_stunclient (coturn) is installed: scripts/test installs it");
    let _ = stop_tx.send(());
    let seen = server.join().expect("responder thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = format!(
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\nseen: {seen:?}",
        output.status
    );

    eprintln!("{log}");
    assert!(!seen.is_empty(), "coturn sent nothing\n{log}");
    assert!(
        seen.iter().all(|(_, _, fp)| *fp),
        "coturn's FINGERPRINT failed to verify\n{log}"
    );
    let client = seen[0].0;
    // The client prints the reflexive address it decoded from our XOR-MAPPED-ADDRESS.
    let reported = format!("{}:{}", client.ip(), client.port());
    assert!(
        stdout.contains(&reported) || stderr.contains(&reported),
        "client did not report {reported}\n{log}"
    );
}
