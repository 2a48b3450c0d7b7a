//! Deterministic tests of the room logic.

use super::*;

fn config() -> RoomsConfig {
    RoomsConfig {
        max_message_bytes: 1024,
        max_messages_per_sec: 50,
        max_connections_per_ip: 3,
        max_rooms: 2,
        max_peers_per_room: 3,
        require_room_password: false,
        join_token_secret: None,
        resume_grace: Duration::from_secs(20),
        max_errors_in_row: 5,
        public_host: None,
        turn: Some(TurnAdvert { secret: "s".into(), port: 3478, tls_port: None, credential_ttl: Duration::from_secs(3600) }),
    }
}

struct H {
    rooms: Rooms,
    now: Now,
    out: Vec<Out>,
}

impl H {
    fn new(config: RoomsConfig) -> H {
        H { rooms: Rooms::new(config, [1; 32]), now: Now { instant: Instant::now(), unix: 1_700_000_000 }, out: Vec::new() }
    }
    fn connect(&mut self, conn: ConnId) {
        self.rooms.connect(self.now, conn, "192.0.2.1".parse().expect("ip"), "example.com:8080", &mut self.out);
    }
    fn text(&mut self, conn: ConnId, t: &str) -> Vec<Out> {
        self.out.clear();
        self.rooms.handle_text(self.now, conn, t, &mut self.out);
        std::mem::take(&mut self.out)
    }
    fn join(&mut self, conn: ConnId, room: &str, name: &str) -> (String, String) {
        self.connect(conn);
        let out = self.text(conn, &format!(r#"{{"v":1,"type":"join","room":"{room}","name":"{name}"}}"#));
        for o in out {
            if let Out::Send(c, ServerMessage::Welcome { id, resume, .. }) = o {
                assert_eq!(c, conn);
                return (id, resume);
            }
        }
        panic!("no welcome for {name}");
    }
}

fn error_code(out: &[Out], conn: ConnId) -> Option<ErrorCode> {
    out.iter().find_map(|o| match o {
        Out::Send(c, ServerMessage::Error { code, .. }) if *c == conn => Some(*code),
        _ => None,
    })
}

#[test]
fn join_presence_and_forwarding_with_stamped_from() {
    let mut h = H::new(config());
    let (a, _) = h.join(1, "room1", "Ann");
    h.out.clear();
    h.connect(2);
    let out = h.text(2, r#"{"v":1,"type":"join","room":"room1","name":"Bob"}"#);
    let b = out
        .iter()
        .find_map(|o| match o {
            Out::Send(2, ServerMessage::Welcome { id, peers, ice_servers, .. }) => {
                assert_eq!(peers, &vec![PeerInfo { id: a.clone(), name: "Ann".into() }]);
                assert_eq!(ice_servers[0].urls, vec!["stun:example.com:3478".to_owned()]);
                let user = ice_servers[1].username.clone().expect("username");
                assert_eq!(ice_servers[1].credential.clone().expect("credential"), rest_credential(b"s", &user));
                Some(id.clone())
            }
            _ => None,
        })
        .expect("welcome");
    assert!(out.contains(&Out::Send(1, ServerMessage::PeerJoined { peer: PeerInfo { id: b.clone(), name: "Bob".into() } })));
    // A forged `from` is ignored: the server stamps the sender's id.
    let out = h.text(2, &format!(r#"{{"type":"offer","to":"{a}","sdp":"v=0","from":"{a}"}}"#));
    assert_eq!(out, vec![Out::Send(1, ServerMessage::Offer { from: b.clone(), sdp: "v=0".into() })]);
}

#[test]
fn foreign_room_peer_is_unreachable_and_others_notice_nothing() {
    let mut h = H::new(config());
    let (_a, _) = h.join(1, "r1", "A");
    let (c, _) = h.join(3, "r2", "C");
    let out = h.text(1, &format!(r#"{{"type":"message","to":"{c}","data":"hi"}}"#));
    assert_eq!(out.len(), 1);
    assert_eq!(error_code(&out, 1), Some(ErrorCode::UnknownPeer));
    for bad in ["{", "[]", r#"{"type":"x"}"#, r#"{"type":"offer"}"#] {
        let out = h.text(1, bad);
        assert!(out.iter().all(|o| matches!(o, Out::Send(1, _) | Out::Close(1))), "only the sender hears about {bad}");
    }
    let big = format!(r#"{{"type":"message","to":"{c}","data":"{}"}}"#, "x".repeat(2000));
    let out = h.text(1, &big);
    assert_eq!(error_code(&out, 1), Some(ErrorCode::TooLarge), "{out:?}");
}

#[test]
fn repeated_abuse_closes_the_connection() {
    let mut h = H::new(config());
    h.join(1, "r1", "A");
    let mut closed = false;
    for _ in 0..5 {
        closed |= h.text(1, "garbage").contains(&Out::Close(1));
    }
    assert!(closed);
}

#[test]
fn room_capacity_password_and_limits() {
    let mut h = H::new(config());
    h.connect(1);
    h.text(1, r#"{"v":1,"type":"join","room":"r","name":"A","password":"pw"}"#);
    h.connect(2);
    let out = h.text(2, r#"{"v":1,"type":"join","room":"r","name":"B","password":"nope"}"#);
    assert_eq!(error_code(&out, 2), Some(ErrorCode::WrongPassword));
    assert!(out.contains(&Out::Close(2)));
    for conn in [4, 5] {
        h.rooms.connect(h.now, conn, "192.0.2.9".parse().expect("ip"), "h", &mut h.out);
        h.text(conn, r#"{"v":1,"type":"join","room":"r","name":"X","password":"pw"}"#);
    }
    h.rooms.connect(h.now, 6, "192.0.2.9".parse().expect("ip"), "h", &mut h.out);
    let out = h.text(6, r#"{"v":1,"type":"join","room":"r","name":"Y","password":"pw"}"#);
    assert_eq!(error_code(&out, 6), Some(ErrorCode::RoomFull));
    // Per-IP limit of 3: the fourth connection from 192.0.2.9 is refused.
    h.out.clear();
    h.rooms.connect(h.now, 7, "192.0.2.9".parse().expect("ip"), "h", &mut h.out);
    assert_eq!(error_code(&h.out, 7), Some(ErrorCode::TooManyConnections));
}

#[test]
fn resume_keeps_id_silently_and_grace_expiry_announces_leave() {
    let mut h = H::new(config());
    let (a, resume) = h.join(1, "r", "A");
    let (_b, _) = h.join(2, "r", "B");
    h.out.clear();
    h.rooms.disconnected(h.now, 1, &mut h.out);
    assert!(h.out.is_empty(), "nobody sees a disconnect within the grace period");
    h.connect(9);
    let out = h.text(9, &format!(r#"{{"v":1,"type":"join","room":"r","name":"A","resume":"{resume}"}}"#));
    assert!(matches!(&out[..], [Out::Send(9, ServerMessage::Welcome { id, resumed: true, .. })] if *id == a), "{out:?}");
    // Now really gone: after the grace period the others hear about it.
    h.rooms.disconnected(h.now, 9, &mut h.out);
    h.out.clear();
    h.now.instant += Duration::from_secs(21);
    h.rooms.handle_timeout(h.now, &mut h.out);
    assert_eq!(h.out, vec![Out::Send(2, ServerMessage::PeerLeft { id: a })]);
}

#[test]
fn join_tokens() {
    let mut cfg = config();
    cfg.join_token_secret = Some("k".into());
    let mut h = H::new(cfg);
    h.connect(1);
    let out = h.text(1, r#"{"v":1,"type":"join","room":"r","name":"A"}"#);
    assert_eq!(error_code(&out, 1), Some(ErrorCode::BadToken));
    let token = make_join_token(b"k", "r", "Token Name", h.now.unix + 60);
    h.connect(2);
    let out = h.text(2, &format!(r#"{{"v":1,"type":"join","room":"r","name":"A","token":"{token}"}}"#));
    assert!(matches!(&out[..], [Out::Send(2, ServerMessage::Welcome { .. })]), "{out:?}");
    let other_room = make_join_token(b"k", "other", "N", h.now.unix + 60);
    h.connect(3);
    let out = h.text(3, &format!(r#"{{"v":1,"type":"join","room":"r","name":"A","token":"{other_room}"}}"#));
    assert_eq!(error_code(&out, 3), Some(ErrorCode::BadToken));
}

#[test]
fn host_only_strips_ports() {
    assert_eq!(host_only("example.com:8080"), "example.com");
    assert_eq!(host_only("[::1]:8080"), "[::1]");
    assert_eq!(host_only("127.0.0.1"), "127.0.0.1");
}
