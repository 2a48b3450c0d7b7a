//! Deterministic tests of the room core: fixed seed, injected time, outputs inspected as JSON.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ConnId, ConnInfo, Output, Rooms, close_code};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, parse_client};
use crate::token::{JoinClaims, mint_join_token};
use crate::{SignalConfig, TurnAdvert};

const T0_UNIX: u64 = 1_767_225_600;

struct H {
    rooms: Rooms,
    now: Instant,
    metrics: Arc<Metrics>,
    /// Outputs of the last `join` other than the welcome.
    rest: Vec<O>,
    /// The last welcome.
    welcome: Value,
}

/// One output, as JSON for sends.
#[derive(Debug, Clone, PartialEq)]
enum O {
    Send(ConnId, Value),
    Close(ConnId, u16),
}

impl H {
    fn new(config: SignalConfig) -> H {
        let metrics = Arc::new(Metrics::default());
        let now = Instant::now();
        H {
            rooms: Rooms::new(config, metrics.clone(), [7; 32], now, T0_UNIX),
            now,
            metrics,
            rest: Vec::new(),
            welcome: Value::Null,
        }
    }

    fn open_from(&mut self, ip: &str) -> ConnId {
        let ip: IpAddr = ip.parse().expect("test IP");
        self.rooms.open(
            self.now,
            ConnInfo {
                ip: Some(ip),
                host: Some("localhost".into()),
            },
        )
    }

    fn open(&mut self) -> ConnId {
        self.open_from("127.0.0.1")
    }

    fn send(&mut self, conn: ConnId, frame: &str) -> Result<(), ErrorCode> {
        let msg =
            parse_client(frame.as_bytes()).unwrap_or_else(|e| panic!("test frame {frame}: {e}"));
        self.rooms.handle_message(self.now, conn, msg)
    }

    fn out(&mut self) -> Vec<O> {
        let mut v = Vec::new();
        while let Some(o) = self.rooms.poll_output() {
            v.push(match o {
                Output::Send { conn, msg } => O::Send(
                    conn,
                    serde_json::from_str(&msg.to_json()).expect("server JSON"),
                ),
                Output::Close { conn, code, .. } => O::Close(conn, code),
                Output::Cluster(req) => panic!("a core without a cluster asked the store: {req:?}"),
            });
        }
        v
    }

    /// Joins and returns (peer id, resume token), asserting the welcome.
    fn join(&mut self, conn: ConnId, room: &str, name: &str) -> (String, String) {
        let frame = json!({"type":"join","v":1,"room":room,"name":name}).to_string();
        self.join_with(conn, &frame)
    }

    fn join_with(&mut self, conn: ConnId, frame: &str) -> (String, String) {
        assert_eq!(self.send(conn, frame), Ok(()), "join {frame}");
        let out = self.out();
        let welcome = out
            .iter()
            .find_map(|o| match o {
                O::Send(c, v) if *c == conn && v["type"] == "welcome" => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no welcome for {frame}: {out:?}"));
        self.rest = out
            .into_iter()
            .filter(|o| !matches!(o, O::Send(c, v) if *c == conn && v["type"] == "welcome"))
            .collect();
        self.welcome = welcome.clone();
        (str_of(&welcome["id"]), str_of(&welcome["resume"]))
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.rooms.handle_timeout(self.now);
    }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn error_code(out: &[O], conn: ConnId) -> Option<String> {
    out.iter().find_map(|o| match o {
        O::Send(c, v) if *c == conn && v["type"] == "error" => Some(str_of(&v["code"])),
        _ => None,
    })
}

fn cfg() -> SignalConfig {
    SignalConfig::default()
}

#[test]
fn join_welcome_and_presence() {
    let mut h = H::new(cfg());
    let a = h.open();
    let (ida, resume_a) = h.join(a, "standup", "Ann");
    assert_eq!(h.welcome["peers"], json!([]));
    assert_eq!(h.welcome["resumed"], json!(false));
    assert_eq!(h.welcome["room"], json!("standup"));
    assert_eq!(h.welcome["polite"], json!("lower-id"));
    assert_eq!(h.welcome["iceServers"], json!([]), "no TURN configured");
    assert!(resume_a.len() >= 22, "resume token has at least 128 bits");
    assert!(h.rest.is_empty());

    let b = h.open();
    let (idb, _) = h.join(b, "standup", "Bob");
    assert_ne!(ida, idb);
    assert_eq!(h.welcome["peers"], json!([{"id": ida, "name": "Ann"}]));
    assert_eq!(
        h.rest,
        vec![O::Send(
            a,
            json!({"v":1,"type":"peer-joined","peer":{"id": idb, "name":"Bob"}})
        )]
    );
    assert_eq!(h.rooms.stats().peers, 2);
    assert_eq!(h.rooms.stats().rooms, 1);
    assert_eq!(h.rooms.stats().connections, 2);
}

#[test]
fn forwarding_stamps_from_and_ignores_a_forged_one() {
    let mut h = H::new(cfg());
    let (a, b) = (h.open(), h.open());
    let (ida, _) = h.join(a, "r", "Ann");
    let (idb, _) = h.join(b, "r", "Bob");
    h.out();
    let frame = json!({"type":"offer","to":idb,"from":"p-forged","sdp":"v=0\r\n"}).to_string();
    assert_eq!(h.send(a, &frame), Ok(()));
    assert_eq!(
        h.out(),
        vec![O::Send(
            b,
            json!({"v":1,"type":"offer","from":ida,"sdp":"v=0\r\n"})
        )]
    );

    let frame = json!({"type":"candidate","to":ida,"candidate":null}).to_string();
    assert_eq!(h.send(b, &frame), Ok(()));
    assert_eq!(
        h.out(),
        vec![O::Send(
            a,
            json!({"v":1,"type":"candidate","from":idb,"candidate":null})
        )]
    );

    let frame = json!({"type":"message","to":ida,"data":{"chat":"hi","n":[1,2]}}).to_string();
    assert_eq!(h.send(b, &frame), Ok(()));
    assert_eq!(
        h.out(),
        vec![O::Send(
            a,
            json!({"v":1,"type":"message","from":idb,"data":{"chat":"hi","n":[1,2]}})
        )]
    );
    assert_eq!(h.metrics.errors_of(ErrorCode::UnknownPeer), 0);
}

#[test]
fn unknown_or_foreign_targets_get_unknown_peer_only_to_the_sender() {
    let mut h = H::new(cfg());
    let (a, b, c) = (h.open(), h.open(), h.open());
    let (ida, _) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    let (idc, _) = h.join(c, "elsewhere", "Cid");
    h.out();
    for to in [idc.as_str(), "p-000000000000", ida.as_str()] {
        let frame = json!({"type":"answer","to":to,"sdp":"x"}).to_string();
        assert_eq!(h.send(a, &frame), Err(ErrorCode::UnknownPeer), "to {to}");
        let out = h.out();
        assert_eq!(out.len(), 1, "{out:?}");
        let O::Send(conn, v) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*conn, a);
        assert_eq!(v["code"], "unknown-peer");
        assert_eq!(v["ref"], "answer");
    }
    assert_eq!(h.metrics.errors_of(ErrorCode::UnknownPeer), 3);
}

#[test]
fn join_first_and_only_once() {
    let mut h = H::new(cfg());
    let a = h.open();
    assert_eq!(
        h.send(a, r#"{"type":"offer","to":"p-1","sdp":"x"}"#),
        Err(ErrorCode::NotJoined)
    );
    assert_eq!(error_code(&h.out(), a).as_deref(), Some("not-joined"));
    assert_eq!(
        h.send(a, r#"{"type":"rename","name":"x"}"#),
        Err(ErrorCode::NotJoined)
    );
    h.out();
    assert_eq!(
        h.send(a, r#"{"type":"ping"}"#),
        Ok(()),
        "ping works before join"
    );
    assert_eq!(h.out(), vec![O::Send(a, json!({"v":1,"type":"pong"}))]);
    h.join(a, "r", "Ann");
    assert_eq!(
        h.send(a, r#"{"type":"join","v":1,"room":"s","name":"x"}"#),
        Err(ErrorCode::AlreadyJoined)
    );
    let out = h.out();
    assert_eq!(error_code(&out, a).as_deref(), Some("already-joined"));
    assert!(
        !out.iter().any(|o| matches!(o, O::Close(..))),
        "not a closing error"
    );
}

#[test]
fn room_capacity_refuses_and_closes_the_extra_peer_only() {
    let mut h = H::new(SignalConfig {
        max_peers_per_room: 2,
        ..cfg()
    });
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.out();
    assert_eq!(
        h.send(c, r#"{"type":"join","v":1,"room":"r","name":"Cid"}"#),
        Err(ErrorCode::RoomFull)
    );
    let out = h.out();
    assert_eq!(error_code(&out, c).as_deref(), Some("room-full"));
    assert_eq!(out.last(), Some(&O::Close(c, close_code::POLICY)));
    assert_eq!(out.len(), 2, "nobody else hears about it: {out:?}");
    assert_eq!(h.rooms.stats().peers, 2);
    assert_eq!(
        h.rooms.stats().connections,
        2,
        "the refused connection is forgotten"
    );
    // Default capacity is 6.
    let mut h = H::new(cfg());
    for i in 0..6 {
        let c = h.open();
        h.join(c, "r", &format!("n{i}"));
    }
    let c = h.open();
    assert_eq!(
        h.send(c, r#"{"type":"join","v":1,"room":"r","name":"x"}"#),
        Err(ErrorCode::RoomFull)
    );
}

#[test]
fn password_set_by_the_first_joiner() {
    let mut h = H::new(cfg());
    let (a, b, c, d) = (h.open(), h.open(), h.open(), h.open());
    h.join_with(
        a,
        r#"{"type":"join","v":1,"room":"r","name":"Ann","password":"s3cret"}"#,
    );
    for (conn, frame) in [
        (b, r#"{"type":"join","v":1,"room":"r","name":"Bob"}"#),
        (
            c,
            r#"{"type":"join","v":1,"room":"r","name":"Bob","password":"S3cret"}"#,
        ),
    ] {
        assert_eq!(h.send(conn, frame), Err(ErrorCode::WrongPassword));
        let out = h.out();
        assert_eq!(error_code(&out, conn).as_deref(), Some("wrong-password"));
        assert_eq!(out.last(), Some(&O::Close(conn, close_code::POLICY)));
        assert!(out.iter().all(|o| !matches!(o, O::Send(x, _) if *x == a)));
    }
    h.join_with(
        d,
        r#"{"type":"join","v":1,"room":"r","name":"Dee","password":"s3cret"}"#,
    );
    // A room without password ignores one given later.
    let e = h.open();
    h.join(e, "open", "Eve");
    let f = h.open();
    h.join_with(
        f,
        r#"{"type":"join","v":1,"room":"open","name":"F","password":"x"}"#,
    );
}

#[test]
fn wrong_password_is_checked_before_capacity() {
    let mut h = H::new(SignalConfig {
        max_peers_per_room: 1,
        ..cfg()
    });
    let (a, b) = (h.open(), h.open());
    h.join_with(
        a,
        r#"{"type":"join","v":1,"room":"r","name":"Ann","password":"pw"}"#,
    );
    assert_eq!(
        h.send(
            b,
            r#"{"type":"join","v":1,"room":"r","name":"B","password":"no"}"#
        ),
        Err(ErrorCode::WrongPassword)
    );
}

#[test]
fn password_required_by_config() {
    let mut h = H::new(SignalConfig {
        require_room_password: true,
        ..cfg()
    });
    let (a, b) = (h.open(), h.open());
    assert_eq!(
        h.send(a, r#"{"type":"join","v":1,"room":"r","name":"Ann"}"#),
        Err(ErrorCode::WrongPassword)
    );
    assert_eq!(error_code(&h.out(), a).as_deref(), Some("wrong-password"));
    assert_eq!(h.rooms.stats().rooms, 0, "no room was created");
    h.join_with(
        b,
        r#"{"type":"join","v":1,"room":"r","name":"Bob","password":"pw"}"#,
    );
}

#[test]
fn join_tokens() {
    let secret = "embed-secret";
    let mut h = H::new(SignalConfig {
        join_token_secret: Some(secret.into()),
        ..cfg()
    });
    let token = |room: &str, name: Option<&str>, exp: u64| {
        mint_join_token(
            secret.as_bytes(),
            &JoinClaims {
                room: room.into(),
                exp,
                name: name.map(Into::into),
            },
        )
    };
    let frame =
        |tok: &str| json!({"type":"join","v":1,"room":"r","name":"Typed","token":tok}).to_string();
    let refused = [
        r#"{"type":"join","v":1,"room":"r","name":"Typed"}"#.to_owned(),
        frame(&token("other", None, T0_UNIX + 60)),
        frame(&token("r", None, T0_UNIX)), // expires at this very second
        frame(&mint_join_token(
            b"wrong-secret",
            &JoinClaims {
                room: "r".into(),
                exp: T0_UNIX + 60,
                name: None,
            },
        )),
        frame("garbage"),
    ];
    for f in &refused {
        let c = h.open();
        assert_eq!(h.send(c, f), Err(ErrorCode::BadToken), "{f}");
        let out = h.out();
        assert_eq!(error_code(&out, c).as_deref(), Some("bad-token"));
        assert_eq!(out.last(), Some(&O::Close(c, close_code::POLICY)));
    }
    assert_eq!(h.rooms.stats().rooms, 0);

    // A valid token with a name pins the name: join.name is replaced and rename refused.
    let a = h.open();
    let (ida, _) = h.join_with(a, &frame(&token("r", Some("Ann Official"), T0_UNIX + 60)));
    let b = h.open();
    h.join_with(b, &frame(&token("r", None, T0_UNIX + 60)));
    assert_eq!(
        h.welcome["peers"],
        json!([{"id": ida, "name": "Ann Official"}])
    );
    assert_eq!(
        h.send(a, r#"{"type":"rename","name":"Mallory"}"#),
        Err(ErrorCode::BadField)
    );
    assert_eq!(error_code(&h.out(), a).as_deref(), Some("bad-field"));
    // Without a name claim, the typed name is used and can change.
    assert_eq!(h.send(b, r#"{"type":"rename","name":"Bob"}"#), Ok(()));
    // Time moves on: the same token is refused once expired.
    h.advance(Duration::from_secs(61));
    let c = h.open();
    assert_eq!(
        h.send(c, &frame(&token("r", None, T0_UNIX + 60))),
        Err(ErrorCode::BadToken)
    );
}

#[test]
fn resume_within_grace_keeps_the_id_and_nobody_notices() {
    let mut h = H::new(cfg());
    let (a, b) = (h.open(), h.open());
    let (ida, resume) = h.join(a, "r", "Ann");
    let (idb, _) = h.join(b, "r", "Bob");
    h.out();
    h.rooms.disconnect(h.now, a);
    assert_eq!(h.out(), vec![], "nobody is told about a drop");
    h.advance(Duration::from_secs(10));
    assert_eq!(h.out(), vec![]);
    // Bob keeps talking to Ann meanwhile: no error, kept for her.
    let offer = json!({"type":"offer","to":ida,"sdp":"while-away"}).to_string();
    assert_eq!(h.send(b, &offer), Ok(()));
    assert_eq!(h.out(), vec![]);

    let a2 = h.open();
    let frame = json!({"type":"join","v":1,"room":"r","name":"Ann","resume":resume}).to_string();
    let (id2, resume2) = h.join_with(a2, &frame);
    assert_eq!(id2, ida);
    assert_ne!(resume2, resume, "the resume token rotates");
    assert_eq!(h.welcome["resumed"], json!(true));
    assert_eq!(h.welcome["peers"], json!([{"id": idb, "name": "Bob"}]));
    assert_eq!(
        h.rest,
        vec![O::Send(
            a2,
            json!({"v":1,"type":"offer","from":idb,"sdp":"while-away"})
        )]
    );
    // The grace timer is cancelled: no peer-left later.
    h.advance(Duration::from_secs(60));
    assert_eq!(h.out(), vec![]);
    assert_eq!(h.rooms.stats().peers, 2);
    // The old token is void: using it again makes a new peer.
    let a3 = h.open();
    let frame = json!({"type":"join","v":1,"room":"r","name":"Ann","resume":resume}).to_string();
    let (id3, _) = h.join_with(a3, &frame);
    assert_ne!(id3, ida);
    assert_eq!(h.welcome["resumed"], json!(false));
}

#[test]
fn resume_takes_over_a_connection_not_yet_seen_dead() {
    let mut h = H::new(cfg());
    let (a, b) = (h.open(), h.open());
    let (ida, resume) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.out();
    let a2 = h.open();
    let frame = json!({"type":"join","v":1,"room":"r","name":"Ann B.","resume":resume}).to_string();
    let (id2, _) = h.join_with(a2, &frame);
    assert_eq!(id2, ida);
    assert_eq!(
        h.rest,
        vec![
            O::Close(a, close_code::REPLACED),
            O::Send(
                b,
                json!({"v":1,"type":"peer-updated","peer":{"id": ida, "name":"Ann B."}})
            ),
        ],
        "the stale socket is closed; a changed name is announced"
    );
    // The stale socket's late disconnect changes nothing.
    h.rooms.disconnect(h.now, a);
    h.advance(Duration::from_secs(60));
    assert_eq!(h.out(), vec![]);
    assert_eq!(h.rooms.stats().connections, 2);
}

#[test]
fn resume_in_another_room_is_a_fresh_join() {
    let mut h = H::new(cfg());
    let a = h.open();
    let (ida, resume) = h.join(a, "r", "Ann");
    let a2 = h.open();
    let frame =
        json!({"type":"join","v":1,"room":"other","name":"Ann","resume":resume}).to_string();
    let (id2, _) = h.join_with(a2, &frame);
    assert_ne!(id2, ida);
    assert_eq!(h.welcome["resumed"], json!(false));
}

#[test]
fn past_the_grace_period_the_peer_leaves() {
    let mut h = H::new(SignalConfig {
        resume_grace: Duration::from_secs(20),
        ..cfg()
    });
    let (a, b) = (h.open(), h.open());
    let (ida, resume) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.out();
    h.rooms.disconnect(h.now, a);
    assert_eq!(
        h.rooms.poll_timeout(),
        Some(h.now + Duration::from_secs(20))
    );
    h.advance(Duration::from_millis(19_999));
    assert_eq!(h.out(), vec![]);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.out(),
        vec![O::Send(b, json!({"v":1,"type":"peer-left","id": ida}))]
    );
    assert_eq!(h.rooms.stats().peers, 1);
    let a2 = h.open();
    let frame = json!({"type":"join","v":1,"room":"r","name":"Ann","resume":resume}).to_string();
    let (id2, _) = h.join_with(a2, &frame);
    assert_ne!(id2, ida, "the token died with the grace period");
}

#[test]
fn zero_grace_leaves_at_once_and_empty_rooms_vanish() {
    let mut h = H::new(SignalConfig {
        resume_grace: Duration::ZERO,
        ..cfg()
    });
    let (a, b) = (h.open(), h.open());
    let (ida, _) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.out();
    h.rooms.disconnect(h.now, a);
    assert_eq!(
        h.out(),
        vec![O::Send(b, json!({"v":1,"type":"peer-left","id": ida}))]
    );
    h.rooms.disconnect(h.now, b);
    assert_eq!(
        h.rooms.stats(),
        crate::SignalStats {
            connections: 0,
            rooms: 0,
            peers: 0
        }
    );
}

#[test]
fn rename_is_announced_to_the_others() {
    let mut h = H::new(cfg());
    let (a, b, c) = (h.open(), h.open(), h.open());
    let (ida, _) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.join(c, "r", "Cid");
    h.out();
    assert_eq!(h.send(a, r#"{"type":"rename","name":"  Annie "}"#), Ok(()));
    let upd = json!({"v":1,"type":"peer-updated","peer":{"id": ida, "name":"Annie"}});
    assert_eq!(h.out(), vec![O::Send(b, upd.clone()), O::Send(c, upd)]);
    assert_eq!(h.send(a, r#"{"type":"rename","name":"Annie"}"#), Ok(()));
    assert_eq!(h.out(), vec![], "no change, no event");
}

#[test]
fn leave_is_immediate() {
    let mut h = H::new(cfg());
    let (a, b) = (h.open(), h.open());
    let (ida, resume) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.out();
    assert_eq!(h.send(a, r#"{"type":"leave"}"#), Ok(()));
    assert_eq!(
        h.out(),
        vec![
            O::Send(b, json!({"v":1,"type":"peer-left","id": ida})),
            O::Close(a, close_code::NORMAL)
        ]
    );
    h.rooms.disconnect(h.now, a); // the socket closing afterwards changes nothing
    h.advance(Duration::from_secs(60));
    assert_eq!(h.out(), vec![]);
    let a2 = h.open();
    let frame = json!({"type":"join","v":1,"room":"r","name":"Ann","resume":resume}).to_string();
    let (id2, _) = h.join_with(a2, &frame);
    assert_ne!(id2, ida, "leave voids the resume token");
}

#[test]
fn room_limit() {
    let mut h = H::new(SignalConfig {
        max_rooms: 1,
        ..cfg()
    });
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.join(a, "one", "Ann");
    assert_eq!(
        h.send(b, r#"{"type":"join","v":1,"room":"two","name":"B"}"#),
        Err(ErrorCode::TooManyRooms)
    );
    let out = h.out();
    assert_eq!(error_code(&out, b).as_deref(), Some("too-many-rooms"));
    assert_eq!(out.last(), Some(&O::Close(b, close_code::POLICY)));
    h.join(c, "one", "Cid");
}

#[test]
fn connections_per_ip() {
    let mut h = H::new(SignalConfig {
        max_connections_per_ip: 2,
        ..cfg()
    });
    let a = h.open_from("10.0.0.1");
    let _b = h.open_from("10.0.0.1");
    let c = h.open_from("10.0.0.1");
    let out = h.out();
    assert_eq!(error_code(&out, c).as_deref(), Some("too-many-connections"));
    assert_eq!(out.last(), Some(&O::Close(c, close_code::POLICY)));
    assert_eq!(h.rooms.stats().connections, 2);
    let d = h.open_from("10.0.0.2");
    assert!(h.out().is_empty(), "another address is fine");
    // Closing one frees a slot.
    h.rooms.disconnect(h.now, a);
    h.open_from("10.0.0.1");
    assert!(h.out().is_empty());
    // IPv4-mapped IPv6 counts as IPv4; IPv6 counts per /64.
    h.open_from("::ffff:10.0.0.1");
    assert_eq!(
        error_code(&h.out(), ConnId(d.0 + 2)).as_deref(),
        Some("too-many-connections")
    );
    h.open_from("2001:db8:1:2::1");
    h.open_from("2001:db8:1:2::ffff");
    let x = h.open_from("2001:db8:1:2:aaaa::1");
    assert_eq!(
        error_code(&h.out(), x).as_deref(),
        Some("too-many-connections")
    );
    h.open_from("2001:db8:1:3::1");
    assert!(h.out().is_empty());
    // 0 disables the limit.
    let mut h = H::new(SignalConfig {
        max_connections_per_ip: 0,
        ..cfg()
    });
    for _ in 0..100 {
        h.open();
    }
    assert!(h.out().is_empty());
}

fn turn_cfg() -> SignalConfig {
    SignalConfig {
        turn: Some(TurnAdvert {
            secret: "turn-secret".into(),
            port: 3478,
            tls_port: Some(5349),
            https_port: None,
            credential_ttl: Duration::from_secs(1000),
            servers: Vec::new(),
        }),
        ..cfg()
    }
}

#[test]
fn ice_servers_in_welcome_and_refreshed_before_expiry() {
    let mut h = H::new(turn_cfg());
    let a = h.open();
    let (ida, _) = h.join(a, "r", "Ann");
    let ice = h.welcome["iceServers"].clone();
    assert_eq!(ice[0], json!({"urls": ["stun:localhost:3478"]}));
    assert_eq!(
        ice[1]["urls"],
        json!([
            "turn:localhost:3478?transport=udp",
            "turn:localhost:3478?transport=tcp",
            "turns:localhost:5349?transport=tcp"
        ])
    );
    let expected =
        crate::ice::turn_credential("turn-secret", &ida, T0_UNIX, Duration::from_secs(1000));
    assert_eq!(
        ice[1]["username"],
        json!(format!("{}:{ida}", T0_UNIX + 1000))
    );
    assert_eq!(ice[1]["credential"], json!(expected.credential));

    assert_eq!(
        h.rooms.poll_timeout(),
        Some(h.now + Duration::from_secs(800)),
        "refresh at 80 % of the TTL"
    );
    h.advance(Duration::from_secs(799));
    assert_eq!(h.out(), vec![]);
    h.advance(Duration::from_secs(1));
    let out = h.out();
    assert_eq!(out.len(), 1);
    let O::Send(conn, v) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*conn, a);
    assert_eq!(v["type"], "ice-servers");
    assert_eq!(
        v["iceServers"][1]["username"],
        json!(format!("{}:{ida}", T0_UNIX + 800 + 1000))
    );
    h.advance(Duration::from_secs(800));
    assert_eq!(h.out().len(), 1, "and again");
    // A disconnected peer gets no refresh.
    h.rooms.disconnect(h.now, a);
    h.advance(Duration::from_secs(800));
    assert!(
        h.out()
            .iter()
            .all(|o| !matches!(o, O::Send(_, v) if v["type"] == "ice-servers"))
    );
}

#[test]
fn public_host_overrides_the_request_host() {
    let mut h = H::new(SignalConfig {
        public_host: Some("Call.Example.org".into()),
        ..turn_cfg()
    });
    let a = h.open();
    h.join(a, "r", "Ann");
    assert_eq!(
        h.welcome["iceServers"][0],
        json!({"urls": ["stun:call.example.org:3478"]})
    );
    let mut h = H::new(SignalConfig {
        public_host: Some("2001:db8::1".into()),
        ..turn_cfg()
    });
    let a = h.open();
    h.join(a, "r", "Ann");
    assert_eq!(
        h.welcome["iceServers"][0],
        json!({"urls": ["stun:[2001:db8::1]:3478"]})
    );
}

#[test]
fn kick_for_abuse_removes_the_peer_at_once() {
    let mut h = H::new(cfg());
    let (a, b) = (h.open(), h.open());
    let (ida, _) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.out();
    h.rooms.kick(h.now, a, ErrorCode::Abuse);
    let out = h.out();
    assert_eq!(error_code(&out, a).as_deref(), Some("abuse"));
    assert!(out.contains(&O::Send(b, json!({"v":1,"type":"peer-left","id": ida}))));
    assert_eq!(out.last(), Some(&O::Close(a, close_code::POLICY)));
    // Messages on the closed connection are ignored.
    assert_eq!(h.send(a, r#"{"type":"ping"}"#), Ok(()));
    assert_eq!(h.out(), vec![]);
}

#[test]
fn backlog_for_an_absent_peer_is_bounded() {
    let mut h = H::new(SignalConfig {
        max_pending_per_peer: 2,
        ..cfg()
    });
    let (a, b) = (h.open(), h.open());
    let (ida, resume) = h.join(a, "r", "Ann");
    h.join(b, "r", "Bob");
    h.rooms.disconnect(h.now, a);
    for i in 0..5 {
        let f = json!({"type":"message","to":ida,"data":i}).to_string();
        assert_eq!(h.send(b, &f), Ok(()));
    }
    let a2 = h.open();
    let frame = json!({"type":"join","v":1,"room":"r","name":"Ann","resume":resume}).to_string();
    h.join_with(a2, &frame);
    let data: Vec<_> = h
        .rest
        .iter()
        .filter_map(|o| match o {
            O::Send(c, v) if *c == a2 => Some(v["data"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![json!(0), json!(1)]);
}

#[test]
fn timer_heap_stays_bounded_under_churn() {
    let mut h = H::new(SignalConfig {
        max_joins_per_min: 0,
        max_new_rooms_per_min: 0,
        ..turn_cfg()
    });
    for i in 0..5000 {
        let c = h.open();
        h.join(c, "r", "x");
        h.send(c, r#"{"type":"leave"}"#).expect("leave");
        h.out();
        if i % 100 == 0 {
            h.advance(Duration::from_millis(1));
        }
    }
    assert!(
        h.rooms.timer_count() <= 1024 + 2,
        "cancelled timers are dropped: {}",
        h.rooms.timer_count()
    );
}

#[test]
fn same_seed_same_ids() {
    let ids = || {
        let mut h = H::new(cfg());
        let a = h.open();
        h.join(a, "r", "Ann")
    };
    assert_eq!(ids(), ids());
}

#[test]
fn wall_clock_follows_the_instant_and_can_be_resynced() {
    let mut h = H::new(cfg());
    assert_eq!(
        h.rooms.unix_at(h.now + Duration::from_secs(90)),
        T0_UNIX + 90
    );
    h.rooms.sync_wall_clock(h.now, T0_UNIX + 5);
    assert_eq!(h.rooms.unix_at(h.now + Duration::from_secs(1)), T0_UNIX + 6);
}

// -------------------------------------------------------------------------------------------------------------
// Per-address throttles over time (issue 9 items 11 and 12)

fn join_frame(room: &str, password: Option<&str>) -> String {
    match password {
        Some(p) => json!({"type":"join","v":1,"room":room,"name":"X","password":p}),
        None => json!({"type":"join","v":1,"room":room,"name":"X"}),
    }
    .to_string()
}

/// Sends a join that is expected to fail; returns its error code.
fn join_refused(h: &mut H, conn: ConnId, frame: &str) -> String {
    assert!(h.send(conn, frame).is_err(), "{frame} should be refused");
    let out = h.out();
    assert_eq!(
        out.last(),
        Some(&O::Close(conn, close_code::POLICY)),
        "{out:?}"
    );
    error_code(&out, conn).unwrap_or_else(|| panic!("no error in {out:?}"))
}

#[test]
fn join_and_drop_churn_from_one_address_cannot_fill_the_server() {
    // The attack of issue 9 item 11: 250 join-and-drop cycles from one address in 0.1 s against
    // --max-rooms 200. Before, every room stayed for the resume grace and the server was full for everyone.
    let mut h = H::new(SignalConfig {
        max_rooms: 200,
        ..cfg()
    });
    let mut created = 0;
    let mut refused = 0;
    for i in 0..250 {
        let c = h.open_from("198.51.100.7");
        if h.send(c, &join_frame(&format!("churn-{i}"), None)).is_ok() {
            created += 1;
        } else {
            refused += 1;
        }
        let out = h.out();
        if let Some(code) = error_code(&out, c) {
            assert_eq!(code, "too-many-joins", "{out:?}");
        }
        h.rooms.disconnect(h.now, c); // dropped, no leave: the room waits for a resume
        h.now += Duration::from_micros(400);
    }
    assert_eq!(created, 20, "a minute's worth of new rooms (default 20)");
    assert_eq!(refused, 230);
    assert_eq!(h.rooms.stats().rooms, 20);
    assert_eq!(
        h.metrics
            .joins_refused_of(crate::metrics::JoinRefusal::NewRoomRate),
        40,
        "joins 21..60 found the room bucket empty"
    );
    assert_eq!(
        h.metrics
            .joins_refused_of(crate::metrics::JoinRefusal::JoinRate),
        190
    );
    // Everyone else still gets rooms.
    let other = h.open_from("203.0.113.1");
    h.join(other, "mine", "Ann");
    // Over time the address gets more, at the configured rate: 1 room per 3 s, 1 join per 1 s.
    h.now += Duration::from_secs(3);
    let c = h.open_from("198.51.100.7");
    h.join(c, "later", "X");
    let c = h.open_from("198.51.100.7");
    assert_eq!(
        join_refused(&mut h, c, &join_frame("later-2", None)),
        "too-many-joins"
    );
    // IPv6: one /64 is one address.
    for i in 0..20 {
        let c = h.open_from(&format!("2001:db8:5:6::{:x}", i + 1));
        h.join(c, &format!("v6-{i}"), "X");
        h.rooms.disconnect(h.now, c);
    }
    let c = h.open_from("2001:db8:5:6:ffff::1");
    assert_eq!(
        join_refused(&mut h, c, &join_frame("v6-x", None)),
        "too-many-joins"
    );
    let c = h.open_from("2001:db8:5:7::1");
    h.join(c, "v6-next-prefix", "X");
}

#[test]
fn joining_existing_rooms_is_bounded_per_address_but_resume_is_free() {
    let mut h = H::new(SignalConfig {
        max_joins_per_min: 5,
        resume_grace: Duration::from_secs(60),
        ..cfg()
    });
    let a = h.open_from("10.1.1.1");
    let (id, mut resume) = h.join(a, "r", "Ann");
    for _ in 0..4 {
        let c = h.open_from("10.1.1.2");
        h.join(c, "r", "Bob");
        h.send(c, r#"{"type":"leave"}"#).expect("leave");
        h.out();
    }
    let c = h.open_from("10.1.1.2");
    h.join(c, "r", "Bob");
    h.send(c, r#"{"type":"leave"}"#).expect("leave");
    h.out();
    let c = h.open_from("10.1.1.2");
    assert_eq!(
        join_refused(&mut h, c, &join_frame("r", None)),
        "too-many-joins"
    );
    // Resuming a live session is not a new join: Ann's address, its bucket empty, still resumes.
    for _ in 0..4 {
        let c = h.open_from("10.1.1.1");
        h.join(c, "x", "Ann");
        h.rooms.disconnect(h.now, c);
    }
    let mut current = a;
    for _ in 0..10 {
        h.rooms.disconnect(h.now, current);
        current = h.open_from("10.1.1.1");
        let frame =
            json!({"type":"join","v":1,"room":"r","name":"Ann","resume":resume}).to_string();
        let (again, token) = h.join_with(current, &frame);
        assert_eq!(again, id);
        resume = token;
    }
    // 0 turns both buckets off.
    let mut h = H::new(SignalConfig {
        max_joins_per_min: 0,
        max_new_rooms_per_min: 0,
        ..cfg()
    });
    for i in 0..500 {
        let c = h.open_from("10.1.1.3");
        h.join(c, &format!("r{i}"), "X");
        h.rooms.disconnect(h.now, c);
    }
}

#[test]
fn wrong_passwords_back_off_per_address_without_locking_out_others() {
    // Issue 9 item 12: a 4-digit password fell after 4,712 guesses in 1.7 s from one connection.
    let mut h = H::new(SignalConfig {
        max_joins_per_min: 0,
        room_failed_joins_before_delay: 0, // the room's own delay has its test below
        ..cfg()
    });
    let owner = h.open_from("192.0.2.10");
    h.join_with(owner, &join_frame("secret-room", Some("4711")));
    let attacker = "198.51.100.66";
    let mut wrong = 0;
    let mut throttled = 0;
    // 1.7 s of guessing, one every 0.36 ms (the measured rate).
    for guess in 0..4712 {
        let c = h.open_from(attacker);
        match join_refused(
            &mut h,
            c,
            &join_frame("secret-room", Some(&format!("{guess:04}"))),
        )
        .as_str()
        {
            "wrong-password" => wrong += 1,
            "too-many-joins" => throttled += 1,
            other => panic!("{other}"),
        }
        h.now += Duration::from_micros(360);
    }
    assert_eq!(
        wrong, 7,
        "5 free failures; the 6th starts a 1 s back-off, the 7th (after it) a 2 s one that outlasts the 1.7 s"
    );
    assert_eq!(throttled, 4712 - 7);
    assert_eq!(h.metrics.join_failures(), 7);
    // The back-off doubles with each further failure (1, 2, 4, ... s, capped at --max-join-backoff).
    let mut waits = Vec::new();
    for _ in 0..12 {
        let c = h.open_from(attacker);
        let _ = h.send(c, &join_frame("secret-room", Some("0000")));
        let out = h.out();
        let msg = out
            .iter()
            .find_map(|o| match o {
                O::Send(_, v) if v["type"] == "error" => Some(str_of(&v["message"])),
                _ => None,
            })
            .expect("error");
        if let Some(rest) =
            msg.strip_prefix("too many failed joins from your address: try again in ")
        {
            let secs: u64 = rest.trim_end_matches(" s").parse().expect("seconds");
            waits.push(secs);
            h.now += Duration::from_secs(secs);
        } else {
            assert!(msg.contains("wrong password"), "{msg}");
        }
    }
    assert_eq!(waits, [2, 4, 8, 16, 32, 64], "doubling back-off");
    // Another address is not locked out: the real participant gets in with the right password, at once.
    let guest = h.open_from("203.0.113.20");
    h.join_with(guest, &join_frame("secret-room", Some("4711")));
    // The attacker's address is refused even with the right password while it backs off.
    let c = h.open_from(attacker);
    assert_eq!(
        join_refused(&mut h, c, &join_frame("secret-room", Some("4711"))),
        "too-many-joins"
    );
    // After the back-off and FAILURE_MEMORY without failures, the address starts afresh.
    h.now += super::FAILURE_MEMORY.max(Duration::from_secs(1200));
    for _ in 0..5 {
        let c = h.open_from(attacker);
        assert_eq!(
            join_refused(&mut h, c, &join_frame("secret-room", Some("1"))),
            "wrong-password"
        );
    }
}

#[test]
fn a_room_under_distributed_guessing_delays_every_join_but_admits_the_right_password() {
    let mut h = H::new(SignalConfig {
        room_failed_joins_before_delay: 10,
        ..cfg()
    });
    let owner = h.open_from("192.0.2.10");
    h.join_with(owner, &join_frame("vault", Some("right")));
    // Ten addresses, one wrong guess each: no address backs off, the room counts 10.
    for i in 0..10 {
        let c = h.open_from(&format!("198.51.100.{}", i + 1));
        assert_eq!(
            join_refused(&mut h, c, &join_frame("vault", Some("wrong"))),
            "wrong-password"
        );
    }
    assert_eq!(h.metrics.joins_delayed(), 0);
    // From now on every join to the room waits ROOM_GUESS_DELAY, right or wrong alike.
    let guess = h.open_from("198.51.100.200");
    assert_eq!(h.send(guess, &join_frame("vault", Some("wrong"))), Ok(()));
    let guest = h.open_from("203.0.113.20");
    assert_eq!(h.send(guest, &join_frame("vault", Some("right"))), Ok(()));
    assert!(h.out().is_empty(), "nothing is answered before the delay");
    assert_eq!(h.metrics.joins_delayed(), 2);
    // A second join on a parked connection is refused without touching the first.
    assert_eq!(
        h.send(guest, &join_frame("vault", Some("right"))),
        Err(ErrorCode::AlreadyJoined)
    );
    h.out();
    assert_eq!(
        h.rooms.poll_timeout(),
        Some(h.now + super::ROOM_GUESS_DELAY)
    );
    h.advance(super::ROOM_GUESS_DELAY);
    let out = h.out();
    assert_eq!(error_code(&out, guess).as_deref(), Some("wrong-password"));
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Send(c, v) if *c == guest && v["type"] == "welcome")),
        "the right password is admitted, {:?} late: {out:?}",
        super::ROOM_GUESS_DELAY
    );
    // Other rooms are not delayed.
    let c = h.open_from("203.0.113.21");
    h.join(c, "elsewhere", "X");
    // A parked connection that drops is forgotten.
    let c = h.open_from("203.0.113.22");
    assert_eq!(h.send(c, &join_frame("vault", Some("right"))), Ok(()));
    h.rooms.disconnect(h.now, c);
    h.advance(super::ROOM_GUESS_DELAY);
    assert!(h.out().is_empty());
    // The room forgets its failures after FAILURE_MEMORY without one.
    h.now += super::FAILURE_MEMORY;
    let c = h.open_from("203.0.113.23");
    h.join_with(c, &join_frame("vault", Some("right")));
}

#[test]
fn bad_tokens_count_as_failed_joins() {
    let mut h = H::new(SignalConfig {
        join_token_secret: Some("token-secret-long-enough".into()),
        failed_joins_before_backoff: 2,
        ..cfg()
    });
    let frame =
        json!({"type":"join","v":1,"room":"r","name":"X","token":"forged.token"}).to_string();
    for _ in 0..2 {
        let c = h.open_from("198.51.100.1");
        assert_eq!(join_refused(&mut h, c, &frame), "bad-token");
    }
    let c = h.open_from("198.51.100.1");
    assert_eq!(join_refused(&mut h, c, &frame), "bad-token");
    let c = h.open_from("198.51.100.1");
    assert_eq!(join_refused(&mut h, c, &frame), "too-many-joins");
    assert_eq!(
        h.metrics
            .joins_refused_of(crate::metrics::JoinRefusal::Backoff),
        1
    );
}

#[test]
fn the_back_off_is_capped() {
    let mut h = H::new(SignalConfig {
        failed_joins_before_backoff: 1,
        max_join_backoff: Duration::from_secs(5),
        room_failed_joins_before_delay: 0,
        ..cfg()
    });
    let owner = h.open_from("192.0.2.10");
    h.join_with(owner, &join_frame("r", Some("pw")));
    let c = h.open_from("198.51.100.1");
    assert_eq!(
        join_refused(&mut h, c, &join_frame("r", Some("no"))),
        "wrong-password"
    );
    let mut blocked_for = Vec::new();
    for _ in 0..6 {
        let c = h.open_from("198.51.100.1");
        assert_eq!(
            join_refused(&mut h, c, &join_frame("r", Some("no"))),
            "wrong-password"
        );
        let c = h.open_from("198.51.100.1");
        assert_eq!(
            join_refused(&mut h, c, &join_frame("r", Some("no"))),
            "too-many-joins"
        );
        let mut waited = 0;
        loop {
            h.now += Duration::from_millis(500);
            waited += 500;
            if h.rooms
                .limits
                .backoff_left("198.51.100.1".parse().expect("ip"), h.now)
                .is_none()
            {
                break;
            }
        }
        blocked_for.push(waited);
    }
    assert_eq!(blocked_for, [1000, 2000, 4000, 5000, 5000, 5000]);
}

#[test]
fn per_address_state_is_swept_when_idle() {
    let mut h = H::new(cfg());
    let ip = |i: u32| format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    for i in 0..5000 {
        let c = h.open_from(&ip(i));
        h.join(c, "r", "X");
        h.send(c, r#"{"type":"leave"}"#).expect("leave");
        h.out();
    }
    assert_eq!(
        h.rooms.limits.tracked(),
        5000,
        "all still hold spent tokens"
    );
    // A minute later their buckets are full again: they are forgotten as new addresses arrive.
    h.now += Duration::from_secs(61);
    for i in 5000..10_000 {
        let c = h.open_from(&ip(i));
        h.join(c, "r", "X");
        h.send(c, r#"{"type":"leave"}"#).expect("leave");
        h.out();
    }
    assert_eq!(h.rooms.limits.tracked(), 5000, "the first 5000 were swept");
}

#[test]
fn a_refused_creation_does_not_cost_a_new_room_token() {
    let mut h = H::new(SignalConfig {
        max_new_rooms_per_min: 1,
        require_room_password: true,
        ..cfg()
    });
    let c = h.open_from("10.2.2.2");
    assert_eq!(
        join_refused(&mut h, c, &join_frame("r", None)),
        "wrong-password"
    );
    let c = h.open_from("10.2.2.2");
    h.join_with(c, &join_frame("r", Some("pw")));
    let c = h.open_from("10.2.2.2");
    assert_eq!(
        join_refused(&mut h, c, &join_frame("r2", Some("pw"))),
        "too-many-joins"
    );
}
