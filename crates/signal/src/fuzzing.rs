//! Entry points for the fuzz targets (`fuzz/`), also run by proptests in the normal test suite
//! (`crates/signal/tests/fuzz_properties.rs`), so CI exercises the same functions. Each one panics only on a
//! bug: a broken invariant, not a refused input.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SignalConfig;
use crate::metrics::Metrics;
use crate::protocol::{ServerMessage, parse_client};
use crate::rooms::{ConnId, ConnInfo, Output, Rooms};
use crate::session::{Session, Verdict};

/// One client frame through the connection gate and the parser: refused frames get an error message that
/// is valid JSON; accepted ones have a known type.
pub fn fuzz_message(data: &[u8]) {
    let metrics = Metrics::default();
    let now = Instant::now();
    let mut session = Session::new(&SignalConfig::default(), now);
    match session.on_text(now, data, &metrics) {
        Verdict::Deliver(msg) => {
            assert!(!msg.type_name().is_empty());
            assert!(parse_client(data).is_ok(), "the gate and the parser agree");
        }
        Verdict::Reply(reply) | Verdict::ReplyThenAbuse(reply) => assert_json(&reply),
    }
    if let Err(e) = parse_client(data) {
        assert_json(&e.to_message());
    }
}

fn assert_json(msg: &ServerMessage) {
    let text = msg.to_json();
    let value: serde_json::Value =
        serde_json::from_str(&text).expect("the server writes valid JSON");
    assert_eq!(value["v"], 1, "{text}");
}

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn text(&mut self, max: usize) -> String {
        let n = usize::from(self.byte()).min(max).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        String::from_utf8_lossy(taken).into_owned()
    }
}

/// What the fuzzer has seen, to check the core against.
#[derive(Default)]
struct Model {
    open: HashSet<ConnId>,
    /// Room of each peer id a welcome named.
    room_of_peer: HashMap<String, String>,
    /// Peer id and room of each connection that was welcomed.
    joined: HashMap<ConnId, (String, String)>,
    resume_tokens: Vec<String>,
}

/// Runs a script of connections, joins (with passwords, resume tokens), forwarded messages to known and
/// unknown ids, raw frames, disconnects and time steps through the room core, checking that nothing is sent
/// to a closed connection, that forwarded messages come from a peer of the receiver's room, that rooms stay
/// within their capacity, and that everything is forgotten once every connection is gone and every grace and
/// memory period has passed.
pub fn fuzz_rooms(data: &[u8]) {
    let config = SignalConfig {
        max_rooms: 4,
        max_peers_per_room: 3,
        max_connections_per_ip: 6,
        resume_grace: Duration::from_secs(20),
        ..SignalConfig::default()
    };
    let capacity = config.max_peers_per_room;
    let max_rooms = config.max_rooms;
    let metrics = Arc::new(Metrics::default());
    let mut now = Instant::now();
    let mut rooms = Rooms::new(config, metrics, [3; 32], now, 1_767_225_600);
    let mut model = Model::default();
    let mut conns: Vec<ConnId> = Vec::new();
    let mut s = Script { data };
    let mut steps = 0;
    while !s.data.is_empty() && steps < 400 {
        steps += 1;
        let op = s.byte();
        let pick =
            |conns: &Vec<ConnId>, b: u8| conns.get(usize::from(b) % conns.len().max(1)).copied();
        match op % 10 {
            0 => {
                let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, s.byte() % 4));
                let conn = rooms.open(
                    now,
                    ConnInfo {
                        ip: Some(ip),
                        host: Some("call.example".into()),
                    },
                );
                model.open.insert(conn);
                conns.push(conn);
            }
            1 | 2 => {
                let Some(conn) = pick(&conns, s.byte()) else {
                    continue;
                };
                let room = format!("room-{}", s.byte() % 6);
                let mut join =
                    serde_json::json!({"type": "join", "v": 1, "room": room, "name": s.text(12)});
                let flags = s.byte();
                if flags & 1 != 0 {
                    join["password"] = serde_json::Value::from(format!("pw{}", flags >> 5));
                }
                if flags & 2 != 0
                    && let Some(t) = model
                        .resume_tokens
                        .get(usize::from(flags >> 2) % model.resume_tokens.len().max(1))
                {
                    join["resume"] = serde_json::Value::from(t.clone());
                }
                deliver(&mut rooms, now, conn, join.to_string().as_bytes());
            }
            3 => {
                let Some(conn) = pick(&conns, s.byte()) else {
                    continue;
                };
                let kinds = ["offer", "answer", "candidate", "message"];
                let kind = kinds[usize::from(s.byte()) % 4];
                let ids: Vec<&String> = model.room_of_peer.keys().collect();
                let to = ids
                    .get(usize::from(s.byte()) % ids.len().max(1))
                    .map_or_else(|| "nobody".to_owned(), |id| (*id).clone());
                let frame = match kind {
                    "candidate" => {
                        serde_json::json!({"type": kind, "to": to, "candidate": {"candidate": s.text(20)}})
                    }
                    "message" => serde_json::json!({"type": kind, "to": to, "data": s.text(20)}),
                    _ => serde_json::json!({"type": kind, "to": to, "sdp": s.text(30)}),
                };
                deliver(&mut rooms, now, conn, frame.to_string().as_bytes());
            }
            4 => {
                let Some(conn) = pick(&conns, s.byte()) else {
                    continue;
                };
                let raw = s.text(120);
                deliver(&mut rooms, now, conn, raw.as_bytes());
            }
            5 => {
                let Some(conn) = pick(&conns, s.byte()) else {
                    continue;
                };
                rooms.disconnect(now, conn);
                model.open.remove(&conn);
            }
            6 => {
                now += Duration::from_millis(u64::from(s.byte()) * 100);
                rooms.handle_timeout(now);
            }
            7 => {
                if let Some(at) = rooms.poll_timeout() {
                    now = now.max(at);
                    rooms.handle_timeout(now);
                }
            }
            8 => {
                let Some(conn) = pick(&conns, s.byte()) else {
                    continue;
                };
                let frame = if s.byte() & 1 == 0 {
                    serde_json::json!({"type": "rename", "name": s.text(12)})
                } else {
                    serde_json::json!({"type": "leave"})
                };
                deliver(&mut rooms, now, conn, frame.to_string().as_bytes());
            }
            _ => {
                let Some(conn) = pick(&conns, s.byte()) else {
                    continue;
                };
                deliver(&mut rooms, now, conn, br#"{"type":"ping"}"#);
            }
        }
        drain(&mut rooms, &mut model, capacity);
        assert!(rooms.stats().rooms <= max_rooms, "room count");
    }
    // Everyone goes; after the grace and failure-memory periods nothing is left.
    for conn in conns {
        rooms.disconnect(now, conn);
        model.open.remove(&conn);
    }
    for _ in 0..8 {
        now += Duration::from_secs(3600);
        rooms.handle_timeout(now);
        drain(&mut rooms, &mut model, capacity);
    }
    let stats = rooms.stats();
    assert_eq!(
        (stats.connections, stats.rooms, stats.peers),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(rooms.timer_count(), 0, "timers left behind");
}

fn deliver(rooms: &mut Rooms, now: Instant, conn: ConnId, frame: &[u8]) {
    if let Ok(msg) = parse_client(frame) {
        let _ = rooms.handle_message(now, conn, msg);
    }
}

fn drain(rooms: &mut Rooms, model: &mut Model, capacity: usize) {
    while let Some(out) = rooms.poll_output() {
        match out {
            Output::Send { conn, msg } => {
                assert!(
                    model.open.contains(&conn),
                    "sent to a closed connection: {msg:?}"
                );
                let text = msg.to_json();
                let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
                match value["type"].as_str() {
                    Some("welcome") => {
                        let id = value["id"].as_str().expect("welcome id").to_owned();
                        let room = value["room"].as_str().expect("welcome room").to_owned();
                        let others = value["peers"].as_array().map_or(0, Vec::len);
                        assert!(others < capacity, "room over capacity: {text}");
                        if let Some(t) = value["resume"].as_str() {
                            model.resume_tokens.push(t.to_owned());
                        }
                        model.room_of_peer.insert(id.clone(), room.clone());
                        model.joined.insert(conn, (id, room));
                    }
                    Some("offer" | "answer" | "candidate" | "message") => {
                        let from = value["from"]
                            .as_str()
                            .expect("forwarded messages carry from");
                        let (me, my_room) =
                            model.joined.get(&conn).expect("only joined peers receive");
                        assert_ne!(from, me, "a peer never hears itself");
                        assert_eq!(
                            model.room_of_peer.get(from),
                            Some(my_room),
                            "forwarded across rooms: {text}"
                        );
                    }
                    _ => {}
                }
            }
            Output::Close { conn, .. } => {
                model.open.remove(&conn);
            }
            Output::Cluster(_) => unreachable!("the fuzzed core is not clustered"),
        }
    }
}
