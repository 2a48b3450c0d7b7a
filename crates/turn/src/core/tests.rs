//! Deterministic tests of the core: no sockets, no clock.

use super::*;
use peercall_stun::{Attribute as A, long_term_key_md5};

struct FakePorts {
    next: u16,
    /// Relay IPs, at most one per family: a family without one cannot be bound, like a server without an
    /// IPv6 `--relay-ip`.
    ips: Vec<IpAddr>,
}

impl FakePorts {
    fn bind(&mut self, family: Family, even: bool) -> Option<SocketAddr> {
        let ip = *self.ips.iter().find(|ip| Family::of(**ip) == family)?;
        self.next += if even { 2 - self.next % 2 } else { 1 };
        Some(SocketAddr::new(ip, self.next))
    }

    /// The driver's part of an Allocate, without sockets: binds what the core asks for.
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
                if reserve_next && let Some(r) = bound.relays[0].or(bound.relays[1]) {
                    self.next = self.next.max(r.port() + 1);
                    bound.reserved = Some(SocketAddr::new(r.ip(), r.port() + 1));
                }
            }
            RelayRequest::Reserved(addr) => bound.relays[slot(addr.ip())] = Some(addr),
        }
        bound
    }
}

struct Harness {
    core: Core,
    /// The ledger the driver would pass in: shared by the cores of one server (see `sibling`).
    ledger: Arc<Ledger>,
    ports: FakePorts,
    now: Now,
    client: FiveTuple,
    out: Vec<u8>,
    metrics: Arc<TurnMetrics>,
}

const REALM: &str = "test";
const V4_RELAY_IP: &str = "127.0.0.1";
const V6_RELAY_IP: &str = "::1";

/// A harness whose relay ports come in both families, as with an IPv4 and an IPv6 `--relay-ip`.
fn dual_harness() -> Harness {
    let mut h = harness(true, 10);
    h.ports.ips.push(V6_RELAY_IP.parse().expect("ip"));
    h
}

fn harness(allow_loopback: bool, user_quota: u32) -> Harness {
    let metrics = Arc::new(TurnMetrics::default());
    let config = CoreConfig {
        realm: REALM.into(),
        users: vec![("u".into(), "p".into()), ("v".into(), "q".into())],
        auth_secrets: vec!["secret".into()],
        policy: PeerPolicy::new(&[], &[], allow_loopback),
        user_quota,
        client_quota: 50,
        total_quota: 100,
        max_permissions: 8,
        max_channels: 4,
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(3600),
        unauth_rate_per_sec: 5,
        software: None,
        nonce_key: [7; 32],
        external_ip: Vec::new(),
    };
    Harness {
        core: Core::new(Arc::new(config), metrics.clone()),
        ledger: Arc::new(Ledger::default()),
        ports: FakePorts {
            next: 50000,
            ips: vec![V4_RELAY_IP.parse().expect("ip")],
        },
        now: Now {
            instant: Instant::now(),
            unix: 1_700_000_000,
        },
        client: FiveTuple {
            client: "192.0.2.10:40000".parse().expect("addr"),
            server: "127.0.0.1:3478".parse().expect("addr"),
            transport: Transport::Udp,
        },
        out: vec![0; 2048],
        metrics,
    }
}

/// The parts of a response a test looks at.
#[derive(Debug)]
struct Resp {
    class: Class,
    code: Option<u16>,
    nonce: Option<String>,
    relayed: Option<SocketAddr>,
    /// Every XOR-RELAYED-ADDRESS, in order.
    relayed_all: Vec<SocketAddr>,
    /// ADDRESS-ERROR-CODE: family and code.
    address_error: Option<(Family, u16)>,
    lifetime: Option<u32>,
}

impl Harness {
    /// A client packet, as the driver feeds it: an Allocate's relay addresses are bound and reported before
    /// the answer comes.
    fn handle(&mut self, packet: &[u8]) -> Action {
        match self
            .core
            .handle_client(self.now, self.client, packet, &mut self.out, &self.ledger)
        {
            Action::Bind(request) => {
                let bound = self.ports.satisfy(request);
                self.core
                    .handle_bound(self.now, bound, &mut self.out, &self.ledger)
            }
            action => action,
        }
    }

    /// Every address the core released since the last call.
    fn released(&mut self) -> Vec<SocketAddr> {
        std::iter::from_fn(|| self.core.poll_output())
            .map(|Output::Release(addr)| addr)
            .collect()
    }

    fn timeout(&mut self, at: Instant) {
        self.core.handle_timeout(at, &self.ledger);
    }

    fn send(&mut self, packet: &[u8]) -> Option<Resp> {
        let action = self.handle(packet);
        match action {
            Action::Reply(n) if n > 0 => {
                let msg = Message::parse(&self.out[..n]).expect("server writes valid STUN");
                Some(Resp {
                    class: msg.class(),
                    code: match msg.decode_any(attr::ERROR_CODE) {
                        Some(Ok(A::ErrorCode { code, .. })) => Some(code),
                        _ => None,
                    },
                    nonce: match msg.decode_any(attr::NONCE) {
                        Some(Ok(A::Nonce(n))) => Some(n.to_owned()),
                        _ => None,
                    },
                    relayed: match msg.decode_any(attr::XOR_RELAYED_ADDRESS) {
                        Some(Ok(A::XorRelayedAddress(a))) => Some(a),
                        _ => None,
                    },
                    relayed_all: msg
                        .attributes()
                        .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
                        .map(
                            |a| match Attribute::decode(a.typ, a.value, msg.transaction_id()) {
                                Ok(A::XorRelayedAddress(addr)) => addr,
                                other => panic!("bad XOR-RELAYED-ADDRESS: {other:?}"),
                            },
                        )
                        .collect(),
                    address_error: match msg.decode_any(attr::ADDRESS_ERROR_CODE) {
                        Some(Ok(A::AddressErrorCode { family, code, .. })) => Some((family, code)),
                        _ => None,
                    },
                    lifetime: match msg.decode_any(attr::LIFETIME) {
                        Some(Ok(A::Lifetime(l))) => Some(l),
                        _ => None,
                    },
                })
            }
            _ => None,
        }
    }

    fn nonce(&mut self) -> String {
        let req = request(Method::ALLOCATE, &[A::RequestedTransport(17)], None);
        let r = self.send(&req).expect("401 answer");
        assert_eq!(r.code, Some(401));
        r.nonce.expect("401 carries a nonce")
    }

    fn authed(&mut self, method: Method, attrs: &[A<'_>], user: &str, pass: &str) -> Resp {
        let nonce = self.nonce();
        let key = long_term_key_md5(user, REALM, pass);
        let mut all = attrs.to_vec();
        all.extend([A::Username(user), A::Realm(REALM), A::Nonce(&nonce)]);
        let req = request(method, &all, Some(&key));
        self.send(&req).expect("an answer")
    }

    /// An authenticated Allocate with EVEN-PORT R=1; the whole reply (it carries a RESERVATION-TOKEN).
    fn even_port_allocate(&mut self, user: &str, pass: &str) -> Vec<u8> {
        let nonce = self.nonce();
        let key = long_term_key_md5(user, REALM, pass);
        let req = request(
            Method::ALLOCATE,
            &[
                A::RequestedTransport(17),
                A::EvenPort(true),
                A::Username(user),
                A::Realm(REALM),
                A::Nonce(&nonce),
            ],
            Some(&key),
        );
        let action = self.handle(&req);
        let Action::Reply(n) = action else {
            panic!("expected a reply")
        };
        self.out[..n].to_vec()
    }

    fn allocate(&mut self) -> SocketAddr {
        let r = self.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
        assert_eq!(r.class, Class::Success, "{r:?}");
        r.relayed.expect("relayed address")
    }
}

fn request(method: Method, attrs: &[A<'_>], key: Option<&[u8]>) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let tid = [0x42; 12];
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, &tid).expect("fits");
    for a in attrs {
        w.add(a).expect("fits");
    }
    if let Some(key) = key {
        w.add_message_integrity(key).expect("fits");
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

#[test]
fn binding_returns_mapped_address_without_auth() {
    let mut h = harness(false, 10);
    let req = request(Method::BINDING, &[], None);
    let action = h.handle(&req);
    let Action::Reply(n) = action else {
        panic!("expected a reply")
    };
    let msg = Message::parse(&h.out[..n]).expect("valid");
    assert_eq!(
        msg.decode_any(attr::XOR_MAPPED_ADDRESS),
        Some(Ok(A::XorMappedAddress(h.client.client)))
    );
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn allocate_needs_auth_then_succeeds() {
    let mut h = harness(false, 10);
    let relayed = h.allocate();
    assert_eq!(relayed.ip(), "127.0.0.1".parse::<IpAddr>().expect("ip"));
    assert_eq!(h.core.allocation_count(), 1);
    // A second Allocate on the same 5-tuple is a mismatch.
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.code, Some(437));
}

#[test]
fn unauthenticated_requests_keep_no_state() {
    let mut h = harness(false, 10);
    for _ in 0..3 {
        h.nonce();
    }
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.ledger.users(), 0);
    assert_eq!(h.ledger.allocations(), 0);
}

#[test]
fn wrong_password_stale_nonce_and_rest_credentials() {
    let mut h = harness(false, 10);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "wrong");
    assert_eq!(r.code, Some(401));
    // A nonce from the past is stale.
    let nonce = h.nonce();
    h.now.unix += auth::NONCE_LIFETIME_SECS + 1;
    let key = long_term_key_md5("u", REALM, "p");
    let req = request(
        Method::ALLOCATE,
        &[
            A::RequestedTransport(17),
            A::Username("u"),
            A::Realm(REALM),
            A::Nonce(&nonce),
        ],
        Some(&key),
    );
    assert_eq!(h.send(&req).expect("answer").code, Some(438));
    // REST API credentials.
    let user = format!("{}:alice", h.now.unix + 60);
    let pass = auth::rest_password(b"secret", &user);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], &user, &pass);
    assert_eq!(r.class, Class::Success, "{r:?}");
    let expired = format!("{}:bob", h.now.unix - 1);
    let pass = auth::rest_password(b"secret", &expired);
    h.client.client.set_port(40001);
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17)],
        &expired,
        &pass,
    );
    assert_eq!(r.code, Some(401));
}

#[test]
fn allocate_errors() {
    let mut h = harness(false, 1);
    let r = h.authed(Method::ALLOCATE, &[], "u", "p");
    assert_eq!(r.code, Some(400), "missing REQUESTED-TRANSPORT");
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(6)], "u", "p");
    assert_eq!(r.code, Some(442));
    let r = h.authed(
        Method::ALLOCATE,
        &[
            A::RequestedTransport(17),
            A::RequestedAddressFamily(Family::V6),
        ],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(440));
    let r = h.authed(
        Method::ALLOCATE,
        &[
            A::RequestedTransport(17),
            A::Unknown {
                typ: 0x7777,
                value: &[],
            },
        ],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(420));
    h.allocate();
    h.client.client.set_port(40002);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.code, Some(486), "user quota of 1");
    // Another user on the first client's allocation: wrong credentials.
    h.client.client.set_port(40000);
    let r = h.authed(Method::REFRESH, &[], "v", "q");
    assert_eq!(r.code, Some(441));
}

#[test]
fn refresh_and_delete() {
    let mut h = harness(false, 10);
    let r = h.authed(Method::REFRESH, &[], "u", "p");
    assert_eq!(r.code, Some(437), "no allocation yet");
    h.allocate();
    let r = h.authed(Method::REFRESH, &[A::Lifetime(100_000)], "u", "p");
    assert_eq!(r.lifetime, Some(3600), "clamped to the maximum");
    let r = h.authed(Method::REFRESH, &[A::Lifetime(0)], "u", "p");
    assert_eq!(r.lifetime, Some(0));
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.released().len(), 1);
}

#[test]
fn allocation_expires() {
    let mut h = harness(false, 10);
    h.allocate();
    h.timeout(h.now.instant + Duration::from_secs(599));
    assert_eq!(h.core.allocation_count(), 1);
    h.timeout(h.now.instant + Duration::from_secs(601));
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn loopback_peer_refused_by_default_and_allowed_by_flag() {
    let mut h = harness(false, 10);
    h.allocate();
    let peer: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(403));
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4000), A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(403));
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:9999".parse().expect("addr");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(mapped)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(403), "IPv4-mapped loopback is loopback");

    let mut h = harness(true, 10);
    h.allocate();
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
}

#[test]
fn own_relay_address_is_always_a_valid_peer() {
    let mut h = harness(false, 10);
    let first = h.allocate();
    h.client.client.set_port(40005);
    h.allocate();
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(first)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
}

#[test]
fn relays_both_ways_with_permissions_and_channels() {
    let mut h = harness(true, 10);
    let relay = h.allocate();
    let peer: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    // Without permission, peer data is dropped.
    let mut buf = vec![0u8; 64];
    buf[4..8].copy_from_slice(b"ping");
    assert_eq!(
        h.core.handle_peer(h.now, relay, peer, &mut buf, 4..8),
        PeerAction::Drop
    );
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4001), A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    // Peer → client arrives as ChannelData, framed in place.
    match h.core.handle_peer(h.now, relay, peer, &mut buf, 4..8) {
        PeerAction::ChannelData { to, frame } => {
            assert_eq!(to, h.client);
            assert_eq!(&buf[frame], &[0x40, 0x01, 0, 4, b'p', b'i', b'n', b'g']);
        }
        other => panic!("expected ChannelData, got {other:?}"),
    }
    // Client → peer over the channel.
    let frame = [0x40, 0x01, 0, 3, b'a', b'b', b'c', 0];
    let action = h.handle(&frame[..7]);
    assert_eq!(
        action,
        Action::ToPeer {
            relay,
            peer,
            payload: 4..7
        }
    );
    assert_eq!(&frame[4..7], b"abc");
    // Rebinding the channel to another peer is refused.
    let other: SocketAddr = "127.0.0.1:10000".parse().expect("addr");
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4001), A::XorPeerAddress(other)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(400));
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x3FFF), A::XorPeerAddress(other)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(400), "channel number out of range");
    // Permissions expire after 300 s without refresh; then peer data is dropped.
    h.timeout(h.now.instant + Duration::from_secs(301));
    let later = Now {
        instant: h.now.instant + Duration::from_secs(301),
        unix: h.now.unix + 301,
    };
    assert_eq!(
        h.core.handle_peer(later, relay, peer, &mut buf, 4..8),
        PeerAction::Drop
    );
    assert!(h.metrics.packets_relayed().0 >= 1);
}

#[test]
fn send_indication_and_data_indication() {
    let mut h = harness(true, 10);
    let relay = h.allocate();
    let peer: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
    let send = request(
        Method::SEND,
        &[A::XorPeerAddress(peer), A::Data(b"hello")],
        None,
    );
    let mut send = send;
    send[0..2].copy_from_slice(
        &peercall_stun::message_type(Class::Indication, Method::SEND).to_be_bytes(),
    );
    let action = h.handle(&send);
    assert_eq!(action, Action::Drop, "no permission yet");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success);
    let action = h.handle(&send);
    let Action::ToPeer {
        relay: from_relay,
        peer: to,
        payload,
    } = action
    else {
        panic!("expected ToPeer, got {action:?}")
    };
    assert_eq!(
        (from_relay, to, &send[payload]),
        (relay, peer, &b"hello"[..])
    );
    let mut buf = vec![0u8; 64];
    buf[4..9].copy_from_slice(b"world");
    let PeerAction::DataIndication { frame, .. } =
        h.core.handle_peer(h.now, relay, peer, &mut buf, 4..9)
    else {
        panic!("expected a Data indication");
    };
    let msg = Message::parse(&buf[frame]).expect("valid");
    assert_eq!(msg.method(), Method::DATA);
    assert_eq!(msg.decode_any(attr::DATA), Some(Ok(A::Data(b"world"))));
    assert_eq!(
        msg.decode_any(attr::XOR_PEER_ADDRESS),
        Some(Ok(A::XorPeerAddress(peer)))
    );
}

#[test]
fn unauthenticated_flood_is_rate_limited() {
    let mut h = harness(false, 10);
    let req = request(Method::ALLOCATE, &[A::RequestedTransport(17)], None);
    let answered = (0..100).filter(|_| h.send(&req).is_some()).count();
    assert!(answered <= 10, "burst of 2x rate 5, got {answered}");
    assert!(h.metrics.rate_limited.get() >= 90);
}

#[test]
fn a_message_integrity_that_does_not_verify_buys_no_answers_past_the_rate() {
    // Issue 9 item 4: with a random or empty MESSAGE-INTEGRITY, 300 Allocates used to get 300 answers.
    let mut h = harness(false, 10);
    let nonce = h.nonce();
    let random_key = [0x5a_u8; 16];
    let forged = request(
        Method::ALLOCATE,
        &[
            A::RequestedTransport(17),
            A::Username("u"),
            A::Realm(REALM),
            A::Nonce(&nonce),
        ],
        Some(&random_key),
    );
    let answered = (0..300).filter(|_| h.send(&forged).is_some()).count();
    assert!(
        answered <= 10,
        "burst of 2x rate 5, got {answered} answers to forged integrity"
    );
    assert!(h.metrics.rate_limited.get() >= 290);
    // A client whose integrity verifies is not limited by the flood from its address.
    let relayed = h.allocate_with_nonce(&nonce);
    assert!(relayed.port() > 0);
}

impl Harness {
    /// An authenticated Allocate made with a nonce taken before a flood (getting one needs an unauthenticated
    /// answer, which the flood has used up).
    fn allocate_with_nonce(&mut self, nonce: &str) -> SocketAddr {
        let key = long_term_key_md5("u", REALM, "p");
        let req = request(
            Method::ALLOCATE,
            &[
                A::RequestedTransport(17),
                A::Username("u"),
                A::Realm(REALM),
                A::Nonce(nonce),
            ],
            Some(&key),
        );
        let r = self.send(&req).expect("a verified request is answered");
        assert_eq!(r.class, Class::Success, "{r:?}");
        r.relayed.expect("relayed address")
    }
}

#[test]
fn a_peer_appended_after_message_integrity_gets_no_permission() {
    // Issue 9 item 6: RFC 8489 §14.5, attributes after MESSAGE-INTEGRITY are ignored (a permission appended
    // after the MAC used to be installed and used).
    let mut h = harness(true, 10);
    let relay = h.allocate();
    let covered: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
    let appended: SocketAddr = "127.0.0.2:9002".parse().expect("addr");
    let nonce = h.nonce();
    let key = long_term_key_md5("u", REALM, "p");
    let mut req = request(
        Method::CREATE_PERMISSION,
        &[
            A::XorPeerAddress(covered),
            A::Username("u"),
            A::Realm(REALM),
            A::Nonce(&nonce),
        ],
        Some(&key),
    );
    // Append a second XOR-PEER-ADDRESS after the MAC, as an attacker in the path would, and fix the length.
    let mut extra = vec![0u8; 64];
    let tid = [0x42; 12];
    let mut w = MessageWriter::new(&mut extra, Class::Request, Method::CREATE_PERMISSION, &tid)
        .expect("fits");
    w.add(&A::XorPeerAddress(appended)).expect("fits");
    let n = w.finish();
    req.extend_from_slice(&extra[20..n]);
    let body = (req.len() - 20) as u16;
    req[2..4].copy_from_slice(&body.to_be_bytes());
    let r = h.send(&req).expect("answered");
    assert_eq!(r.class, Class::Success, "the covered part verifies: {r:?}");
    let mut buf = vec![0u8; 64];
    buf[4..8].copy_from_slice(b"ping");
    assert_ne!(
        h.core.handle_peer(h.now, relay, covered, &mut buf, 4..8),
        PeerAction::Drop,
        "the covered peer is permitted"
    );
    assert_eq!(
        h.core.handle_peer(h.now, relay, appended, &mut buf, 4..8),
        PeerAction::Drop,
        "the peer after MESSAGE-INTEGRITY must not be permitted"
    );
}

#[test]
fn garbage_is_dropped() {
    let mut h = harness(false, 10);
    for packet in [
        &[][..],
        &[0xFF; 10][..],
        &[0, 1, 0, 0][..],
        &[0x40, 0, 0, 200][..],
    ] {
        assert!(h.send(packet).is_none());
    }
}

#[test]
fn even_port_reservation_is_claimed_by_token() {
    let mut h = harness(false, 10);
    let reply = h.even_port_allocate("u", "p");
    let msg = Message::parse(&reply).expect("valid");
    let Some(Ok(A::XorRelayedAddress(relay))) = msg.decode_any(attr::XOR_RELAYED_ADDRESS) else {
        panic!("no relay")
    };
    assert_eq!(relay.port() % 2, 0, "even port");
    let Some(Ok(A::ReservationToken(token))) = msg.decode_any(attr::RESERVATION_TOKEN) else {
        panic!("no token")
    };
    h.client.client.set_port(40100);
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), A::ReservationToken(token)],
        "u",
        "p",
    );
    assert_eq!(r.relayed.map(|a| a.port()), Some(relay.port() + 1), "{r:?}");
    // The token is single-use.
    h.client.client.set_port(40101);
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), A::ReservationToken(token)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(508));
}

/// A second core of the same server (another thread's shard), sharing the first one's ledger.
fn sibling(h: &Harness, client_port: u16, relay_port: u16) -> Harness {
    let mut other = harness(false, 2);
    other.core = Core::new(h.core.config.clone(), h.metrics.clone());
    other.ledger = h.ledger.clone();
    other.client.client.set_port(client_port);
    other.ports.next = relay_port;
    other
}

#[test]
fn cores_sharing_a_ledger_share_quotas_relays_and_reservations() {
    let mut a = harness(false, 2);
    let relay_a = a.allocate();
    let mut b = sibling(&a, 41000, 52000);
    b.allocate();
    // The user quota (2) counts allocations of both cores.
    b.client.client.set_port(41001);
    let r = b.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.code, Some(486), "{r:?}");
    // A relayed address of core a is an allowed peer for a client of core b, although it is loopback.
    b.client.client.set_port(41000);
    let r = b.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(relay_a)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    // A reservation made on core b is claimed by an Allocate that core a handles.
    let mut c = sibling(&a, 42000, 54000);
    let reply = c.even_port_allocate("v", "q");
    let msg = Message::parse(&reply).expect("valid");
    let Some(Ok(A::ReservationToken(token))) = msg.decode_any(attr::RESERVATION_TOKEN) else {
        panic!("no token")
    };
    let Some(Ok(A::XorRelayedAddress(relay_c))) = msg.decode_any(attr::XOR_RELAYED_ADDRESS) else {
        panic!("no relay")
    };
    a.client.client.set_port(40500);
    let r = a.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), A::ReservationToken(token)],
        "v",
        "q",
    );
    assert_eq!(
        r.relayed.map(|x| x.port()),
        Some(relay_c.port() + 1),
        "{r:?}"
    );
    assert_eq!(a.ledger.allocations(), 4);
    // Deleting an allocation on one core frees quota for the user on the other.
    a.client.client.set_port(40000);
    let r = a.authed(Method::REFRESH, &[A::Lifetime(0)], "u", "p");
    assert_eq!(r.class, Class::Success, "{r:?}");
    b.client.client.set_port(41001);
    assert_eq!(b.allocate().ip(), relay_a.ip());
}

const DUAL: A<'static> = A::AdditionalAddressFamily(Family::V6);

impl Harness {
    /// A dual allocation (ADDITIONAL-ADDRESS-FAMILY IPv6) that must get both families: `(IPv4, IPv6)`.
    fn allocate_dual(&mut self) -> (SocketAddr, SocketAddr) {
        let r = self.authed(
            Method::ALLOCATE,
            &[A::RequestedTransport(17), DUAL],
            "u",
            "p",
        );
        assert_eq!(r.class, Class::Success, "{r:?}");
        assert_eq!(r.address_error, None, "{r:?}");
        let [v4, v6] = r.relayed_all[..] else {
            panic!("expected two XOR-RELAYED-ADDRESS, got {r:?}")
        };
        (v4, v6)
    }

    /// A Send indication to `peer`, as the client sends it (no authentication).
    fn send_to(&mut self, peer: SocketAddr, data: &'static [u8]) -> Option<SocketAddr> {
        let mut send = request(
            Method::SEND,
            &[A::XorPeerAddress(peer), A::Data(data)],
            None,
        );
        send[0..2].copy_from_slice(
            &peercall_stun::message_type(Class::Indication, Method::SEND).to_be_bytes(),
        );
        match self.handle(&send) {
            Action::ToPeer {
                relay,
                peer: to,
                payload,
            } => {
                assert_eq!((to, &send[payload]), (peer, data));
                Some(relay)
            }
            _ => None,
        }
    }

    /// ChannelData on `channel` from the client: the relay it leaves from.
    fn channel_data(&mut self, channel: u16) -> Option<SocketAddr> {
        let mut frame = channel.to_be_bytes().to_vec();
        frame.extend([0, 2, b'h', b'i']);
        match self.handle(&frame) {
            Action::ToPeer { relay, payload, .. } => {
                assert_eq!(&frame[payload], b"hi");
                Some(relay)
            }
            _ => None,
        }
    }
}

#[test]
fn dual_allocation_has_an_ipv4_and_an_ipv6_relayed_address() {
    let mut h = dual_harness();
    let (v4, v6) = h.allocate_dual();
    assert_eq!(
        v4.ip(),
        V4_RELAY_IP.parse::<IpAddr>().expect("ip"),
        "IPv4 first"
    );
    assert_eq!(v6.ip(), V6_RELAY_IP.parse::<IpAddr>().expect("ip"));
    assert!(h.core.is_relay(v4) && h.core.is_relay(v6));
    assert!(h.ledger.is_relay(v4) && h.ledger.is_relay(v6));
    assert_eq!(
        h.core.relay_of(&h.client),
        Some(v4),
        "the IPv4 one is primary"
    );
    // One allocation for the quotas and the gauge, although it holds two addresses.
    assert_eq!(h.core.allocation_count(), 1);
    assert_eq!(h.ledger.allocations(), 1);
    assert_eq!(h.metrics.allocations.get(), 1);
    // Without ADDITIONAL-ADDRESS-FAMILY the same server still hands out IPv4 only.
    h.client.client.set_port(40001);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.relayed_all.len(), 1, "{r:?}");
    assert!(r.relayed_all[0].is_ipv4(), "{r:?}");
}

#[test]
fn dual_allocation_without_ipv6_succeeds_with_address_error_code() {
    // The default harness has an IPv4 relay address only.
    let mut h = harness(true, 10);
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), DUAL],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(r.address_error, Some((Family::V6, 440)), "{r:?}");
    assert_eq!(r.relayed_all.len(), 1, "{r:?}");
    assert!(r.relayed_all[0].is_ipv4(), "{r:?}");
    // With no IPv6 relayed address, an IPv6 peer is a family mismatch.
    let peer: SocketAddr = "[::1]:9999".parse().expect("addr");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(443));
    // The other way round (an IPv6-only server): IPv6 alone, and the IPv4 half named missing.
    let mut h = harness(true, 10);
    h.ports.ips = vec![V6_RELAY_IP.parse().expect("ip")];
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), DUAL],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(r.address_error, Some((Family::V4, 508)), "{r:?}");
    assert_eq!(r.relayed_all.len(), 1, "{r:?}");
    assert!(r.relayed_all[0].is_ipv6(), "{r:?}");
    assert_eq!(h.core.relay_of(&h.client), Some(r.relayed_all[0]));
    // Neither family: no allocation, and the quota is given back.
    let mut h = harness(true, 10);
    h.ports.ips.clear();
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), DUAL],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(508), "{r:?}");
    assert_eq!(h.ledger.allocations(), 0);
}

#[test]
fn dual_allocation_refuses_bad_combinations() {
    let mut h = dual_harness();
    let bad: [&[A<'_>]; 6] = [
        &[A::AdditionalAddressFamily(Family::V4)],
        // A family code that is neither IPv4 nor IPv6.
        &[A::Unknown {
            typ: attr::ADDITIONAL_ADDRESS_FAMILY,
            value: &[0x03, 0, 0, 0],
        }],
        &[DUAL, A::RequestedAddressFamily(Family::V4)],
        &[DUAL, A::RequestedAddressFamily(Family::V6)],
        &[DUAL, A::ReservationToken([1; 8])],
        &[DUAL, A::EvenPort(true)],
    ];
    for extra in bad {
        let mut attrs = vec![A::RequestedTransport(17)];
        attrs.extend_from_slice(extra);
        let r = h.authed(Method::ALLOCATE, &attrs, "u", "p");
        assert_eq!(r.code, Some(400), "{extra:?}: {r:?}");
    }
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.ledger.allocations(), 0);
    // An unknown token alone is not a bad request but an unavailable reservation (508): the 400 above
    // comes from the combination.
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), A::ReservationToken([1; 8])],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(508), "{r:?}");
    // EVEN-PORT without a reservation (R=0) is allowed: both ports even.
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), DUAL, A::EvenPort(false)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(r.relayed_all.len(), 2, "{r:?}");
    assert!(r.relayed_all.iter().all(|a| a.port() % 2 == 0), "{r:?}");
}

#[test]
fn dual_allocation_relays_each_peer_through_its_family() {
    let mut h = dual_harness();
    let (v4, v6) = h.allocate_dual();
    let peer4: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    let peer6: SocketAddr = "[::1]:9999".parse().expect("addr");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer4), A::XorPeerAddress(peer6)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    // Send indications leave from the relayed address of the peer's family.
    assert_eq!(h.send_to(peer6, b"six"), Some(v6));
    assert_eq!(h.send_to(peer4, b"four"), Some(v4));
    // So does ChannelData.
    for (channel, peer) in [(0x4000, peer6), (0x4001, peer4)] {
        let r = h.authed(
            Method::CHANNEL_BIND,
            &[A::ChannelNumber(channel), A::XorPeerAddress(peer)],
            "u",
            "p",
        );
        assert_eq!(r.class, Class::Success, "{r:?}");
    }
    assert_eq!(h.channel_data(0x4000), Some(v6));
    assert_eq!(h.channel_data(0x4001), Some(v4));
    // Datagrams arriving on either relayed address reach the client, on the peer's channel.
    for (relay, peer, channel) in [(v6, peer6, 0x4000u16), (v4, peer4, 0x4001)] {
        let mut buf = vec![0u8; 64];
        buf[4..8].copy_from_slice(b"pong");
        match h.core.handle_peer(h.now, relay, peer, &mut buf, 4..8) {
            PeerAction::ChannelData { to, frame } => {
                assert_eq!(to, h.client);
                assert_eq!(frame.len(), 8);
                assert_eq!(buf[frame.start..frame.start + 2], channel.to_be_bytes());
            }
            other => panic!("{relay} from {peer}: expected ChannelData, got {other:?}"),
        }
    }
    let mut buf = vec![0u8; 64];
    let stranger: SocketAddr = "[::1]:7".parse().expect("addr");
    assert!(
        matches!(
            h.core.handle_peer(h.now, v6, stranger, &mut buf, 4..8),
            PeerAction::DataIndication { to, .. } if to == h.client
        ),
        "a permitted IPv6 peer without a channel gets a Data indication"
    );
}

#[test]
fn dual_allocation_releases_both_addresses() {
    let mut h = dual_harness();
    let (v4, v6) = h.allocate_dual();
    let r = h.authed(Method::REFRESH, &[A::Lifetime(0)], "u", "p");
    assert_eq!(r.class, Class::Success, "{r:?}");
    let mut released = h.released();
    released.sort();
    assert_eq!(released, vec![v4, v6]);
    for relay in [v4, v6] {
        assert!(
            !h.core.is_relay(relay) && !h.ledger.is_relay(relay),
            "{relay}"
        );
    }
    assert_eq!(h.ledger.allocations(), 0);
    assert_eq!(h.metrics.allocations.get(), 0);
    // Expiry releases both as well.
    let (v4, v6) = h.allocate_dual();
    h.timeout(h.now.instant + Duration::from_secs(601));
    let mut released = h.released();
    released.sort();
    assert_eq!(released, vec![v4, v6]);
    assert!(!h.ledger.is_relay(v4) && !h.ledger.is_relay(v6));
    assert_eq!(h.ledger.allocations(), 0);
}

/// The same harness with a changed core configuration.
fn reconfigured(mut h: Harness, change: impl FnOnce(&mut CoreConfig)) -> Harness {
    let mut config = (*h.core.config).clone();
    change(&mut config);
    h.core = Core::new(Arc::new(config), h.metrics.clone());
    h
}

#[test]
fn the_client_address_quota_bounds_allocations_whatever_the_username() {
    // Under `serve` every join mints a new username: only a quota per address bounds one client.
    let mut h = reconfigured(harness(false, 10), |c| c.client_quota = 3);
    for (port, (user, pass)) in [
        (40000, ("u", "p")),
        (40001, ("v", "q")),
        (40002, ("u", "p")),
    ] {
        h.client.client.set_port(port);
        let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], user, pass);
        assert_eq!(r.class, Class::Success, "{r:?}");
    }
    h.client.client.set_port(40003);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "v", "q");
    assert_eq!(r.code, Some(486), "{r:?}");
    // Another address is not affected.
    h.client.client = "192.0.2.11:40000".parse().expect("addr");
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "v", "q");
    assert_eq!(r.class, Class::Success, "{r:?}");
    let text = {
        let mut s = String::new();
        h.metrics.encode_prometheus(&mut s);
        s
    };
    assert!(
        text.contains("peercall_turn_quota_refused_total{quota=\"client_address\"} 1"),
        "{text}"
    );
}

#[test]
fn reservations_count_against_the_quotas_until_claimed_or_expired() {
    let mut h = reconfigured(harness(false, 4), |c| c.unauth_rate_per_sec = 0);
    // Allocate(EVEN-PORT R=1) then Refresh(0), again and again: each cycle leaves a reserved socket behind.
    let mut tokens = 0;
    let mut refused = 0;
    for i in 0..20u16 {
        h.client.client.set_port(40000 + i);
        let reply = h.even_port_allocate("u", "p");
        let msg = Message::parse(&reply).expect("valid");
        if msg.class() == Class::Error {
            refused += 1;
            continue;
        }
        if matches!(
            msg.decode_any(attr::RESERVATION_TOKEN),
            Some(Ok(A::ReservationToken(_)))
        ) {
            tokens += 1;
        }
        let r = h.authed(Method::REFRESH, &[A::Lifetime(0)], "u", "p");
        assert_eq!(r.class, Class::Success, "{r:?}");
    }
    // Quota 4: each cycle leaves one place taken; the 4th needs 2 places with 3 taken.
    assert_eq!(tokens, 3, "reservations held within the user quota");
    assert_eq!(refused, 17);
    assert_eq!(h.ledger.reservations(), 3);
    // The reservations count like allocations: one place is left ...
    h.client.client.set_port(41000);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.class, Class::Success, "{r:?}");
    h.client.client.set_port(41002);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.code, Some(486), "{r:?}");
    // ... and can again once they expire.
    h.timeout(h.now.instant + RESERVATION_LIFETIME + Duration::from_secs(1));
    assert_eq!(h.ledger.reservations(), 0);
    h.client.client.set_port(41001);
    let r = h.authed(Method::ALLOCATE, &[A::RequestedTransport(17)], "u", "p");
    assert_eq!(r.class, Class::Success, "{r:?}");
}

#[test]
fn a_reservation_claimed_by_its_maker_costs_one_place_not_two() {
    let mut h = harness(false, 2);
    let reply = h.even_port_allocate("u", "p");
    let msg = Message::parse(&reply).expect("valid");
    let Some(Ok(A::ReservationToken(token))) = msg.decode_any(attr::RESERVATION_TOKEN) else {
        panic!("no token: {msg:?}")
    };
    h.client.client.set_port(40001);
    let r = h.authed(
        Method::ALLOCATE,
        &[A::RequestedTransport(17), A::ReservationToken(token)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(h.ledger.allocations(), 2);
}

#[test]
fn permissions_and_channels_are_capped_per_allocation() {
    // max_permissions 8, max_channels 4; every request fetches a nonce first, so no unauthenticated limit.
    let mut h = reconfigured(harness(true, 10), |c| c.unauth_rate_per_sec = 0);
    h.allocate();
    let peer = |i: u8| SocketAddr::from(([127, 0, 0, i], 9000));
    for i in 1..=8 {
        let r = h.authed(
            Method::CREATE_PERMISSION,
            &[A::XorPeerAddress(peer(i))],
            "u",
            "p",
        );
        assert_eq!(r.class, Class::Success, "{r:?}");
    }
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer(9))],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(508), "past the cap: {r:?}");
    // Refreshing a permission that exists is not a new one.
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer(8))],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    for i in 1..=4u8 {
        let r = h.authed(
            Method::CHANNEL_BIND,
            &[
                A::ChannelNumber(0x4000 + u16::from(i)),
                A::XorPeerAddress(peer(i)),
            ],
            "u",
            "p",
        );
        assert_eq!(r.class, Class::Success, "{r:?}");
    }
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4005), A::XorPeerAddress(peer(5))],
        "u",
        "p",
    );
    assert_eq!(r.code, Some(508), "past the channel cap: {r:?}");
    // Rebinding (refreshing) a bound channel is allowed.
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4001), A::XorPeerAddress(peer(1))],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    // After expiry the places are free again, and an expired channel's peer may take a new number.
    let r = h.authed(Method::REFRESH, &[A::Lifetime(3600)], "u", "p");
    assert_eq!(r.class, Class::Success, "{r:?}");
    let later = h.now.instant + CHANNEL_LIFETIME + Duration::from_secs(1);
    h.timeout(later);
    h.now.instant = later;
    h.now.unix += CHANNEL_LIFETIME.as_secs() + 1;
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4009), A::XorPeerAddress(peer(1))],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(h.metrics.channels.get(), 1);
}

#[test]
fn poll_timeout_names_the_next_expiry_so_the_driver_can_sleep_until_then() {
    let mut h = harness(true, 10);
    assert_eq!(
        h.core.poll_timeout(),
        None,
        "nothing held, nothing to wake for"
    );
    h.allocate();
    let t0 = h.now.instant;
    assert_eq!(h.core.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    let peer: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    assert_eq!(h.core.poll_timeout(), Some(t0 + PERMISSION_LIFETIME));
    h.timeout(t0 + PERMISSION_LIFETIME);
    assert_eq!(
        h.metrics.permissions.get(),
        0,
        "the permission expired on time"
    );
    assert_eq!(h.core.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    h.timeout(t0 + Duration::from_secs(600));
    assert_eq!(
        (h.core.allocation_count(), h.core.poll_timeout()),
        (0, None)
    );
}

#[test]
fn refusals_carry_their_rfc_code_and_phrase_on_the_wire() {
    let mut h = harness(false, 10);
    let r = h.authed(Method::REFRESH, &[], "u", "p");
    assert_eq!(r.code, Some(437));
    let msg = {
        let nonce = h.nonce();
        let key = long_term_key_md5("u", REALM, "p");
        let req = request(
            Method::REFRESH,
            &[A::Username("u"), A::Realm(REALM), A::Nonce(&nonce)],
            Some(&key),
        );
        let Action::Reply(n) = h.handle(&req) else {
            panic!("an answer")
        };
        h.out[..n].to_vec()
    };
    let parsed = Message::parse(&msg).expect("valid");
    let Some(Ok(A::ErrorCode { code, reason })) = parsed.decode_any(attr::ERROR_CODE) else {
        panic!("ERROR-CODE")
    };
    assert_eq!((code, reason), (437, "Allocation Mismatch"));
    assert!(
        parsed
            .verify_integrity(&long_term_key_md5("u", REALM, "p"))
            .is_ok(),
        "signed"
    );
}

impl Harness {
    /// An authenticated Allocate with `attrs`, stopped where the driver must bind: what the core asks for.
    fn allocate_asks(&mut self, attrs: &[A<'_>]) -> RelayRequest {
        let nonce = self.nonce();
        let key = long_term_key_md5("u", REALM, "p");
        let mut all = attrs.to_vec();
        all.extend([A::Username("u"), A::Realm(REALM), A::Nonce(&nonce)]);
        let req = request(Method::ALLOCATE, &all, Some(&key));
        match self
            .core
            .handle_client(self.now, self.client, &req, &mut self.out, &self.ledger)
        {
            Action::Bind(request) => request,
            other => panic!("expected Bind, got {other:?}"),
        }
    }

    /// The answer to the waiting Allocate, given what the driver bound.
    fn bound(&mut self, bound: Bound) -> Option<Resp> {
        match self
            .core
            .handle_bound(self.now, bound, &mut self.out, &self.ledger)
        {
            Action::Reply(n) => Some(resp(&self.out[..n])),
            _ => None,
        }
    }
}

/// The parts of a response a test looks at (as `Harness::send` reads them).
fn resp(reply: &[u8]) -> Resp {
    let msg = Message::parse(reply).expect("server writes valid STUN");
    Resp {
        class: msg.class(),
        code: match msg.decode_any(attr::ERROR_CODE) {
            Some(Ok(A::ErrorCode { code, .. })) => Some(code),
            _ => None,
        },
        nonce: None,
        relayed: match msg.decode_any(attr::XOR_RELAYED_ADDRESS) {
            Some(Ok(A::XorRelayedAddress(a))) => Some(a),
            _ => None,
        },
        relayed_all: Vec::new(),
        address_error: None,
        lifetime: None,
    }
}

#[test]
fn an_allocate_asks_the_driver_for_exactly_the_sockets_it_needs() {
    let mut h = dual_harness();
    let ask = |v4, v6, even, reserve_next| RelayRequest::Fresh {
        v4,
        v6,
        even,
        reserve_next,
    };
    let cases: [(&[A<'_>], RelayRequest); 4] = [
        (&[], ask(true, false, false, false)),
        (
            &[A::RequestedAddressFamily(Family::V6)],
            ask(false, true, false, false),
        ),
        (&[DUAL, A::EvenPort(false)], ask(true, true, true, false)),
        (&[A::EvenPort(true)], ask(true, false, true, true)),
    ];
    for (i, (extra, expected)) in cases.into_iter().enumerate() {
        h.client.client.set_port(40000 + i as u16);
        let mut attrs = vec![A::RequestedTransport(17)];
        attrs.extend_from_slice(extra);
        assert_eq!(h.allocate_asks(&attrs), expected, "{extra:?}");
        let bound = h.ports.satisfy(expected);
        let r = h.bound(bound).expect("answered");
        assert_eq!(r.class, Class::Success, "{extra:?}: {r:?}");
    }
    assert_eq!(
        h.released(),
        Vec::<SocketAddr>::new(),
        "everything bound is used"
    );
    assert_eq!(h.core.allocation_count(), 4);
}

#[test]
fn sockets_bound_but_not_taken_are_handed_back_to_the_driver() {
    let mut h = harness(true, 10);
    let request = h.allocate_asks(&[A::RequestedTransport(17)]);
    assert!(matches!(
        request,
        RelayRequest::Fresh {
            v4: true,
            v6: false,
            reserve_next: false,
            ..
        }
    ));
    // A driver that bound more than asked (an IPv6 address, a reserved port): the allocation keeps its
    // IPv4 address, the rest must be closed.
    let v4: SocketAddr = "127.0.0.1:50002".parse().expect("addr");
    let v6: SocketAddr = "[::1]:50002".parse().expect("addr");
    let next: SocketAddr = "127.0.0.1:50003".parse().expect("addr");
    let r = h
        .bound(Bound {
            relays: [Some(v4), Some(v6)],
            reserved: Some(next),
        })
        .expect("answered");
    assert_eq!((r.class, r.relayed), (Class::Success, Some(v4)), "{r:?}");
    let mut released = h.released();
    released.sort();
    assert_eq!(released, vec![next, v6]);
    assert!(h.ledger.is_relay(v4) && !h.ledger.is_relay(v6));
    assert_eq!(h.ledger.reservations(), 0);
    // Sockets reported when no Allocate waits are handed back at once.
    assert_eq!(
        h.core.handle_bound(
            h.now,
            Bound {
                relays: [Some(next), None],
                reserved: None
            },
            &mut h.out,
            &h.ledger
        ),
        Action::Drop
    );
    assert_eq!(h.released(), vec![next]);
}

#[test]
fn an_allocate_without_sockets_is_refused_and_gives_its_admission_back() {
    let mut h = harness(true, 10);
    // No port free: 508, nothing counted.
    h.allocate_asks(&[A::RequestedTransport(17), A::EvenPort(true)]);
    let r = h.bound(Bound::default()).expect("answered");
    assert_eq!(r.code, Some(508), "{r:?}");
    assert_eq!((h.ledger.allocations(), h.core.allocation_count()), (0, 0));
    // The port after an EVEN-PORT R=1 allocation is taken: the allocation without a reservation.
    let relay: SocketAddr = "127.0.0.1:50010".parse().expect("addr");
    h.allocate_asks(&[A::RequestedTransport(17), A::EvenPort(true)]);
    let reply = match h.core.handle_bound(
        h.now,
        Bound {
            relays: [Some(relay), None],
            reserved: None,
        },
        &mut h.out,
        &h.ledger,
    ) {
        Action::Reply(n) => h.out[..n].to_vec(),
        other => panic!("expected a reply, got {other:?}"),
    };
    let msg = Message::parse(&reply).expect("valid");
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.decode_any(attr::RESERVATION_TOKEN), None);
    assert_eq!((h.ledger.allocations(), h.ledger.reservations()), (1, 0));
    // An Allocate whose sockets are never reported (the driver went on with the next packet) does not keep
    // its admission.
    h.client.client.set_port(40001);
    h.allocate_asks(&[A::RequestedTransport(17)]);
    assert_eq!(h.ledger.allocations(), 2);
    h.send(&request(Method::BINDING, &[], None))
        .expect("Binding answered");
    assert_eq!(h.ledger.allocations(), 1);
}

#[test]
fn a_reservation_whose_socket_is_gone_is_refused_and_frees_its_place() {
    let mut h = harness(false, 10);
    let reply = h.even_port_allocate("u", "p");
    let msg = Message::parse(&reply).expect("valid");
    let Some(Ok(A::ReservationToken(token))) = msg.decode_any(attr::RESERVATION_TOKEN) else {
        panic!("no token")
    };
    assert_eq!(
        h.ledger.allocations(),
        2,
        "the allocation and its reservation"
    );
    h.client.client.set_port(40001);
    let RelayRequest::Reserved(addr) =
        h.allocate_asks(&[A::RequestedTransport(17), A::ReservationToken(token)])
    else {
        panic!("expected the reserved socket to be asked for")
    };
    let Some(Ok(A::XorRelayedAddress(first))) = msg.decode_any(attr::XOR_RELAYED_ADDRESS) else {
        panic!("no relay")
    };
    assert_eq!(addr.port(), first.port() + 1);
    let r = h.bound(Bound::default()).expect("answered");
    assert_eq!(r.code, Some(508), "{r:?}");
    assert_eq!((h.ledger.allocations(), h.ledger.reservations()), (1, 0));
}

#[test]
fn relays_are_advertised_through_their_external_mapping() {
    let relay: SocketAddr = "10.0.0.5:50000".parse().expect("addr");
    let v6: SocketAddr = "[2001:db8::5]:50000".parse().expect("addr");
    let public_only: Vec<ExternalIp> = vec!["203.0.113.7".parse().expect("ip")];
    assert_eq!(
        advertise(&public_only, relay),
        "203.0.113.7:50000".parse().expect("addr")
    );
    assert_eq!(
        advertise(&public_only, v6),
        v6,
        "an IPv4 mapping says nothing of IPv6"
    );
    let pair: Vec<ExternalIp> = vec!["203.0.113.7/10.0.0.9".parse().expect("ip")];
    assert_eq!(
        advertise(&pair, relay),
        relay,
        "mapped only from its private half"
    );
    assert_eq!(advertise(&[], relay), relay);
    // On the wire: XOR-RELAYED-ADDRESS names the public address, the relay itself serves the private one.
    let mut h = reconfigured(harness(true, 10), |c| {
        c.external_ip = vec!["203.0.113.7".parse().expect("ip")]
    });
    let advertised = h.allocate();
    assert_eq!(
        advertised.ip(),
        "203.0.113.7".parse::<IpAddr>().expect("ip")
    );
    let served = h.core.relay_of(&h.client).expect("an allocation");
    assert_eq!(
        served,
        SocketAddr::new(V4_RELAY_IP.parse().expect("ip"), advertised.port())
    );
}

#[test]
fn peer_data_is_framed_where_it_lies_without_moving_the_payload() {
    let mut h = harness(true, 10);
    let relay = h.allocate();
    let channel_peer: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    let other_peer: SocketAddr = "127.0.0.2:9999".parse().expect("addr");
    let r = h.authed(
        Method::CHANNEL_BIND,
        &[A::ChannelNumber(0x4001), A::XorPeerAddress(channel_peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(other_peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success, "{r:?}");
    // As the driver reads a datagram: the payload at PEER_HEADROOM, PEER_TAILROOM behind it.
    let payload = PEER_HEADROOM..PEER_HEADROOM + 5;
    let fresh = || {
        let mut buf = vec![0xEEu8; PEER_HEADROOM + 5 + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"hello");
        buf
    };
    let mut buf = fresh();
    let PeerAction::ChannelData { frame, .. } =
        h.core
            .handle_peer(h.now, relay, channel_peer, &mut buf, payload.clone())
    else {
        panic!("expected ChannelData")
    };
    assert_eq!(frame, PEER_HEADROOM - 4..PEER_HEADROOM + 5);
    assert_eq!(&buf[frame], b"\x40\x01\x00\x05hello");
    let mut buf = fresh();
    let PeerAction::DataIndication { frame, .. } =
        h.core
            .handle_peer(h.now, relay, other_peer, &mut buf, payload.clone())
    else {
        panic!("expected a Data indication")
    };
    let header = peercall_stun::data_indication_payload_offset(Family::V4);
    assert_eq!(
        frame,
        PEER_HEADROOM - header..PEER_HEADROOM + 8,
        "padded to 4"
    );
    assert_eq!(&buf[payload.clone()], b"hello", "the payload did not move");
    let msg = Message::parse(&buf[frame]).expect("valid");
    assert_eq!(msg.decode_any(attr::DATA), Some(Ok(A::Data(b"hello"))));
    // A buffer that cannot hold the frame drops the datagram instead of writing past it.
    let mut short = b"hello".to_vec();
    assert_eq!(
        h.core
            .handle_peer(h.now, relay, other_peer, &mut short, 0..5),
        PeerAction::Drop
    );
}
