//! Deterministic tests of the core: no sockets, no clock.

use super::*;
use peercall_stun::{Attribute as A, long_term_key_md5};

struct FakePorts {
    next: u16,
    ip: IpAddr,
}

impl RelayPorts for FakePorts {
    fn bind(&mut self, family: Family, even: bool) -> Option<SocketAddr> {
        if family != Family::of(self.ip) {
            return None;
        }
        self.next += if even { 2 - self.next % 2 } else { 1 };
        Some(SocketAddr::new(self.ip, self.next))
    }

    fn bind_at(&mut self, addr: SocketAddr) -> bool {
        self.next = self.next.max(addr.port());
        true
    }
}

struct Harness {
    core: Core,
    ports: FakePorts,
    now: Now,
    client: FiveTuple,
    out: Vec<u8>,
    metrics: Arc<TurnMetrics>,
}

const REALM: &str = "test";

fn harness(allow_loopback: bool, user_quota: u32) -> Harness {
    let metrics = Arc::new(TurnMetrics::default());
    let config = CoreConfig {
        realm: REALM.into(),
        users: vec![("u".into(), "p".into()), ("v".into(), "q".into())],
        auth_secrets: vec!["secret".into()],
        policy: PeerPolicy::new(&[], &[], allow_loopback),
        user_quota,
        total_quota: 100,
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(3600),
        unauth_rate_per_sec: 5,
        software: None,
        nonce_key: [7; 32],
    };
    Harness {
        core: Core::new(Arc::new(config), metrics.clone()),
        ports: FakePorts {
            next: 50000,
            ip: "127.0.0.1".parse().expect("ip"),
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
    lifetime: Option<u32>,
}

impl Harness {
    fn send(&mut self, packet: &[u8]) -> Option<Resp> {
        let action = self.core.handle_client(
            self.now,
            self.client,
            packet,
            &mut self.out,
            &mut self.ports,
        );
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
    let action = h
        .core
        .handle_client(h.now, h.client, &req, &mut h.out, &mut h.ports);
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
    assert_eq!(h.core.ledger.users(), 0);
    assert_eq!(h.core.ledger.allocations(), 0);
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
    assert_eq!(h.core.take_released().len(), 1);
}

#[test]
fn allocation_expires() {
    let mut h = harness(false, 10);
    h.allocate();
    h.core
        .handle_timeout(h.now.instant + Duration::from_secs(599));
    assert_eq!(h.core.allocation_count(), 1);
    h.core
        .handle_timeout(h.now.instant + Duration::from_secs(601));
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
    let mut out = vec![0u8; 256];
    assert_eq!(
        h.core
            .handle_peer(h.now, relay, peer, &mut buf, 4, &mut out),
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
    match h
        .core
        .handle_peer(h.now, relay, peer, &mut buf, 4, &mut out)
    {
        PeerAction::ChannelData { to, n } => {
            assert_eq!(to, h.client);
            assert_eq!(&buf[..n], &[0x40, 0x01, 0, 4, b'p', b'i', b'n', b'g']);
        }
        other => panic!("expected ChannelData, got {other:?}"),
    }
    // Client → peer over the channel.
    let frame = [0x40, 0x01, 0, 3, b'a', b'b', b'c', 0];
    let action = h
        .core
        .handle_client(h.now, h.client, &frame[..7], &mut h.out, &mut h.ports);
    assert_eq!(
        action,
        Action::ToPeer {
            relay,
            peer,
            data: b"abc"
        }
    );
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
    h.core
        .handle_timeout(h.now.instant + Duration::from_secs(301));
    let later = Now {
        instant: h.now.instant + Duration::from_secs(301),
        unix: h.now.unix + 301,
    };
    assert_eq!(
        h.core
            .handle_peer(later, relay, peer, &mut buf, 4, &mut out),
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
    let action = h
        .core
        .handle_client(h.now, h.client, &send, &mut h.out, &mut h.ports);
    assert_eq!(action, Action::Nothing, "no permission yet");
    let r = h.authed(
        Method::CREATE_PERMISSION,
        &[A::XorPeerAddress(peer)],
        "u",
        "p",
    );
    assert_eq!(r.class, Class::Success);
    let action = h
        .core
        .handle_client(h.now, h.client, &send, &mut h.out, &mut h.ports);
    assert_eq!(
        action,
        Action::ToPeer {
            relay,
            peer,
            data: b"hello"
        }
    );
    let mut buf = vec![0u8; 64];
    buf[4..9].copy_from_slice(b"world");
    let mut out = vec![0u8; 256];
    let PeerAction::DataIndication { n, .. } = h
        .core
        .handle_peer(h.now, relay, peer, &mut buf, 5, &mut out)
    else {
        panic!("expected a Data indication");
    };
    let msg = Message::parse(&out[..n]).expect("valid");
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
    let nonce = h.nonce();
    let key = long_term_key_md5("u", REALM, "p");
    let req = request(
        Method::ALLOCATE,
        &[
            A::RequestedTransport(17),
            A::EvenPort(true),
            A::Username("u"),
            A::Realm(REALM),
            A::Nonce(&nonce),
        ],
        Some(&key),
    );
    let action = h
        .core
        .handle_client(h.now, h.client, &req, &mut h.out, &mut h.ports);
    let Action::Reply(n) = action else {
        panic!("expected a reply")
    };
    let msg = Message::parse(&h.out[..n]).expect("valid");
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
    other.core = Core::with_ledger(
        h.core.config.clone(),
        h.metrics.clone(),
        h.core.ledger.clone(),
    );
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
    let nonce = c.nonce();
    let key = long_term_key_md5("v", REALM, "q");
    let req = request(
        Method::ALLOCATE,
        &[
            A::RequestedTransport(17),
            A::EvenPort(true),
            A::Username("v"),
            A::Realm(REALM),
            A::Nonce(&nonce),
        ],
        Some(&key),
    );
    let Action::Reply(n) = c
        .core
        .handle_client(c.now, c.client, &req, &mut c.out, &mut c.ports)
    else {
        panic!("expected a reply")
    };
    let msg = Message::parse(&c.out[..n]).expect("valid");
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
    assert_eq!(a.core.ledger.allocations(), 4);
    // Deleting an allocation on one core frees quota for the user on the other.
    a.client.client.set_port(40000);
    let r = a.authed(Method::REFRESH, &[A::Lifetime(0)], "u", "p");
    assert_eq!(r.class, Class::Success, "{r:?}");
    b.client.client.set_port(41001);
    assert_eq!(b.allocate().ip(), relay_a.ip());
}
