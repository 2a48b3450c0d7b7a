//! Entry points for the fuzz targets (`fuzz/`), also run by proptests in the normal test suite
//! (`crates/turn/tests/fuzz_properties.rs`), so CI exercises the same functions. Each one panics only on a
//! bug: a broken invariant, not a refused input.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peercall_stun::{
    Attribute, Class, Family, Message, MessageWriter, Method, attr, long_term_key_md5,
    stream_frame_len,
};

use crate::core::policy::PeerPolicy;
use crate::core::{
    Action, Bound, Core, CoreConfig, FiveTuple, Ledger, Now, Output, PEER_HEADROOM, PEER_TAILROOM,
    PeerAction, RelayRequest, Transport,
};
use crate::driver::Framer;
use crate::metrics::TurnMetrics;

const REALM: &str = "fuzz";
const ALLOWED: [u8; 3] = [198, 51, 100];

/// Relay ports handed out from one IPv4 and one IPv6 address, like a server with both relay IPs: the
/// driver's part of an Allocate, without sockets.
struct Ports {
    next: u16,
    /// Addresses bound and not yet released: what the driver would hold open.
    held: Vec<SocketAddr>,
}

impl Ports {
    fn bind(&mut self, family: Family, even: bool) -> Option<SocketAddr> {
        self.next = self
            .next
            .checked_add(if even { 2 - self.next % 2 } else { 1 })?;
        let ip: IpAddr = match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            Family::V6 => "2001:db8::1".parse().ok()?,
        };
        Some(SocketAddr::new(ip, self.next))
    }

    fn satisfy(&mut self, request: RelayRequest) -> Bound {
        let mut bound = Bound::default();
        match request {
            RelayRequest::Fresh {
                v4,
                v6,
                even,
                reserve_next,
            } => {
                if v4 {
                    bound.relays[0] = self.bind(Family::V4, even);
                }
                if v6 {
                    bound.relays[1] = self.bind(Family::V6, even);
                }
                if reserve_next
                    && let Some(r) = bound.relays[0].or(bound.relays[1])
                    && let Some(port) = r.port().checked_add(1)
                {
                    self.next = self.next.max(port);
                    bound.reserved = Some(SocketAddr::new(r.ip(), port));
                }
                self.held.extend(bound.relays.iter().flatten());
                self.held.extend(bound.reserved);
            }
            // A reserved socket is held already.
            RelayRequest::Reserved(addr) => bound.relays[usize::from(addr.is_ipv6())] = Some(addr),
        }
        bound
    }
}

/// Reads the script.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self, max: usize) -> &[u8] {
        let n = usize::from(self.byte().unwrap_or(0))
            .min(max)
            .min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }
}

struct Fuzz {
    core: Core,
    ledger: Ledger,
    metrics: Arc<TurnMetrics>,
    ports: Ports,
    now: Now,
    clients: [FiveTuple; 4],
    relays: Vec<SocketAddr>,
    tokens: Vec<[u8; 8]>,
    out: Vec<u8>,
    config: Arc<CoreConfig>,
}

impl Fuzz {
    fn new() -> Fuzz {
        let allowed = ipnet::IpNet::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24)
            .expect("a valid prefix");
        let server: SocketAddr = SocketAddr::from(([203, 0, 113, 1], 3478));
        let config = Arc::new(CoreConfig {
            realm: REALM.into(),
            users: vec![("u".into(), "p".into()), ("v".into(), "q".into())],
            auth_secrets: Vec::new(),
            policy: PeerPolicy::new(&[allowed], &[], false)
                .with_own_addresses(&[server], vec![server.ip()]),
            user_quota: 6,
            client_quota: 8,
            total_quota: 12,
            max_permissions: 4,
            max_channels: 3,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            // Every authenticated request below first fetches a nonce: no unauthenticated limit here, the
            // rate table has its own tests.
            unauth_rate_per_sec: 0,
            software: Some("fuzz".into()),
            nonce_key: [9; 32],
            external_ip: Vec::new(),
        });
        let metrics = Arc::new(TurnMetrics::default());
        let client = |last: u8, port: u16, transport| FiveTuple {
            client: SocketAddr::from(([192, 0, 2, last], port)),
            server,
            transport,
        };
        Fuzz {
            core: Core::new(config.clone(), metrics.clone()),
            ledger: Ledger::default(),
            metrics,
            ports: Ports {
                next: 49152,
                held: Vec::new(),
            },
            now: Now {
                instant: Instant::now(),
                unix: 1_700_000_000,
            },
            clients: [
                client(1, 40000, Transport::Udp),
                client(1, 40001, Transport::Udp),
                client(2, 40000, Transport::Tcp),
                client(3, 40000, Transport::Tls),
            ],
            relays: Vec::new(),
            tokens: Vec::new(),
            out: vec![0u8; 2048],
            config,
        }
    }

    /// Takes what the core released, checking that only held addresses are released, each once.
    fn drain_outputs(&mut self) {
        while let Some(Output::Release(addr)) = self.core.poll_output() {
            let at = self.ports.held.iter().position(|a| *a == addr);
            let at = at.unwrap_or_else(|| panic!("released {addr}, which is not held"));
            self.ports.held.swap_remove(at);
        }
    }

    /// Feeds a client packet and checks what comes back.
    fn client(&mut self, from: FiveTuple, packet: &[u8]) -> Option<Vec<u8>> {
        let mut action =
            self.core
                .handle_client(self.now, from, packet, &mut self.out, &self.ledger);
        if let Action::Bind(request) = action {
            let bound = self.ports.satisfy(request);
            action = self
                .core
                .handle_bound(self.now, bound, &mut self.out, &self.ledger);
        }
        self.drain_outputs();
        match action {
            Action::Drop => None,
            Action::Bind(_) => panic!("handle_bound asks for nothing more"),
            Action::Reply(n) => {
                let reply = self.out.get(..n).expect("a reply fits its buffer").to_vec();
                let msg = Message::parse(&reply).expect("every reply is valid STUN");
                if let Some(Ok(Attribute::XorRelayedAddress(relay))) =
                    msg.decode_any(attr::XOR_RELAYED_ADDRESS)
                {
                    self.relays.push(relay);
                }
                if let Some(Ok(Attribute::ReservationToken(t))) =
                    msg.decode_any(attr::RESERVATION_TOKEN)
                {
                    self.tokens.push(t);
                }
                Some(reply)
            }
            Action::ToPeer { peer, payload, .. } => {
                assert!(
                    self.config
                        .policy
                        .check(peer, || self.relays.contains(&peer)),
                    "relayed to a peer the policy refuses: {peer}"
                );
                assert!(payload.end <= packet.len(), "payload inside the packet");
                None
            }
        }
    }

    fn nonce(&mut self, from: FiveTuple) -> Option<String> {
        let req = request(Method::ALLOCATE, &[Attribute::RequestedTransport(17)], None)?;
        let reply = self.client(from, &req)?;
        match Message::parse(&reply).ok()?.decode_any(attr::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => Some(n.to_owned()),
            _ => None,
        }
    }

    fn authed(&mut self, from: FiveTuple, method: Method, attrs: &[Attribute<'_>], user: u8) {
        let Some(nonce) = self.nonce(from) else {
            return;
        };
        let (name, pass) = if user & 1 == 0 {
            ("u", "p")
        } else {
            ("v", "q")
        };
        let key = long_term_key_md5(name, REALM, pass);
        let mut all = attrs.to_vec();
        all.extend([
            Attribute::Username(name),
            Attribute::Realm(REALM),
            Attribute::Nonce(&nonce),
        ]);
        if let Some(req) = request(method, &all, Some(&key)) {
            self.client(from, &req);
        }
    }

    fn peer_address(b: u8, port: u8) -> SocketAddr {
        let ip = match b % 8 {
            0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            1 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, b)),
            2 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), // the server itself
            3 => "::ffff:198.51.100.9"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            4 => "64:ff9b::c633:6409"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            _ => IpAddr::V4(Ipv4Addr::new(ALLOWED[0], ALLOWED[1], ALLOWED[2], b)),
        };
        SocketAddr::new(ip, 9000 + u16::from(port))
    }

    fn check_invariants(&self) {
        let allocations = self.core.allocation_count();
        assert_eq!(
            self.metrics.allocations.get(),
            allocations as i64,
            "allocation gauge"
        );
        assert!(self.metrics.permissions.get() >= 0, "permission gauge");
        assert!(self.metrics.channels.get() >= 0, "channel gauge");
        let held = self.ledger.allocations() as usize;
        let reserved = self.ledger.reservations();
        assert_eq!(held, allocations + reserved, "quota ledger");
        assert!(held <= self.config.total_quota as usize, "total quota");
        assert!(
            self.metrics.permissions.get()
                <= (allocations as u32 * self.config.max_permissions) as i64
        );
        assert!(
            self.metrics.channels.get() <= (allocations as u32 * self.config.max_channels) as i64
        );
    }
}

fn request(method: Method, attrs: &[Attribute<'_>], key: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, &[0x42; 12]).ok()?;
    for a in attrs {
        w.add(a).ok()?;
    }
    if let Some(key) = key {
        w.add_message_integrity(key).ok()?;
    }
    let n = w.finish();
    buf.truncate(n);
    Some(buf)
}

/// Runs a script of client packets (raw, or authenticated requests built from the script so the fuzzer gets
/// past the MAC), peer datagrams, time steps and closed connections through one TURN core, checking after
/// every step that replies are valid STUN, that nothing is relayed to a refused peer, and that the quota
/// ledger, the gauges and the per-allocation caps agree with the allocations.
pub fn fuzz_core(data: &[u8]) {
    let mut f = Fuzz::new();
    let mut s = Script { data };
    while let Some(op) = s.byte() {
        let who = f.clients[usize::from(op >> 4) % 4];
        match op % 12 {
            0 => {
                let packet = s.bytes(255).to_vec();
                f.client(who, &packet);
            }
            1 => {
                let (Some(i), Some(b), Some(port)) = (s.byte(), s.byte(), s.byte()) else {
                    break;
                };
                let Some(&relay) = f.relays.get(usize::from(i) % f.relays.len().max(1)) else {
                    continue;
                };
                let payload = s.bytes(200).to_vec();
                // As the driver reads a peer datagram: room for any header in front, padding behind.
                let at = PEER_HEADROOM..PEER_HEADROOM + payload.len();
                let mut buf = vec![0u8; at.end + PEER_TAILROOM];
                buf[at.clone()].copy_from_slice(&payload);
                let peer = Fuzz::peer_address(b, port);
                match f.core.handle_peer(f.now, relay, peer, &mut buf, at.clone()) {
                    PeerAction::Drop => {}
                    PeerAction::ChannelData { frame, .. } => {
                        assert!(frame.end <= buf.len());
                        assert_eq!(frame.start + 4, at.start, "framed where the payload lies");
                        assert_eq!(&buf[at], &payload[..], "payload framed in place");
                    }
                    PeerAction::DataIndication { frame, .. } => {
                        assert!(frame.end <= buf.len());
                        assert_eq!(&buf[at], &payload[..], "payload framed in place");
                        let msg = Message::parse(&buf[frame]).expect("a valid Data indication");
                        assert_eq!(msg.method(), Method::DATA);
                        assert_eq!(
                            msg.decode_any(attr::DATA),
                            Some(Ok(Attribute::Data(&payload)))
                        );
                    }
                }
            }
            2 => {
                let secs = u64::from(s.byte().unwrap_or(1));
                f.now.instant += Duration::from_secs(secs * 5);
                f.now.unix += secs * 5;
                f.core.handle_timeout(f.now.instant, &f.ledger);
                f.drain_outputs();
            }
            3 => {
                let flags = s.byte().unwrap_or(0);
                let mut attrs = vec![Attribute::RequestedTransport(if flags & 1 == 0 {
                    17
                } else {
                    6
                })];
                if flags & 2 != 0 {
                    attrs.push(Attribute::EvenPort(flags & 4 != 0));
                }
                if flags & 8 != 0 {
                    attrs.push(Attribute::AdditionalAddressFamily(Family::V6));
                }
                if flags & 16 != 0 {
                    attrs.push(Attribute::RequestedAddressFamily(Family::V6));
                }
                if flags & 32 != 0 {
                    attrs.push(Attribute::Lifetime(u32::from(flags) * 40));
                }
                if flags & 64 != 0
                    && let Some(t) = f.tokens.last().copied()
                {
                    attrs = vec![
                        Attribute::RequestedTransport(17),
                        Attribute::ReservationToken(t),
                    ];
                }
                f.authed(who, Method::ALLOCATE, &attrs, flags >> 7);
            }
            4 => {
                let count = s.byte().unwrap_or(1) % 6;
                let peers: Vec<SocketAddr> = (0..count)
                    .map(|i| Fuzz::peer_address(s.byte().unwrap_or(i), i))
                    .collect();
                let attrs: Vec<Attribute<'_>> = peers
                    .iter()
                    .map(|p| Attribute::XorPeerAddress(*p))
                    .collect();
                f.authed(who, Method::CREATE_PERMISSION, &attrs, 0);
            }
            5 => {
                let (n, b, port) = (
                    s.byte().unwrap_or(0),
                    s.byte().unwrap_or(5),
                    s.byte().unwrap_or(0),
                );
                let attrs = [
                    Attribute::ChannelNumber(0x4000 + u16::from(n % 8)),
                    Attribute::XorPeerAddress(Fuzz::peer_address(b, port % 4)),
                ];
                f.authed(who, Method::CHANNEL_BIND, &attrs, 0);
            }
            6 => {
                let l = u32::from(s.byte().unwrap_or(0)) * 10;
                f.authed(who, Method::REFRESH, &[Attribute::Lifetime(l)], 0);
            }
            7 => {
                let (b, port) = (s.byte().unwrap_or(5), s.byte().unwrap_or(0));
                let data = s.bytes(100).to_vec();
                let mut buf = vec![0u8; 512];
                let Ok(mut w) =
                    MessageWriter::new(&mut buf, Class::Indication, Method::SEND, &[7; 12])
                else {
                    continue;
                };
                if w.add(&Attribute::XorPeerAddress(Fuzz::peer_address(b, port % 4)))
                    .is_ok()
                    && w.add(&Attribute::Data(&data)).is_ok()
                {
                    let n = w.finish();
                    f.client(who, &buf[..n]);
                }
            }
            8 => {
                let n = s.byte().unwrap_or(0);
                let data = s.bytes(100).to_vec();
                let mut frame = vec![0x40, n % 8, 0, data.len() as u8];
                frame.extend_from_slice(&data);
                f.client(who, &frame);
            }
            9 => {
                f.core.connection_closed(who, &f.ledger);
                f.drain_outputs();
            }
            _ => {
                // Mutate a valid request after signing, so the MAC check and the attribute walk meet bytes
                // that are almost right.
                let (at, x) = (s.byte().unwrap_or(0), s.byte().unwrap_or(1));
                if let Some(nonce) = f.nonce(who) {
                    let key = long_term_key_md5("u", REALM, "p");
                    let attrs = [
                        Attribute::RequestedTransport(17),
                        Attribute::Username("u"),
                        Attribute::Realm(REALM),
                        Attribute::Nonce(&nonce),
                    ];
                    if let Some(mut req) = request(Method::ALLOCATE, &attrs, Some(&key)) {
                        let i = usize::from(at) % req.len();
                        req[i] ^= x;
                        f.client(who, &req);
                    }
                }
            }
        }
        f.check_invariants();
    }
    // Everything ends: after the longest lifetime, nothing is held.
    f.now.instant += Duration::from_secs(3601);
    f.core.handle_timeout(f.now.instant, &f.ledger);
    f.drain_outputs();
    f.check_invariants();
    assert_eq!(f.core.allocation_count(), 0);
    assert_eq!(
        f.ledger.allocations(),
        0,
        "nothing held after every lifetime"
    );
    assert_eq!(
        f.ports.held,
        Vec::<SocketAddr>::new(),
        "every relay socket released after every lifetime"
    );
}

/// Feeds a byte stream to the TCP/TLS framer in reads of sizes taken from the first bytes, as the
/// connection task does, and checks that the frames are exactly those of the whole stream parsed at once,
/// and that the buffer never grows past one frame and one read.
pub fn fuzz_stream_framing(data: &[u8]) {
    let (sizes, stream) = data.split_at(data.len().min(8));
    // The reference: frames of the whole stream, up to the first framing error.
    let mut expected = Vec::new();
    let mut at = 0;
    let mut expect_error = false;
    while at < stream.len() {
        match stream_frame_len(&stream[at..]) {
            Ok(Some(len)) if len <= Framer::MAX_FRAME && at + len <= stream.len() => {
                expected.push(&stream[at..at + len]);
                at += len;
            }
            Ok(Some(len)) if len > Framer::MAX_FRAME => {
                expect_error = true;
                break;
            }
            Ok(_) => break,
            Err(_) => {
                expect_error = true;
                break;
            }
        }
    }
    let mut framer = Framer::default();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut fed = 0;
    let mut read = 0;
    let mut failed = false;
    'feed: while fed < stream.len() {
        let want = usize::from(sizes.get(read % sizes.len().max(1)).copied().unwrap_or(7)).max(1);
        read += 1;
        // Like `read_buf` into a Vec: at most the spare capacity, 64 bytes when there is none.
        let buf = framer.buffer();
        if buf.capacity() == buf.len() {
            buf.reserve(64);
        }
        let n = want.min(buf.capacity() - buf.len()).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        assert!(
            buf.capacity() <= Framer::MAX_FRAME + 4096,
            "buffer grew to {}",
            buf.capacity()
        );
        loop {
            match framer.next_frame() {
                Ok(Some(len)) => {
                    got.push(framer.frame(len).to_vec());
                    framer.consume(len);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got.len(), expected.len(), "frame count");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(&g[..], *e, "frame bytes");
    }
    assert_eq!(
        failed, expect_error,
        "framing error seen iff the stream has one"
    );
}
