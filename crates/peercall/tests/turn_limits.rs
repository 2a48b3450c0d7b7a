//! What an unauthenticated party can make the TURN server hold over TCP: connections are capped per source
//! address and in total, must send a STUN message within a deadline, and are closed when idle without an
//! allocation — while everyone else is still served.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(unsafe_code)] // bind-before-connect through libc, in test code only

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{Server, free_port, http_get};

fn binding_request(tid: u8) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[tid; 12]);
    m
}

/// A TCP connection from `source` (any 127.x address) to `to`.
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = connect_bound(source, to);
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Binds the client side to `source` before connecting (the standard library cannot), through libc.
fn connect_bound(source: [u8; 4], to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket/bind/connect on a descriptor we own; wrapped in TcpStream right away.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from_ne_bytes(source);
        let rc = libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind to {source:?}");
        let SocketAddr::V4(v4) = to else {
            panic!("IPv4 only")
        };
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = v4.port().to_be();
        remote.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        let rc = libc::connect(
            fd,
            (&remote as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect to {to}");
        TcpStream::from_raw_fd(fd)
    }
}

/// Whether the server closed `stream` within `limit` (a read returns end of stream or a reset).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Reads one whole STUN message from a stream; returns its type.
fn read_stun(stream: &mut TcpStream) -> [u8; 2] {
    let mut header = [0u8; 20];
    stream.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[2], header[3]]))];
    stream.read_exact(&mut body).unwrap();
    [header[0], header[1]]
}

fn metric(addr: SocketAddr, line_start: &str) -> f64 {
    let (_, _, body) = http_get(addr, "/metrics");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start}:\n{body}"))
}

fn udp_binding_answered(listen: SocketAddr) -> bool {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&binding_request(9), listen).unwrap();
    let mut buf = [0u8; 1500];
    matches!(udp.recv_from(&mut buf), Ok((n, _)) if n >= 20 && buf[..2] == [0x01, 0x01])
}

#[test]
fn tcp_connections_are_capped_timed_out_and_cost_nothing_to_others() {
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server::start(
        &[
            "turn",
            "--http",
            "127.0.0.1:0",
            "--listen",
            &listen.to_string(),
            "--user",
            "u:p",
            "--tcp-first-message-timeout",
            "2",
            "--tcp-idle-timeout",
            "2",
            "--tcp-per-address",
            "5",
            "--tcp-connections",
            "8",
        ],
        &[],
    );
    let http = server.http_addr();

    // 200 connections from one address: five are kept, the rest closed at once.
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut s = connect_from([127, 0, 0, 1], listen);
        if closed_within(&mut s, Duration::from_millis(150)) {
            refused += 1;
        } else {
            kept.push(s);
        }
    }
    assert_eq!(kept.len(), 5, "per-address cap");
    assert_eq!(refused, 195);
    // Another address still gets in, up to the total of 8.
    let mut others: Vec<TcpStream> = (0..3)
        .map(|_| connect_from([127, 0, 0, 2], listen))
        .collect();
    for s in &mut others {
        assert!(!closed_within(s, Duration::from_millis(150)));
    }
    let mut ninth = connect_from([127, 0, 0, 3], listen);
    assert!(
        closed_within(&mut ninth, Duration::from_millis(500)),
        "total cap"
    );
    assert_eq!(metric(http, "peercall_turn_stream_connections "), 8.0);
    assert_eq!(
        metric(
            http,
            "peercall_turn_stream_refused_total{limit=\"per_address\"}"
        ),
        195.0
    );
    assert_eq!(
        metric(http, "peercall_turn_stream_refused_total{limit=\"total\"}"),
        1.0
    );
    // Everyone else is still served while the caps are reached: UDP, and the health page.
    assert!(udp_binding_answered(listen));
    let (status, _, _) = http_get(http, "/healthz");
    assert_eq!(status, 200);

    // One of the kept connections speaks STUN: it is answered ...
    let mut talker = kept.pop().unwrap();
    talker.write_all(&binding_request(1)).unwrap();
    assert_eq!(
        read_stun(&mut talker),
        [0x01, 0x01],
        "Binding success over TCP"
    );
    // ... the silent ones are closed at the first-message deadline (2 s) ...
    let started = Instant::now();
    for s in kept.iter_mut().chain(others.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(4)),
            "silent connection still open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // ... and the talker, which holds no allocation, at the idle timeout (2 s after its message).
    assert!(closed_within(&mut talker, Duration::from_secs(4)));
    assert_eq!(
        metric(
            http,
            "peercall_turn_stream_closed_total{reason=\"first_message_timeout\"}"
        ),
        7.0
    );
    assert_eq!(
        metric(http, "peercall_turn_stream_closed_total{reason=\"idle\"}"),
        1.0
    );
    assert_eq!(metric(http, "peercall_turn_stream_connections "), 0.0);
    // The places are free again.
    let mut again = connect_from([127, 0, 0, 1], listen);
    again.write_all(&binding_request(2)).unwrap();
    assert_eq!(read_stun(&mut again), [0x01, 0x01]);
}
