//! Interop: coturn's own clients (`turnutils_uclient`, `turnutils_stunclient`, `turnutils_peer`) against the
//! real `peercall turn` binary on loopback. A missing coturn tool fails the test: nothing is skipped.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peercall_stun::{
    Attribute, Class, Family, Message, MessageWriter, Method, attr, long_term_key_md5,
};

const BIN: &str = env!("CARGO_BIN_EXE_peercall");

/// A running `peercall turn`, killed on drop.
struct Server {
    child: Child,
    port: u16,
    http: SocketAddr,
}

impl Server {
    /// The value of an unlabelled Prometheus metric on `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(self.http).expect("connect to /metrics");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .expect("request");
        let mut body = String::new();
        conn.read_to_string(&mut body).expect("response");
        body.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn start(extra: &[&str]) -> Server {
    let port = free_port();
    let http_port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let http = format!("127.0.0.1:{http_port}");
    let mut child = Command::new(BIN)
        .args([
            "turn",
            "--listen",
            &listen,
            "--relay-ip",
            "127.0.0.1",
            "--http",
            &http,
            "--realm",
            "test",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start peercall");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "peercall did not start");
        match lines.next() {
            Some(Ok(line)) if line.contains("STUN/TURN") => {
                // Keep draining stdout so the server never writes into a closed pipe.
                std::thread::spawn(move || lines.for_each(drop));
                break;
            }
            Some(Ok(_)) => {}
            _ => panic!("peercall exited before listening"),
        }
    }
    Server {
        child,
        port,
        http: SocketAddr::from(([127, 0, 0, 1], http_port)),
    }
}

fn run(cmd: &mut Command) -> String {
    let Output { stdout, stderr, .. } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install coturn)"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    )
}

fn uclient(args: &[&str]) -> String {
    run(Command::new("timeout")
        .arg("60")
        .arg("turnutils_uclient")
        .args(args))
}

/// Asserts uclient's closing summary: at least `min_msgs` sent, every one received, none lost.
fn assert_no_loss(out: &str, min_msgs: u32) {
    let summary = out
        .lines()
        .filter_map(|l| l.split("start_mclient: tot_send_msgs=").nth(1))
        .next_back()
        .unwrap_or_else(|| panic!("no uclient summary in:\n{out}"));
    let (sent, received) = summary
        .split_once(", tot_recv_msgs=")
        .unwrap_or_else(|| panic!("odd summary {summary}"));
    let sent: u32 = sent.trim().parse().expect("sent count");
    let received: u32 = received.trim().parse().expect("received count");
    assert!(sent >= min_msgs, "only {sent} messages sent:\n{out}");
    assert_eq!(sent, received, "messages lost:\n{out}");
    assert!(
        out.contains("Total lost packets 0 (0.000000%)"),
        "loss reported in:\n{out}"
    );
}

#[test]
fn uclient_client_to_client_over_udp_and_tcp_with_static_user() {
    let s = start(&["--user", "u:p", "--allow-loopback-peers"]);
    let port = s.port.to_string();
    let out = uclient(&[
        "-y",
        "-m",
        "4",
        "-n",
        "50",
        "-l",
        "120",
        "-u",
        "u",
        "-w",
        "p",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert_no_loss(&out, 200);
    // Both ends are allocations of this server: their packets pass from core to core inside the process.
    let in_process = s.metric("peercall_turn_relayed_in_process_total");
    assert!(
        in_process >= 100.0,
        "only {in_process} of 200 packets passed in process"
    );
    let out = uclient(&[
        "-t",
        "-y",
        "-m",
        "2",
        "-n",
        "50",
        "-l",
        "120",
        "-u",
        "u",
        "-w",
        "p",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert_no_loss(&out, 100);
}

/// TURN over TLS on the HTTPS port of `peercall serve` (web and TURN share one port): coturn's client allocates
/// and relays there, with no TURNS port configured, while the same port serves the web client.
#[test]
fn uclient_over_tls_on_the_https_port() {
    let https_port = free_port();
    let metrics_port = free_port();
    let https = format!("127.0.0.1:{https_port}");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--http",
            &https,
            "--tls-self-signed",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--relay-ip",
            "127.0.0.1",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--realm",
            "test",
            "--user",
            "u:p",
            "--allow-loopback-peers",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start peercall");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut banner = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "peercall did not start");
        match lines.next() {
            Some(Ok(line)) if line.contains("stop with Ctrl-C") => {
                std::thread::spawn(move || lines.for_each(drop));
                break;
            }
            Some(Ok(line)) => banner.push(line),
            _ => panic!("peercall exited before listening"),
        }
    }
    let s = Server {
        child,
        port: https_port,
        http: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
    };
    assert!(
        banner
            .iter()
            .any(|l| l.contains("TURNS") && l.contains(&format!("HTTPS port {https}"))),
        "{banner:#?}"
    );
    let port = https_port.to_string();
    // -t -S: TLS over TCP to the HTTPS port (coturn's client offers ALPN http/1.1 before stun.turn: the server
    // must prefer stun.turn); -y: two allocations relaying to each other.
    let out = uclient(&[
        "-t",
        "-S",
        "-y",
        "-m",
        "2",
        "-n",
        "50",
        "-l",
        "120",
        "-u",
        "u",
        "-w",
        "p",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert_no_loss(&out, 100);
    // Served by TURN as TLS connections, counted like the TURNS port's.
    assert!(
        s.metric("peercall_turn_requests_total{method=\"allocate\",result=\"success\"}") >= 2.0
    );
    assert!(s.metric("peercall_turn_stream_closed_total{reason=\"closed_by_client\"}") >= 2.0);
    // The web client still loads from the same port (curl: HTTP/1.1 over TLS, the self-signed certificate).
    let page =
        run(Command::new("curl").args(["-ksS", "--max-time", "10", &format!("https://{https}/")]));
    assert!(page.contains("<html"), "{page:.300}");
}

#[test]
fn uclient_with_rest_api_secret() {
    let s = start(&["--auth-secret", "north-secret", "--allow-loopback-peers"]);
    let port = s.port.to_string();
    let out = uclient(&[
        "-y",
        "-m",
        "2",
        "-n",
        "40",
        "-l",
        "200",
        "-u",
        "alice",
        "-W",
        "north-secret",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert_no_loss(&out, 80);
    // A wrong secret gets nothing through.
    let out = uclient(&[
        "-y",
        "-m",
        "1",
        "-n",
        "5",
        "-u",
        "alice",
        "-W",
        "wrong",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert!(
        !out.contains("Total lost packets 0 (0.000000%)"),
        "a wrong secret must not relay:\n{out}"
    );
}

/// coturn's UDP echo peer on a free loopback port, given a moment to bind: (its port, the process).
fn start_echo_peer() -> (u16, std::process::Child) {
    let peer_port = free_port();
    let peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnutils_peer (install coturn)");
    std::thread::sleep(Duration::from_millis(300));
    (peer_port, peer)
}

#[test]
fn uclient_to_turnutils_peer() {
    let s = start(&["--user", "u:p", "--allow-loopback-peers"]);
    let (peer_port, mut peer) = start_echo_peer();
    let out = uclient(&[
        "-m",
        "2",
        "-n",
        "40",
        "-l",
        "150",
        "-u",
        "u",
        "-w",
        "p",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &s.port.to_string(),
        "127.0.0.1",
    ]);
    let _ = peer.kill();
    let _ = peer.wait();
    assert_no_loss(&out, 80);
}

/// Send and Data indications instead of channels (`-s`): the server frames each Data indication around the
/// payload in the buffer the datagram landed in. Client to client (inside the process, where the payload sits
/// in the sender's Send indication), over UDP and TCP, and to a peer on its own socket.
#[test]
fn uclient_with_send_and_data_indications() {
    let s = start(&["--user", "u:p", "--allow-loopback-peers"]);
    let port = s.port.to_string();
    for transport in [None, Some("-t")] {
        let mut args: Vec<&str> = transport.into_iter().collect();
        args.extend([
            "-s",
            "-y",
            "-m",
            "2",
            "-n",
            "40",
            "-l",
            "120",
            "-u",
            "u",
            "-w",
            "p",
            "-p",
            &port,
            "127.0.0.1",
        ]);
        let out = uclient(&args);
        assert_no_loss(&out, 80);
    }
    let (peer_port, mut peer) = start_echo_peer();
    let out = uclient(&[
        "-s",
        "-m",
        "2",
        "-n",
        "40",
        "-l",
        "150",
        "-u",
        "u",
        "-w",
        "p",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port,
        "127.0.0.1",
    ]);
    let _ = peer.kill();
    let _ = peer.wait();
    assert_no_loss(&out, 80);
}

#[test]
fn stunclient_gets_the_mapped_address() {
    let s = start(&["--user", "u:p"]);
    let out = run(Command::new("timeout").args([
        "20",
        "turnutils_stunclient",
        "-p",
        &s.port.to_string(),
        "127.0.0.1",
    ]));
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
}

/// A minimal long-term-auth client written with our codec, to look at error codes directly.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
}

impl Client {
    fn new(port: u16) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        Client {
            socket,
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            buf: vec![0; 2048],
        }
    }

    /// Sends a request and returns (class, error code, the response bytes).
    fn request(
        &mut self,
        method: Method,
        attrs: &[Attribute<'_>],
        key: Option<&[u8]>,
    ) -> (Class, Option<u16>, Vec<u8>) {
        let tid: [u8; 12] = rand_tid();
        let mut out = [0u8; 1024];
        let mut w = MessageWriter::new(&mut out, Class::Request, method, &tid).expect("fits");
        for a in attrs {
            w.add(a).expect("fits");
        }
        if let Some(key) = key {
            w.add_message_integrity(key).expect("fits");
        }
        let n = w.finish();
        self.socket.send_to(&out[..n], self.server).expect("send");
        let (n, _) = self
            .socket
            .recv_from(&mut self.buf)
            .expect("the server answers");
        let msg = Message::parse(&self.buf[..n]).expect("valid STUN answer");
        let code = match msg.decode_any(attr::ERROR_CODE) {
            Some(Ok(Attribute::ErrorCode { code, .. })) => Some(code),
            _ => None,
        };
        (msg.class(), code, self.buf[..n].to_vec())
    }

    fn nonce(&mut self) -> String {
        let (_, code, bytes) =
            self.request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], None);
        assert_eq!(code, Some(401));
        let msg = Message::parse(&bytes).expect("valid");
        match msg.decode_any(attr::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => n.to_owned(),
            other => panic!("no nonce: {other:?}"),
        }
    }

    fn authed(&mut self, method: Method, attrs: &[Attribute<'_>]) -> (Class, Option<u16>) {
        let (class, code, _) = self.authed_raw(method, attrs);
        (class, code)
    }

    /// An authenticated request as user u; the answer's class, error code and bytes.
    fn authed_raw(
        &mut self,
        method: Method,
        attrs: &[Attribute<'_>],
    ) -> (Class, Option<u16>, Vec<u8>) {
        let nonce = self.nonce();
        let key = long_term_key_md5("u", "test", "p");
        let mut all = attrs.to_vec();
        all.extend([
            Attribute::Username("u"),
            Attribute::Realm("test"),
            Attribute::Nonce(&nonce),
        ]);
        self.request(method, &all, Some(&key))
    }

    /// Sends a Send indication (no answer comes).
    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut out = [0u8; 1024];
        let tid = rand_tid();
        let mut w =
            MessageWriter::new(&mut out, Class::Indication, Method::SEND, &tid).expect("fits");
        w.add(&Attribute::XorPeerAddress(peer)).expect("fits");
        w.add(&Attribute::Data(data)).expect("fits");
        let n = w.finish();
        self.socket.send_to(&out[..n], self.server).expect("send");
    }

    /// Waits for a Data indication: (peer, payload).
    fn data_indication(&mut self) -> (SocketAddr, Vec<u8>) {
        let (n, _) = self
            .socket
            .recv_from(&mut self.buf)
            .expect("a Data indication arrives");
        let msg = Message::parse(&self.buf[..n]).expect("valid STUN");
        assert_eq!(
            (msg.class(), msg.method()),
            (Class::Indication, Method::DATA)
        );
        match (
            msg.decode_any(attr::XOR_PEER_ADDRESS),
            msg.decode_any(attr::DATA),
        ) {
            (Some(Ok(Attribute::XorPeerAddress(p))), Some(Ok(Attribute::Data(d)))) => {
                (p, d.to_vec())
            }
            other => panic!("odd Data indication: {other:?}"),
        }
    }
}

fn rand_tid() -> [u8; 12] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&nanos.to_be_bytes()[4..16]);
    tid
}

#[test]
fn loopback_peer_is_refused_by_default_and_allowed_by_flag() {
    let peer = Attribute::XorPeerAddress("127.0.0.1:9".parse().expect("addr"));
    let s = start(&["--user", "u:p"]);
    let mut c = Client::new(s.port);
    assert_eq!(
        c.authed(Method::ALLOCATE, &[Attribute::RequestedTransport(17)])
            .0,
        Class::Success
    );
    assert_eq!(
        c.authed(Method::CREATE_PERMISSION, &[peer]),
        (Class::Error, Some(403))
    );
    let mapped = Attribute::XorPeerAddress("[::ffff:127.0.0.1]:9".parse().expect("addr"));
    assert_eq!(
        c.authed(
            Method::CHANNEL_BIND,
            &[Attribute::ChannelNumber(0x4000), mapped]
        ),
        (Class::Error, Some(403))
    );
    drop(s);

    let s = start(&["--user", "u:p", "--allow-loopback-peers"]);
    let mut c = Client::new(s.port);
    assert_eq!(
        c.authed(Method::ALLOCATE, &[Attribute::RequestedTransport(17)])
            .0,
        Class::Success
    );
    assert_eq!(
        c.authed(Method::CREATE_PERMISSION, &[peer]),
        (Class::Success, None)
    );
}

#[test]
fn negative_tests_and_garbage_flood_leave_the_server_answering() {
    let s = start(&["--user", "u:p", "--allow-loopback-peers"]);
    let port = s.port.to_string();
    // coturn's negative test modes: wrong requests (-N) and a refresh of a deleted allocation (-R).
    // They may wait for answers that, by design, never come: bounded by 15 s each.
    for mode in ["-N", "-R"] {
        let args = [
            mode,
            "-y",
            "-m",
            "1",
            "-n",
            "5",
            "-u",
            "u",
            "-w",
            "p",
            "-p",
            &port,
            "127.0.0.1",
        ];
        let _ = run(Command::new("timeout")
            .arg("15")
            .arg("turnutils_uclient")
            .args(args));
    }
    // A bounded flood of random and truncated datagrams (20,000 packets, at most 10 s).
    let flood = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = SocketAddr::from(([127, 0, 0, 1], s.port));
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut valid = [0u8; 64];
    let mut w =
        MessageWriter::new(&mut valid, Class::Request, Method::ALLOCATE, &[9; 12]).expect("fits");
    w.add(&Attribute::RequestedTransport(17)).expect("fits");
    let valid_len = w.finish();
    let started = Instant::now();
    for i in 0..20_000u32 {
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let packet: Vec<u8> = match i % 4 {
            0 => bytes.repeat(1 + (i as usize % 20)),
            1 => valid[..(state as usize % valid_len)].to_vec(),
            2 => {
                let mut p = valid[..valid_len].to_vec();
                let at = state as usize % valid_len;
                p[at] ^= bytes[0] | 1;
                p
            }
            _ => [0x40, 0x00, 0xff, 0xff]
                .iter()
                .copied()
                .chain(bytes)
                .collect(),
        };
        let _ = flood.send_to(&packet, target);
    }
    let mut c = Client::new(s.port);
    let (class, _, bytes) = c.request(Method::BINDING, &[], None);
    assert_eq!(
        class,
        Class::Success,
        "the server still answers a Binding after the flood"
    );
    let msg = Message::parse(&bytes).expect("valid");
    assert!(matches!(
        msg.decode_any(attr::XOR_MAPPED_ADDRESS),
        Some(Ok(Attribute::XorMappedAddress(_)))
    ));
    let out = uclient(&[
        "-y",
        "-m",
        "1",
        "-n",
        "20",
        "-l",
        "100",
        "-u",
        "u",
        "-w",
        "p",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert_no_loss(&out, 20);
}

#[test]
fn dual_allocation_relays_to_ipv4_and_ipv6_peers_over_real_sockets() {
    let s = start(&[
        "--user",
        "u:p",
        "--allow-loopback-peers",
        "--relay-ip",
        "::1",
    ]);
    let mut c = Client::new(s.port);
    let (class, code, bytes) = c.authed_raw(
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::AdditionalAddressFamily(Family::V6),
        ],
    );
    assert_eq!((class, code), (Class::Success, None));
    let msg = Message::parse(&bytes).expect("valid");
    let relays: Vec<SocketAddr> = msg
        .wire_attributes()
        .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
        .map(
            |a| match Attribute::decode(a.typ, a.value, msg.transaction_id()) {
                Ok(Attribute::XorRelayedAddress(x)) => x,
                other => panic!("bad XOR-RELAYED-ADDRESS {other:?}"),
            },
        )
        .collect();
    assert_eq!(relays.len(), 2, "{relays:?}");
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6(), "{relays:?}");
    for (bind, relay) in [("127.0.0.1:0", relays[0]), ("[::1]:0", relays[1])] {
        let peer = UdpSocket::bind(bind).expect("bind peer");
        peer.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let peer_addr = peer.local_addr().expect("addr");
        assert_eq!(
            c.authed(
                Method::CREATE_PERMISSION,
                &[Attribute::XorPeerAddress(peer_addr)]
            ),
            (Class::Success, None)
        );
        c.send_indication(peer_addr, b"to the peer");
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).expect("the peer gets the data");
        assert_eq!(&buf[..n], b"to the peer");
        assert_eq!(
            from, relay,
            "leaves from the relayed address of the peer's family"
        );
        peer.send_to(b"to the client", relay).expect("send");
        assert_eq!(c.data_indication(), (peer_addr, b"to the client".to_vec()));
    }
}

/// SIGUSR2 drains a TURN node (issue 13, a fleet behind DNS): an allocation relaying before the drain keeps
/// relaying without loss to its end; a new one is refused with 508 Insufficient Capacity, which tells the client
/// to try another server.
#[test]
fn sigusr2_drains_new_allocations_and_keeps_the_running_ones() {
    let s = start(&["--user", "u:p", "--allow-loopback-peers"]);
    let port = s.port.to_string();
    let running = {
        let port = port.clone();
        // 60 messages 50 ms apart: about 3 s of relaying, the drain lands in the middle.
        std::thread::spawn(move || {
            uclient(&[
                "-y",
                "-m",
                "1",
                "-n",
                "60",
                "-z",
                "50",
                "-l",
                "120",
                "-u",
                "u",
                "-w",
                "p",
                "-p",
                &port,
                "127.0.0.1",
            ])
        })
    };
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(s.metric("peercall_turn_draining"), 0.0, "not draining yet");
    // rustix, not a `kill` program: a bare CI machine may not have procps.
    let pid = rustix::process::Pid::from_raw(s.child.id() as i32).expect("a child's pid");
    rustix::process::kill_process(pid, rustix::process::Signal::USR2).expect("SIGUSR2 sent");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.metric("peercall_turn_draining"),
        1.0,
        "/metrics shows the drain"
    );
    let refused = uclient(&[
        "-y",
        "-m",
        "1",
        "-n",
        "5",
        "-l",
        "120",
        "-u",
        "u",
        "-w",
        "p",
        "-p",
        &port,
        "127.0.0.1",
    ]);
    assert!(
        refused.contains("508"),
        "a new allocation on a draining server is refused with 508:\n{refused}"
    );
    let out = running.join().expect("the running client");
    assert_no_loss(&out, 60);
}
