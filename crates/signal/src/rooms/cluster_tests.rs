//! The cluster side of the room core without Redis: the store's answers and other nodes' events are fed in by
//! hand, in the orders Redis could deliver them, and the core's requests and client messages are checked.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ConnId, ConnInfo, Output, Rooms, close_code};
use crate::SignalConfig;
use crate::cluster::{
    Admission, ClusterEvent, ClusterRequest, ConnectionCount, Member, Resumption, Throttle,
};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ForwardKind, PeerInfo, parse_client};

/// One output: a client message as JSON, a close, or a request to the store.
#[derive(Debug)]
enum O {
    Send(ConnId, Value),
    Close(ConnId, u16),
    Ask(ClusterRequest),
}

struct Node {
    rooms: Rooms,
    now: Instant,
}

const ME: &str = "n1";
const OTHER: &str = "n2";

impl Node {
    fn new(config: SignalConfig) -> Node {
        Node::named(config, ME)
    }

    fn named(config: SignalConfig, name: &str) -> Node {
        let now = Instant::now();
        let mut rooms = Rooms::new(
            config,
            Arc::new(Metrics::default()),
            [3; 32],
            now,
            1_767_225_600,
        );
        rooms.enable_cluster(name.to_owned());
        Node { rooms, now }
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

    fn send(&mut self, conn: ConnId, frame: Value) {
        let msg = parse_client(frame.to_string().as_bytes()).expect("test frame");
        let _ = self.rooms.handle_message(self.now, conn, msg);
    }

    fn out(&mut self) -> Vec<O> {
        let mut v = Vec::new();
        while let Some(o) = self.rooms.poll_output() {
            v.push(match o {
                Output::Send { conn, msg } => {
                    O::Send(conn, serde_json::from_str(&msg.to_json()).expect("JSON"))
                }
                Output::Close { conn, code, .. } => O::Close(conn, code),
                Output::Cluster(req) => O::Ask(req),
            });
        }
        v
    }

    /// A connection from `ip` whose count the store accepted.
    fn counted(&mut self, ip: &str) -> ConnId {
        let c = self.open_from(ip);
        self.out();
        self.rooms
            .handle_connection_count(self.now, c, ConnectionCount::Counted);
        assert!(self.out().is_empty());
        c
    }

    /// Sends a join and returns the Admit request's peer id and resume token.
    fn ask_join(&mut self, conn: ConnId, room: &str, name: &str) -> (String, String) {
        self.send(conn, json!({"type":"join","v":1,"room":room,"name":name}));
        let out = self.out();
        out.iter()
            .find_map(|o| match o {
                O::Ask(ClusterRequest::Admit { id, resume, .. }) => {
                    Some((id.clone(), resume.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Admit request: {out:?}"))
    }
}

fn member(id: &str, name: &str, node: &str) -> Member {
    Member {
        id: id.into(),
        name: name.into(),
        node: node.into(),
    }
}

fn sent(out: &[O], conn: ConnId, ty: &str) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            O::Send(c, v) if *c == conn && v["type"] == ty => Some(v.clone()),
            _ => None,
        })
        .collect()
}

fn error_of(out: &[O], conn: ConnId) -> Option<String> {
    sent(out, conn, "error")
        .first()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
}

fn joined(seq: u64, id: &str, name: &str) -> ClusterEvent {
    ClusterEvent::Joined {
        seq,
        node: OTHER.into(),
        peer: PeerInfo {
            id: id.into(),
            name: name.into(),
        },
    }
}

/// A node with Ann (local) admitted in `room` next to the given remote members, at event `seq`.
fn with_ann(node: &mut Node, room: &str, remote: &[Member], seq: u64) -> (ConnId, String) {
    let a = node.counted("10.0.0.1");
    let (id, _) = node.ask_join(a, room, "Ann");
    let mut members = remote.to_vec();
    members.push(member(&id, "Ann", ME));
    node.rooms.handle_admission(
        node.now,
        a,
        Admission::Admitted {
            seq,
            members,
            password: None,
        },
    );
    let out = node.out();
    assert_eq!(sent(&out, a, "welcome").len(), 1, "{out:?}");
    (a, id)
}

#[test]
fn a_join_asks_the_store_with_the_room_capacity_and_the_address_rates() {
    let mut n = Node::new(SignalConfig {
        max_peers_per_room: 5,
        max_joins_per_min: 7,
        max_new_rooms_per_min: 3,
        ..SignalConfig::default()
    });
    let a = n.counted("10.0.0.1");
    n.send(
        a,
        json!({"type":"join","v":1,"room":"r","name":"Ann","password":"pw"}),
    );
    let out = n.out();
    assert!(
        matches!(&out[0], O::Ask(ClusterRequest::Subscribe { room }) if room == "r"),
        "{out:?}"
    );
    match &out[1] {
        O::Ask(ClusterRequest::Admit {
            capacity,
            password,
            ip,
            joins_per_min,
            rooms_per_min,
            id,
            ..
        }) => {
            assert_eq!(*capacity, 5);
            assert_eq!(password.as_deref(), Some("pw"));
            assert_eq!(*ip, Some("10.0.0.1".parse().expect("ip")));
            assert_eq!((*joins_per_min, *rooms_per_min), (7, 3));
            assert!(id.starts_with("p-n1-"), "ids name the node: {id}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        out.len(),
        2,
        "nothing is sent to the client before the store answers"
    );
}

#[test]
fn admission_welcomes_with_the_store_members_and_refusals_close_with_their_code() {
    let mut n = Node::new(SignalConfig::default());
    let (_, ann) = with_ann(&mut n, "r", &[member("p-n2-b", "Bob", OTHER)], 4);
    let _ = ann;
    // A second local joiner sees Ann (local) and Bob (remote) in its welcome.
    let c = n.counted("10.0.0.3");
    let (cid, _) = n.ask_join(c, "r", "Cid");
    n.rooms.handle_admission(
        n.now,
        c,
        Admission::Admitted {
            seq: 5,
            members: vec![
                member("p-n2-b", "Bob", OTHER),
                member(&ann, "Ann", ME),
                member(&cid, "Cid", ME),
            ],
            password: None,
        },
    );
    let out = n.out();
    let welcome = &sent(&out, c, "welcome")[0];
    let mut names: Vec<&str> = welcome["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Ann", "Bob"]);

    for (answer, code) in [
        (Admission::Refused(ErrorCode::RoomFull), "room-full"),
        (
            Admission::Refused(ErrorCode::WrongPassword),
            "wrong-password",
        ),
        (Admission::Throttled(Throttle::Joins), "too-many-joins"),
        (Admission::Throttled(Throttle::NewRooms), "too-many-joins"),
        (Admission::Unavailable, "unavailable"),
    ] {
        let x = n.counted("10.0.0.9");
        n.ask_join(x, "r", "X");
        n.rooms.handle_admission(n.now, x, answer.clone());
        let out = n.out();
        assert_eq!(
            error_of(&out, x).as_deref(),
            Some(code),
            "{answer:?}: {out:?}"
        );
        assert!(
            out.iter().any(|o| matches!(o, O::Close(c, _) if *c == x)),
            "{answer:?} closes"
        );
        assert!(
            sent(&out, c, "peer-joined").is_empty(),
            "nobody hears of a refused joiner"
        );
    }
}

#[test]
fn an_admission_for_a_client_that_went_away_gives_the_place_back() {
    let mut n = Node::new(SignalConfig::default());
    let a = n.counted("10.0.0.1");
    let (id, token) = n.ask_join(a, "r", "Ann");
    n.rooms.disconnect(n.now, a);
    n.out();
    n.rooms.handle_admission(
        n.now,
        a,
        Admission::Admitted {
            seq: 1,
            members: vec![member(&id, "Ann", ME)],
            password: None,
        },
    );
    let out = n.out();
    assert!(
        out.iter().any(|o| matches!(o, O::Ask(ClusterRequest::Leave { id: i, token: t, .. }) if *i == id && *t == token)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Ask(ClusterRequest::Unsubscribe { room }) if room == "r")),
        "the room is forgotten with nothing left here: {out:?}"
    );
    assert_eq!(n.rooms.stats().rooms, 0);
}

#[test]
fn events_before_the_first_snapshot_are_held_and_old_or_repeated_events_are_ignored() {
    let mut n = Node::new(SignalConfig::default());
    let a = n.counted("10.0.0.1");
    let (ann, _) = n.ask_join(a, "r", "Ann");
    // Redis published Bob's join (event 2) and Cid's (event 4) before Ann's snapshot (event 3) reached us.
    n.rooms
        .handle_cluster_event(n.now, "r", joined(2, "p-n2-b", "Bob"));
    n.rooms
        .handle_cluster_event(n.now, "r", joined(4, "p-n2-c", "Cid"));
    assert!(n.out().is_empty(), "held until the snapshot");
    n.rooms.handle_admission(
        n.now,
        a,
        Admission::Admitted {
            seq: 3,
            members: vec![member("p-n2-b", "Bob", OTHER), member(&ann, "Ann", ME)],
            password: None,
        },
    );
    let out = n.out();
    let welcome = &sent(&out, a, "welcome")[0];
    // Bob from the snapshot, Cid from the held event 4 (applied before the welcome), each once.
    assert_eq!(
        welcome["peers"],
        json!([{"id":"p-n2-b","name":"Bob"}, {"id":"p-n2-c","name":"Cid"}])
    );
    assert!(
        sent(&out, a, "peer-joined").is_empty(),
        "nobody announced twice: {out:?}"
    );
    // A replayed or older event changes nothing.
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Left {
            seq: 4,
            id: "p-n2-c".into(),
        },
    );
    n.rooms
        .handle_cluster_event(n.now, "r", joined(3, "p-n2-z", "Zed"));
    assert!(n.out().is_empty());
    // The next event is applied.
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Left {
            seq: 5,
            id: "p-n2-c".into(),
        },
    );
    let out = n.out();
    assert_eq!(sent(&out, a, "peer-left")[0]["id"], "p-n2-c");
}

#[test]
fn the_sweep_of_a_dead_node_announces_its_peers_and_ends_a_local_session_it_let_go() {
    let mut n = Node::new(SignalConfig::default());
    let (a, ann) = with_ann(&mut n, "r", &[member("p-n2-b", "Bob", OTHER)], 2);
    let d = n.counted("10.0.0.4");
    let (dan, _) = n.ask_join(d, "r", "Dan");
    n.rooms.handle_admission(
        n.now,
        d,
        Admission::Admitted {
            seq: 3,
            members: vec![
                member("p-n2-b", "Bob", OTHER),
                member(&ann, "Ann", ME),
                member(&dan, "Dan", ME),
            ],
            password: None,
        },
    );
    n.out();
    // Bob's node died; the sweep (any node's) removes him after the grace period: event 4.
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Left {
            seq: 4,
            id: "p-n2-b".into(),
        },
    );
    let out = n.out();
    assert_eq!(sent(&out, a, "peer-left")[0]["id"], "p-n2-b");
    assert_eq!(sent(&out, d, "peer-left")[0]["id"], "p-n2-b");
    // A messages to him is now refused here.
    n.send(a, json!({"type":"message","to":"p-n2-b","data":1}));
    assert_eq!(error_of(&n.out(), a).as_deref(), Some("unknown-peer"));
    // The store let Dan go (this node was taken for dead): his connection is closed, Ann hears he left.
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Left {
            seq: 5,
            id: dan.clone(),
        },
    );
    let out = n.out();
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Close(c, code) if *c == d && *code == close_code::POLICY)),
        "{out:?}"
    );
    assert_eq!(sent(&out, a, "peer-left")[0]["id"], dan);
}

#[test]
fn a_resume_unknown_here_is_asked_of_the_store_and_keeps_the_id() {
    let mut n = Node::new(SignalConfig::default());
    let (a, _) = with_ann(&mut n, "r", &[member("p-n2-b", "Bob", OTHER)], 1);
    // Bob's node drained; he comes back here with his token.
    let b = n.counted("10.0.0.2");
    n.send(
        b,
        json!({"type":"join","v":1,"room":"r","name":"Bob","resume":"tok-b"}),
    );
    let out = n.out();
    let new_token = out
        .iter()
        .find_map(|o| match o {
            O::Ask(ClusterRequest::Resume {
                token, new_token, ..
            }) if token == "tok-b" => Some(new_token.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Resume request: {out:?}"));
    n.rooms.handle_resumption(
        n.now,
        b,
        Resumption::Resumed {
            id: "p-n2-b".into(),
            name: "Bob".into(),
            seq: 2,
            members: vec![member("p-n2-b", "Bob", ME)],
            password: None,
        },
    );
    let out = n.out();
    let welcome = &sent(&out, b, "welcome")[0];
    assert_eq!(welcome["id"], "p-n2-b");
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["resume"], json!(new_token));
    assert!(
        sent(&out, a, "peer-left").is_empty() && sent(&out, a, "peer-joined").is_empty(),
        "Ann sees nothing: {out:?}"
    );
    // Ann's messages now go to Bob's connection here, not to the store.
    n.send(a, json!({"type":"message","to":"p-n2-b","data":"hi"}));
    let out = n.out();
    assert_eq!(sent(&out, b, "message").len(), 1, "{out:?}");
    assert!(
        !out.iter()
            .any(|o| matches!(o, O::Ask(ClusterRequest::Forward { .. })))
    );

    // A token the store does not know is a fresh join.
    let c = n.counted("10.0.0.3");
    n.send(
        c,
        json!({"type":"join","v":1,"room":"r","name":"Cid","resume":"stale"}),
    );
    n.out();
    n.rooms.handle_resumption(n.now, c, Resumption::Unknown);
    let out = n.out();
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Ask(ClusterRequest::Admit { name, .. }) if name == "Cid")),
        "{out:?}"
    );
}

#[test]
fn a_local_peer_that_moved_to_another_node_loses_its_old_connection_here() {
    let mut n = Node::new(SignalConfig::default());
    let (a, ann) = with_ann(&mut n, "r", &[], 1);
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Moved {
            seq: 2,
            node: OTHER.into(),
            id: ann.clone(),
        },
    );
    let out = n.out();
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Close(c, code) if *c == a && *code == close_code::REPLACED)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Ask(ClusterRequest::Unsubscribe { .. }))),
        "no local member left: {out:?}"
    );
    assert_eq!(n.rooms.stats().rooms, 0);
}

#[test]
fn forwards_reach_local_members_of_the_same_room_only_and_cross_nodes_through_the_store() {
    let mut n = Node::new(SignalConfig::default());
    let (a, ann) = with_ann(&mut n, "r", &[member("p-n2-b", "Bob", OTHER)], 1);
    n.send(
        a,
        json!({"type":"message","to":"p-n2-b","from":"forged","data":{"i":1}}),
    );
    let out = n.out();
    match &out[..] {
        [
            O::Ask(ClusterRequest::Forward {
                room,
                to,
                from,
                kind,
                ..
            }),
        ] => {
            assert_eq!(
                (room.as_str(), to.as_str(), from.as_str()),
                ("r", "p-n2-b", ann.as_str())
            );
            assert_eq!(*kind, ForwardKind::Message);
        }
        other => panic!("{other:?}"),
    }
    let payload = || RawValue::from_string(r#"{"data":"x"}"#.into()).expect("json");
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Forward {
            to: ann.clone(),
            from: "p-n2-b".into(),
            kind: ForwardKind::Message,
            payload: payload(),
        },
    );
    let out = n.out();
    assert_eq!(sent(&out, a, "message")[0]["from"], "p-n2-b");
    // The same forward on another room's channel, or to a remote member, is dropped.
    n.rooms.handle_cluster_event(
        n.now,
        "elsewhere",
        ClusterEvent::Forward {
            to: ann.clone(),
            from: "p-n2-b".into(),
            kind: ForwardKind::Message,
            payload: payload(),
        },
    );
    n.rooms.handle_cluster_event(
        n.now,
        "r",
        ClusterEvent::Forward {
            to: "p-n2-b".into(),
            from: ann,
            kind: ForwardKind::Message,
            payload: payload(),
        },
    );
    assert!(n.out().is_empty());
}

#[test]
fn the_connection_cap_is_counted_by_the_store_and_messages_wait_for_its_answer() {
    let mut n = Node::new(SignalConfig {
        max_connections_per_ip: 3,
        ..SignalConfig::default()
    });
    let a = n.open_from("10.0.0.1");
    let out = n.out();
    assert!(
        matches!(&out[..], [O::Ask(ClusterRequest::CountConnection { conn, limit: 3, .. })] if *conn == a),
        "{out:?}"
    );
    // A ping before the answer waits; the answer lets it through.
    n.send(a, json!({"type":"ping"}));
    assert!(n.out().is_empty(), "held");
    n.rooms
        .handle_connection_count(n.now, a, ConnectionCount::Counted);
    assert_eq!(sent(&n.out(), a, "pong").len(), 1);
    // Refused by the store (the address holds its cap on other nodes): closed with too-many-connections.
    let b = n.open_from("10.0.0.1");
    n.out();
    n.send(b, json!({"type":"ping"}));
    n.rooms
        .handle_connection_count(n.now, b, ConnectionCount::Refused);
    let out = n.out();
    assert_eq!(error_of(&out, b).as_deref(), Some("too-many-connections"));
    assert!(
        sent(&out, b, "pong").is_empty(),
        "held messages of a refused connection are dropped"
    );
    assert!(
        matches!(out.last(), Some(O::Close(c, code)) if *c == b && *code == close_code::POLICY)
    );
    assert_eq!(n.rooms.stats().connections, 1);
    // Too many messages while waiting are refused, not buffered without bound.
    let c = n.open_from("10.0.0.1");
    n.out();
    for _ in 0..super::MAX_HELD_MESSAGES + 2 {
        n.send(c, json!({"type":"ping"}));
    }
    assert_eq!(error_of(&n.out(), c).as_deref(), Some("rate-limited"));
    n.rooms
        .handle_connection_count(n.now, c, ConnectionCount::Counted);
    assert_eq!(sent(&n.out(), c, "pong").len(), super::MAX_HELD_MESSAGES);
    // A counted connection that goes is given back; one the store did not count is not.
    n.rooms.disconnect(n.now, a);
    let out = n.out();
    assert!(
        matches!(&out[..], [O::Ask(ClusterRequest::UncountConnection { .. })]),
        "{out:?}"
    );
    // Gone before the answer: a late count is given back at once.
    let d = n.open_from("10.0.0.2");
    n.out();
    n.rooms.disconnect(n.now, d);
    assert!(n.out().is_empty());
    n.rooms
        .handle_connection_count(n.now, d, ConnectionCount::Counted);
    assert!(matches!(
        &n.out()[..],
        [O::Ask(ClusterRequest::UncountConnection { .. })]
    ));
}

#[test]
fn with_the_store_down_the_node_s_own_cap_holds_and_its_counts_are_written_back_later() {
    let mut n = Node::new(SignalConfig {
        max_connections_per_ip: 2,
        ..SignalConfig::default()
    });
    let a = n.open_from("10.0.0.1");
    n.out();
    n.rooms
        .handle_connection_count(n.now, a, ConnectionCount::Unavailable);
    let b = n.open_from("10.0.0.1");
    n.out();
    n.rooms
        .handle_connection_count(n.now, b, ConnectionCount::Unavailable);
    n.send(b, json!({"type":"ping"}));
    assert_eq!(
        sent(&n.out(), b, "pong").len(),
        1,
        "admitted on the local cap"
    );
    let c = n.open_from("10.0.0.1");
    let out = n.out();
    assert_eq!(
        error_of(&out, c).as_deref(),
        Some("too-many-connections"),
        "the local cap still holds"
    );
    assert!(
        !out.iter().any(|o| matches!(o, O::Ask(_))),
        "refused locally without asking the store"
    );
    // Not counted in the store: leaving gives nothing back...
    n.rooms.disconnect(n.now, a);
    assert!(n.out().is_empty());
    // ...until the driver writes the node's counts back: from then on the connection counts.
    let pending = n.open_from("10.0.0.3");
    n.out();
    let mut counts = n.rooms.cluster_ip_counts();
    counts.sort();
    assert_eq!(
        counts,
        vec![("10.0.0.1".parse().expect("ip"), 1)],
        "connections still being counted are left out"
    );
    n.rooms.disconnect(n.now, b);
    assert!(matches!(
        &n.out()[..],
        [O::Ask(ClusterRequest::UncountConnection { .. })]
    ));
    let _ = pending;
}

#[test]
fn without_a_cluster_nothing_is_asked_of_a_store() {
    let mut rooms = Rooms::new(
        SignalConfig::default(),
        Arc::new(Metrics::default()),
        [1; 32],
        Instant::now(),
        0,
    );
    let now = Instant::now();
    let c = rooms.open(
        now,
        ConnInfo {
            ip: Some("10.0.0.1".parse().expect("ip")),
            host: None,
        },
    );
    let msg = parse_client(br#"{"type":"join","v":1,"room":"r","name":"A"}"#).expect("frame");
    rooms.handle_message(now, c, msg).expect("join");
    rooms.handle_timeout(now + Duration::from_secs(60));
    while let Some(o) = rooms.poll_output() {
        assert!(!matches!(o, Output::Cluster(_)), "{o:?}");
    }
}

#[test]
fn the_store_counts_failed_joins_delays_and_backs_off_across_nodes() {
    let mut n = Node::new(SignalConfig::default());
    // The store's failure limits are this node's.
    let a = n.counted("10.0.0.7");
    n.send(
        a,
        json!({"type":"join","v":1,"room":"r","name":"A","password":"x"}),
    );
    let out = n.out();
    let failures = out
        .iter()
        .find_map(|o| match o {
            O::Ask(ClusterRequest::Admit { failures, .. }) => Some(**failures),
            _ => None,
        })
        .expect("an Admit request");
    let d = SignalConfig::default();
    assert_eq!(failures.backoff_after, d.failed_joins_before_backoff);
    assert_eq!(failures.room_delay_after, d.room_failed_joins_before_delay);
    assert!(!failures.delayed, "a fresh join has not waited");

    // A wrong password counted by the store: refused like one node's.
    n.rooms.handle_admission(
        n.now,
        a,
        Admission::WrongPassword {
            failures: 6,
            room_failures: 3,
            backoff: Some(Duration::from_secs(1)),
        },
    );
    assert_eq!(error_of(&n.out(), a).as_deref(), Some("wrong-password"));

    // An address backing off on another node is refused here with the time left.
    let b = n.counted("10.0.0.7");
    n.ask_join(b, "r", "B");
    n.rooms
        .handle_admission(n.now, b, Admission::Backoff(Duration::from_millis(2500)));
    let out = n.out();
    assert_eq!(error_of(&out, b).as_deref(), Some("too-many-joins"));
    let message = sent(&out, b, "error")[0]["message"]
        .as_str()
        .map(str::to_owned);
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("try again in 3 s")),
        "{message:?}"
    );

    // A room guessed at across the cluster: the join waits, then is asked again as delayed, and nothing is
    // answered to the client meanwhile.
    let c = n.counted("10.0.0.8");
    n.ask_join(c, "r", "C");
    n.rooms.handle_admission(n.now, c, Admission::Delay);
    let out = n.out();
    assert!(
        !out.iter()
            .any(|o| matches!(o, O::Send(x, _) | O::Close(x, _) if *x == c)),
        "{out:?}"
    );
    n.rooms.handle_timeout(n.now + Duration::from_millis(500));
    assert!(
        !n.out()
            .iter()
            .any(|o| matches!(o, O::Ask(ClusterRequest::Admit { .. }))),
        "not before the delay"
    );
    n.rooms
        .handle_timeout(n.now + super::ROOM_GUESS_DELAY + Duration::from_millis(1));
    let out = n.out();
    let again = out.iter().find_map(|o| match o {
        O::Ask(ClusterRequest::Admit { failures, .. }) => Some(failures.delayed),
        _ => None,
    });
    assert_eq!(again, Some(true), "{out:?}");
}

/// The per-address failure count of the store (as the Redis address script keeps it), shared by two nodes.
#[derive(Default)]
struct FailureStore {
    failures: std::collections::HashMap<IpAddr, u32>,
    blocked_until: std::collections::HashMap<IpAddr, Instant>,
}

impl FailureStore {
    /// Answers the node's requests for `conn` the way the Redis scripts would.
    fn answer(&mut self, node: &mut Node, conn: ConnId, out: Vec<O>) {
        for o in out {
            let answer = match o {
                O::Ask(ClusterRequest::BadToken { ip, failures, .. }) => {
                    if let Some(left) = self.left(ip, node.now) {
                        Admission::Backoff(left)
                    } else {
                        let n = self.failures.entry(ip).or_insert(0);
                        *n += 1;
                        let backoff = (failures.backoff_after > 0 && *n > failures.backoff_after)
                            .then(|| {
                                failures.first_backoff * (1 << (*n - failures.backoff_after - 1))
                            });
                        if let Some(d) = backoff {
                            self.blocked_until.insert(ip, node.now + d);
                        }
                        Admission::BadToken {
                            failures: *n,
                            backoff,
                        }
                    }
                }
                O::Ask(ClusterRequest::Admit { ip: Some(ip), .. }) => match self.left(ip, node.now)
                {
                    Some(left) => Admission::Backoff(left),
                    None => Admission::Admitted {
                        seq: 1,
                        members: Vec::new(),
                        password: None,
                    },
                },
                _ => continue,
            };
            node.rooms.handle_admission(node.now, conn, answer);
        }
    }

    fn left(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.blocked_until
            .get(&ip)
            .filter(|t| **t > now)
            .map(|t| t.saturating_duration_since(now))
    }
}

#[test]
fn bad_tokens_on_two_nodes_add_up_to_one_back_off() {
    let secret = "cluster-token-secret";
    let config = || SignalConfig {
        join_token_secret: Some(secret.into()),
        failed_joins_before_backoff: 3,
        ..SignalConfig::default()
    };
    let good = crate::token::mint_join_token(
        secret.as_bytes(),
        &crate::token::JoinClaims {
            room: "r".into(),
            exp: 1_767_225_600 + 3600,
            name: None,
        },
    );
    let join = |token: &str| json!({"type":"join","v":1,"room":"r","name":"X","token":token});
    let mut nodes = [Node::named(config(), ME), Node::named(config(), OTHER)];
    nodes[1].now = nodes[0].now; // one clock for the store's back-off
    let mut store = FailureStore::default();
    // Guess i goes to node i % 2: three within the allowance, the fourth starts the back-off; every one of them
    // is answered bad-token, and none is decided by a node alone.
    for i in 0..4 {
        let n = &mut nodes[i % 2];
        let c = n.counted("10.0.0.7");
        n.send(c, join("forged.token"));
        let out = n.out();
        assert!(
            matches!(&out[..], [O::Ask(ClusterRequest::BadToken { failures, .. })] if failures.backoff_after == 3),
            "guess {i}: asked of the store, nothing answered yet: {out:?}"
        );
        store.answer(n, c, out);
        let out = n.out();
        assert_eq!(
            error_of(&out, c).as_deref(),
            Some("bad-token"),
            "guess {i}: {out:?}"
        );
        assert!(out.iter().any(|o| matches!(o, O::Close(x, _) if *x == c)));
    }
    // Each node saw two guesses, below the allowance; together they are four: the address backs off on both, bad
    // token or good.
    for (i, token) in [(0, "forged.token"), (1, good.as_str())] {
        let n = &mut nodes[i];
        let c = n.counted("10.0.0.7");
        n.send(c, join(token));
        let out = n.out();
        store.answer(n, c, out);
        let out = n.out();
        assert_eq!(
            error_of(&out, c).as_deref(),
            Some("too-many-joins"),
            "{out:?}"
        );
        let message = sent(&out, c, "error")[0]["message"]
            .as_str()
            .map(str::to_owned);
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("try again in 1 s")),
            "{i}: {message:?}"
        );
    }
    for n in &nodes {
        assert_eq!(
            n.rooms
                .metrics
                .joins_refused_of(crate::metrics::JoinRefusal::Backoff),
            1,
            "counted in metrics on each node"
        );
    }
    // Another address is not affected.
    let n = &mut nodes[1];
    let c = n.counted("10.0.0.8");
    n.send(c, join(&good));
    let out = n.out();
    store.answer(n, c, out);
    assert_eq!(sent(&n.out(), c, "welcome").len(), 1);
}

#[test]
fn a_bad_token_the_store_cannot_count_is_counted_by_the_node() {
    let mut n = Node::new(SignalConfig {
        join_token_secret: Some("cluster-token-secret".into()),
        failed_joins_before_backoff: 1,
        ..SignalConfig::default()
    });
    let join = json!({"type":"join","v":1,"room":"r","name":"X","token":"forged.token"});
    for _ in 0..2 {
        let c = n.counted("10.0.0.7");
        n.send(c, join.clone());
        n.out();
        n.rooms.handle_admission(n.now, c, Admission::Unavailable);
        assert_eq!(
            error_of(&n.out(), c).as_deref(),
            Some("bad-token"),
            "still bad-token"
        );
    }
    // Past the node's own allowance: refused here without asking the store.
    let c = n.counted("10.0.0.7");
    n.send(c, join);
    let out = n.out();
    assert_eq!(
        error_of(&out, c).as_deref(),
        Some("too-many-joins"),
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, O::Ask(ClusterRequest::BadToken { .. }))),
        "{out:?}"
    );
}
