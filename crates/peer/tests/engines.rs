//! Two (or three) engines calling each other in-process: a tiny signaling server that speaks protocol v1's
//! forwarding rules, a loss-free network that delivers each Transmit to the engine owning its destination, and
//! injected time (simulated: nothing sleeps).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peercall_peer::{Clip, Engine, EngineConfig, Event, Output};
use serde_json::{Value, json};

struct Node {
    engine: Engine,
    addr: SocketAddr,
    id: Option<String>,
    events: Vec<Event>,
    up: bool,
    /// The server resumes this node's next join as if it carried its old resume token: a restarted client that
    /// kept it (a reloaded browser page keeps it in sessionStorage; a new native Engine cannot be handed one).
    kept_token: bool,
}

/// The room: ids in join order, messages forwarded with `from`.
struct World {
    now: Instant,
    nodes: Vec<Node>,
    /// Signaling frames waiting for delivery: (node index, text).
    to_client: Vec<(usize, String)>,
    next_id: u32,
    /// Datagrams between nodes are dropped while false.
    network: bool,
    datagrams: u64,
    /// The server's resume token; a restarted server knows none of the old ones.
    resume_token: String,
    /// The clip the next node joining sends.
    clip: Clip,
    /// Bits per second node 0 may send: a bottleneck with a 250 ms queue (datagrams wait their turn; a full
    /// queue drops them), so that both delay and loss tell the estimator.
    cap: Option<u64>,
    /// When the bottleneck is free again.
    link_free: Option<Instant>,
    /// Datagrams in the bottleneck's queue: (delivered at, to node, from, to address, bytes).
    queue: Vec<(Instant, usize, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Offers the server forwarded: (from, to).
    offers: Vec<(String, String)>,
    /// Datagrams sent to an address no node owns (any more), by destination.
    strays: BTreeMap<SocketAddr, u64>,
    /// Whether peers in the room hear `peer-joined` (off: they behave as an older peercall, which waited for
    /// the newcomer's offer).
    announce_joins: bool,
}

impl World {
    fn new() -> World {
        World {
            now: Instant::now(),
            nodes: Vec::new(),
            to_client: Vec::new(),
            next_id: 0,
            network: true,
            datagrams: 0,
            resume_token: "r".into(),
            clip: Clip::test_clip().unwrap(),
            cap: None,
            link_free: None,
            queue: Vec::new(),
            offers: Vec::new(),
            strays: BTreeMap::new(),
            announce_joins: true,
        }
    }

    /// What a node joining the room as `name` runs with (the clip the next node sends).
    fn config_for(&self, name: &str) -> EngineConfig {
        EngineConfig {
            room: "room".into(),
            name: name.into(),
            password: None,
            token: None,
            clip: self.clip.clone(),
            relay_only: false,
            turn_tcp: false,
            record: true,
        }
    }

    fn join(&mut self, name: &str, ids: &[&str]) -> usize {
        let config = self.config_for(name);
        let i = self.nodes.len();
        let addr: SocketAddr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
        let mut engine = Engine::new(config, self.now);
        engine.add_socket(self.now, addr);
        engine.signaling_connected(self.now);
        self.nodes.push(Node {
            engine,
            addr,
            id: ids.get(self.next_id as usize).map(|s| s.to_string()),
            events: Vec::new(),
            up: true,
            kept_token: false,
        });
        self.next_id += 1;
        i
    }

    /// Node `i`'s process restarts and comes back with a new Engine (no connections) on a new socket at
    /// `addr`, resumed by the server under its old id: nobody hears it leave or join. Its join is sent at the
    /// next [`World::settle`].
    fn restart_node(&mut self, i: usize, name: &str, addr: SocketAddr) {
        let config = self.config_for(name);
        let mut engine = Engine::new(config, self.now);
        engine.add_socket(self.now, addr);
        let node = &mut self.nodes[i];
        node.engine = engine;
        node.addr = addr;
        node.events.clear();
        node.kept_token = true;
        node.engine.signaling_connected(self.now);
    }

    fn server(&mut self, from: usize, text: &str) {
        let msg: Value = serde_json::from_str(text).unwrap();
        let my_id = self.nodes[from].id.clone().unwrap();
        match msg["type"].as_str().unwrap() {
            "join" => {
                let peers: Vec<Value> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, n)| *j != from && n.up && n.id.is_some())
                    .map(|(_, n)| json!({"id": n.id, "name": "x"}))
                    .collect();
                let resumed = msg["resume"] == self.resume_token.as_str()
                    || std::mem::take(&mut self.nodes[from].kept_token);
                let welcome = json!({"v": 1, "type": "welcome", "id": my_id, "room": "room", "peers": peers,
                    "iceServers": [], "resume": self.resume_token, "resumed": resumed, "polite": "lower-id"});
                self.to_client.push((from, welcome.to_string()));
                if resumed || !self.announce_joins {
                    return; // nobody else sees a resumed peer leave or join
                }
                for j in 0..self.nodes.len() {
                    if j != from && self.nodes[j].up {
                        let m = json!({"v": 1, "type": "peer-joined", "peer": {"id": my_id, "name": msg["name"]}});
                        self.to_client.push((j, m.to_string()));
                    }
                }
            }
            "offer" | "answer" | "candidate" | "message" => {
                let to = msg["to"].as_str().unwrap();
                let j = self
                    .nodes
                    .iter()
                    .position(|n| n.id.as_deref() == Some(to))
                    .unwrap();
                if msg["type"] == "offer" {
                    self.offers.push((my_id.clone(), to.to_string()));
                }
                let mut fwd = msg.clone();
                fwd.as_object_mut().unwrap().remove("to");
                fwd["from"] = json!(my_id);
                fwd["v"] = json!(1);
                self.to_client.push((j, fwd.to_string()));
            }
            "leave" => {}
            other => panic!("unexpected {other}"),
        }
    }

    /// Runs every engine until nothing is left to do at this instant.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].engine.poll_output() {
                    busy = true;
                    match out {
                        Output::Signal(text) => self.server(i, &text),
                        Output::Transmit(t) => {
                            assert_eq!(t.source, self.nodes[i].addr);
                            if !self.network {
                                continue;
                            }
                            if let Some(j) = self.nodes.iter().position(|n| n.addr == t.destination)
                                && i == 0
                                && let Some(cap) = self.cap
                            {
                                let start = self.link_free.unwrap_or(self.now).max(self.now);
                                if start > self.now + Duration::from_millis(250) {
                                    continue; // the queue is full
                                }
                                let bits = (t.contents.len() as u64 + 28) * 8;
                                let done = start + Duration::from_micros(bits * 1_000_000 / cap);
                                self.link_free = Some(done);
                                self.queue
                                    .push((done, j, t.source, t.destination, t.contents));
                            } else if let Some(j) =
                                self.nodes.iter().position(|n| n.addr == t.destination)
                            {
                                self.datagrams += 1;
                                let now = self.now;
                                let src = t.source;
                                self.nodes[j].engine.handle_datagram(
                                    now,
                                    src,
                                    t.destination,
                                    &t.contents,
                                );
                            } else {
                                *self.strays.entry(t.destination).or_default() += 1;
                            }
                        }
                        Output::Event(e) => self.nodes[i].events.push(e),
                        Output::Resolve(_) => {}
                    }
                }
            }
            let pending = std::mem::take(&mut self.to_client);
            for (j, text) in &pending {
                busy = true;
                let now = self.now;
                self.nodes[*j].engine.handle_signal(now, text).unwrap();
            }
            if !busy {
                return;
            }
        }
        panic!("engines never settled");
    }

    /// Advances simulated time by `total`, waking every engine when it asks (at most every 10 ms).
    fn run(&mut self, total: Duration) {
        let end = self.now + total;
        self.settle();
        while self.now < end {
            let mut next = (self.now + Duration::from_millis(10)).min(end);
            for q in &self.queue {
                next = next.min(q.0.max(self.now + Duration::from_millis(1)));
            }
            for n in &self.nodes {
                if let Some(t) = n.engine.poll_timeout() {
                    next = next.min(t.max(self.now + Duration::from_millis(1)));
                }
            }
            self.now = next;
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
                .into_iter()
                .partition(|q| q.0 <= now);
            self.queue = later;
            for (_, j, src, dst, bytes) in due {
                self.datagrams += 1;
                self.nodes[j].engine.handle_datagram(now, src, dst, &bytes);
            }
            for i in 0..self.nodes.len() {
                let now = self.now;
                self.nodes[i].engine.handle_timeout(now);
            }
            self.settle();
        }
    }

    /// The signaling server restarts: every session is lost; the nodes come back one by one and get new ids.
    fn restart_server(&mut self, new_ids: &[&str]) {
        let now = self.now;
        for n in &mut self.nodes {
            n.up = false;
            n.engine.signaling_lost(now);
        }
        self.to_client.clear();
        self.resume_token = "r-after-restart".into();
        for (i, id) in new_ids.iter().enumerate() {
            self.nodes[i].id = Some(id.to_string());
            self.nodes[i].up = true;
            self.nodes[i].engine.signaling_connected(now);
            self.settle();
        }
    }

    fn status(&self, i: usize) -> peercall_peer::PeerStatus {
        let peers = self.nodes[i].engine.peers();
        assert_eq!(peers.len(), 1, "node {i} has {} peers", peers.len());
        peers[0].clone()
    }
}

fn media_flows(s: &peercall_peer::PeerStatus) {
    assert!(s.connected, "{s:?}");
    assert!(s.video_frames_rx >= 20, "{s:?}");
    assert!(s.audio_packets_rx >= 50, "{s:?}");
    assert!(s.video_frames_tx >= 20, "{s:?}");
    assert!(s.video_acked && s.audio_acked, "{s:?}");
}

#[test]
fn two_engines_call_each_other_with_media_both_ways_and_chat() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(100));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(6));
    for i in [a, b] {
        let s = w.status(i);
        media_flows(&s);
        assert_eq!(s.route.map(|r| r.as_str()), Some("host"));
        assert!(s.rtt.is_some());
        assert!(s.channel_open);
    }
    w.nodes[b].engine.say("hello from Bob");
    w.run(Duration::from_millis(500));
    let chats: Vec<String> = w.nodes[a]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Chat { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(chats, vec!["hello from Bob".to_string()]);
    // Ann, in the room, offered when she heard Bob join; Bob (the newcomer) only answered.
    assert_eq!(w.offers, vec![("p-a".to_string(), "p-b".to_string())]);
    assert!(
        w.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::Joined { peers: 1, .. }))
    );
    assert!(
        w.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerJoined { .. }))
    );
    // Recorded frames are reported with increasing RTP time.
    let times: Vec<u64> = w.nodes[a]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Media {
                kind: peercall_peer::Kind::Video,
                rtp,
                ..
            } => Some(*rtp),
            _ => None,
        })
        .collect();
    assert!(times.len() >= 20);
    assert!(times.windows(2).all(|p| p[1] > p[0]));
}

#[test]
fn a_newcomer_offers_itself_when_the_room_does_not() {
    let mut w = World::new();
    w.announce_joins = false; // Ann never hears of Bob: as an older peercall, she waits for his offer
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(100));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(peercall_peer::engine::FIRST_OFFER_WAIT - Duration::from_millis(200));
    assert!(
        w.offers.is_empty(),
        "Bob waits for Ann's offer first: {:?}",
        w.offers
    );
    w.run(Duration::from_secs(7));
    assert_eq!(w.offers, vec![("p-b".to_string(), "p-a".to_string())]);
    for i in [a, b] {
        media_flows(&w.status(i));
    }
}

#[test]
fn simultaneous_ice_restarts_resolve_by_the_polite_rule() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(50));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(3));
    assert!(w.status(a).connected && w.status(b).connected);
    // Both restart at the same instant: the offers cross (glare).
    let now = w.now;
    w.nodes[a].engine.restart_ice(now, "p-b", "test");
    w.nodes[b].engine.restart_ice(now, "p-a", "test");
    w.settle();
    let collisions = w.status(a).collisions + w.status(b).collisions;
    assert!(collisions >= 1, "the offers should have crossed");
    let before = (w.status(a).video_frames_rx, w.status(b).video_frames_rx);
    w.run(Duration::from_secs(4));
    let (sa, sb) = (w.status(a), w.status(b));
    assert!(sa.connected && sb.connected, "{sa:?} {sb:?}");
    assert!(sa.video_frames_rx > before.0 + 20 && sb.video_frames_rx > before.1 + 20);
}

#[test]
fn a_network_outage_leads_to_an_ice_restart_and_media_comes_back() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(50));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(3));
    assert!(w.status(a).connected);
    w.network = false;
    w.run(Duration::from_secs(12));
    let restarted = w.nodes[a]
        .events
        .iter()
        .chain(&w.nodes[b].events)
        .any(|e| matches!(e, Event::IceRestart { .. }));
    assert!(
        restarted,
        "an outage must restart ICE: {:?}",
        w.nodes[a]
            .events
            .iter()
            .filter(|e| !matches!(e, Event::Media { .. }))
            .collect::<Vec<_>>()
    );
    assert!(
        w.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
    );
    w.network = true;
    let before = w.status(a).video_frames_rx;
    w.run(Duration::from_secs(15));
    let s = w.status(a);
    assert!(s.connected, "{s:?}");
    assert!(s.video_frames_rx > before + 20, "{s:?}");
}

#[test]
fn three_engines_form_a_mesh() {
    let mut w = World::new();
    let ids = ["p-a", "p-b", "p-c"];
    w.join("Ann", &ids);
    w.run(Duration::from_millis(50));
    w.join("Bob", &ids);
    w.run(Duration::from_millis(50));
    w.join("Cid", &ids);
    w.run(Duration::from_secs(6));
    for n in &w.nodes {
        let peers = n.engine.peers();
        assert_eq!(peers.len(), 2);
        for p in peers {
            assert!(p.connected && p.video_frames_rx >= 20, "{p:?}");
        }
    }
}

#[test]
fn refused_joins_and_garbage_are_reported_not_panicked_on() {
    let now = Instant::now();
    let mut e = Engine::new(
        EngineConfig {
            room: "r".into(),
            name: "n".into(),
            password: Some("pw".into()),
            token: None,
            clip: Clip::default(),
            relay_only: false,
            turn_tcp: false,
            record: false,
        },
        now,
    );
    e.signaling_connected(now);
    let Some(Output::Signal(join)) = e.poll_output() else {
        panic!()
    };
    let join: Value = serde_json::from_str(&join).unwrap();
    assert_eq!(join["password"], "pw");
    assert_eq!(join["v"], 1);
    assert!(e.handle_signal(now, "not json").is_err());
    assert!(e.handle_signal(now, "{}").is_err());
    e.handle_signal(now, r#"{"type":"offer","from":"x","sdp":"garbage"}"#)
        .unwrap();
    e.handle_signal(
        now,
        r#"{"type":"candidate","from":"x","candidate":{"candidate":"junk"}}"#,
    )
    .unwrap();
    e.handle_signal(now, r#"{"type":"welcome","peers":"nope"}"#)
        .unwrap();
    e.handle_signal(
        now,
        r#"{"type":"error","code":"wrong-password","message":"no"}"#,
    )
    .unwrap();
    let mut fatal = None;
    while let Some(o) = e.poll_output() {
        if let Output::Event(Event::Fatal { code, .. }) = o {
            fatal = Some(code);
        }
    }
    assert_eq!(fatal.as_deref(), Some("wrong-password"));
    e.handle_datagram(
        now,
        "1.2.3.4:5".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        &[0, 1, 2],
    );
    e.handle_timeout(now + Duration::from_secs(1));
}

#[test]
fn a_signaling_server_restart_keeps_the_call_and_rekeys_the_peers() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(50));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(3));
    assert!(w.status(a).connected && w.status(b).connected);
    let before = (w.status(a).video_frames_rx, w.status(b).video_frames_rx);
    w.restart_server(&["q-a", "q-b"]);
    w.run(Duration::from_secs(5));
    let (sa, sb) = (w.status(a), w.status(b));
    // Same connections (no new offer, no restart), now known by the new ids, media still flowing.
    assert_eq!(sa.id, "q-b", "{sa:?}");
    assert_eq!(sb.id, "q-a", "{sb:?}");
    assert!(sa.connected && sb.connected);
    assert!(sa.video_frames_rx > before.0 + 50 && sb.video_frames_rx > before.1 + 50);
    assert_eq!(w.nodes[a].engine.id(), Some("q-a"));
    // Each saw the other re-key, and nobody leave or join.
    for (i, old, new) in [(a, "p-b", "q-b"), (b, "p-a", "q-a")] {
        let rekeys: Vec<(&str, &str)> = w.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Rekeyed { old, id, .. } => Some((old.as_str(), id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(rekeys, vec![(old, new)]);
        let churn = w.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::PeerLeft { .. }))
            .count();
        assert_eq!(
            churn,
            0,
            "node {i}: {:?}",
            w.nodes[i]
                .events
                .iter()
                .filter(|e| !matches!(e, Event::Media { .. }))
                .collect::<Vec<_>>()
        );
    }
    // And they can still negotiate: an ICE restart over the new ids works.
    let now = w.now;
    w.nodes[b].engine.restart_ice(now, "q-a", "test");
    w.run(Duration::from_secs(3));
    assert!(w.status(a).connected && w.status(b).connected);
    assert_eq!(
        w.status(b).restarts,
        0,
        "restarts reset once connected again"
    );
    assert!(
        w.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::IceRestart { .. }))
    );
}

#[test]
fn a_dropped_signaling_connection_resumes_and_runs_the_restart_that_waited() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(50));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(3));
    assert!(w.status(a).connected);
    // Bob's socket drops; while it is down he wants an ICE restart: it must wait.
    let now = w.now;
    w.nodes[b].engine.signaling_lost(now);
    w.nodes[b].engine.restart_ice(now, "p-a", "test");
    w.settle();
    assert!(
        !w.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::IceRestart { .. }))
    );
    w.run(Duration::from_secs(2));
    assert!(w.status(b).connected, "media does not need signaling");
    // Back with the resume token: same id, same connection, and the restart goes out now.
    w.nodes[b].engine.signaling_connected(w.now);
    w.settle();
    assert!(
        w.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::Joined { resumed: true, .. }))
    );
    assert!(
        w.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::IceRestart { .. }))
    );
    let before = w.status(a).video_frames_rx;
    w.run(Duration::from_secs(3));
    let (sa, sb) = (w.status(a), w.status(b));
    assert!(sa.connected && sb.connected && sa.id == "p-b" && sb.id == "p-a");
    assert!(sa.video_frames_rx > before + 20);
}

/// The test clip's video with `extra` bytes appended to every frame: a "higher bitrate" encoding with the same
/// keyframes (nobody decodes it here; str0m only packetizes it).
/// Each ends with a marker naming its encoding, so the receiver can tell which one a frame came from.
fn padded(extra: usize, marker: &[u8; 4]) -> Vec<peercall_peer::media::VideoFrame> {
    let mut v = Clip::test_clip().unwrap().video;
    for f in &mut v {
        f.data.extend(std::iter::repeat_n(0u8, extra));
        f.data.extend_from_slice(marker);
    }
    v
}

#[test]
fn several_encodings_follow_the_bandwidth_estimate_switching_at_keyframes() {
    let mut w = World::new();
    // Ann sends the clip at three bitrates (about 0.3, 1 and 2.5 Mbit/s with headers); the link from her carries
    // 1.6 Mbit/s.
    let mut clip = Clip::test_clip().unwrap();
    clip.video_alternatives = vec![padded(5000, b"ENC1"), padded(20_000, b"ENC2")];
    w.clip = clip;
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.clip = Clip::test_clip().unwrap();
    w.run(Duration::from_millis(50));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.cap = Some(1_600_000);
    let mut seen = Vec::new();
    for _ in 0..30 {
        w.run(Duration::from_secs(1));
        let s = w.status(a);
        seen.push((s.estimate_bps, s.video_encoding.0, s.video_bps));
    }
    let s = w.status(a);
    assert_eq!(s.video_encoding.1, 3, "{s:?}");
    assert!(s.estimate_bps.is_some(), "str0m gives estimates: {seen:?}");
    // It went up from the start (300 kbit/s: the lowest) to the middle one, and the top one never stayed.
    assert!(seen.iter().any(|(_, e, _)| *e == 1), "{seen:?}");
    let last: Vec<usize> = seen.iter().rev().take(10).map(|(_, e, _)| *e).collect();
    assert!(
        last.iter().all(|e| *e == 1),
        "settles on the one that fits: {seen:?}"
    );
    assert!(s.video_bps.unwrap() < 1_600_000);
    // Bob still decodes a stream: frames keep arriving.
    let before = w.status(b).video_frames_rx;
    w.run(Duration::from_secs(2));
    assert!(w.status(b).video_frames_rx > before + 20);
    // The cap lifts: up to the top one.
    w.cap = None;
    let mut up = Vec::new();
    for _ in 0..60 {
        w.run(Duration::from_secs(1));
        let s = w.status(a);
        up.push((s.estimate_bps, s.video_encoding.0));
        if s.video_encoding.0 == 2 {
            break;
        }
    }
    let s = w.status(a);
    eprintln!(
        "capped at 1.6 Mbit/s: {seen:?}\nuncapped, up to the top after {} s: {up:?}",
        up.len()
    );
    assert_eq!(s.video_encoding.0, 2, "{up:?}");
    assert!(s.video_switches >= 2);
    // Every change of encoding Bob sees (without a loss just before it) starts with a keyframe.
    let mut last = None;
    let mut changes = 0;
    for e in &w.nodes[b].events {
        if let Event::Media {
            kind: peercall_peer::Kind::Video,
            data,
            contiguous,
            ..
        } = e
        {
            let class = if data.ends_with(b"ENC2") {
                2
            } else if data.ends_with(b"ENC1") {
                1
            } else {
                0
            };
            if last.is_some_and(|l| l != class) && *contiguous {
                changes += 1;
                assert_eq!(
                    data[0] & 1,
                    0,
                    "a switch to encoding {class} began with a delta frame"
                );
            }
            last = Some(class);
        }
    }
    assert!(changes >= 2, "{changes} switches seen by the receiver");
}

#[test]
fn an_orphan_whose_connection_dies_is_dropped() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(50));
    let _b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(3));
    assert!(w.status(a).connected);
    // The server restarts; only Ann comes back, and the network between them fails: Bob cannot tell Ann his
    // new id, and Ann cannot ICE-restart a peer she cannot signal.
    let now = w.now;
    for n in &mut w.nodes {
        n.up = false;
        n.engine.signaling_lost(now);
    }
    w.resume_token = "after".into();
    w.nodes[a].id = Some("q-a".into());
    w.nodes[a].up = true;
    w.nodes[a].engine.signaling_connected(now);
    w.settle();
    w.run(Duration::from_secs(2));
    assert_eq!(
        w.nodes[a].engine.peers().len(),
        1,
        "an orphan that is up stays"
    );
    w.network = false;
    // 5 s of silence make it disconnected, 2.5 s more and it goes.
    w.run(Duration::from_secs(9));
    assert!(
        w.nodes[a].engine.peers().is_empty(),
        "{:?}",
        w.nodes[a].engine.peers()
    );
}

#[test]
fn a_peer_that_lost_its_connection_and_offers_a_new_one_is_answered_afresh() {
    let mut w = World::new();
    let a = w.join("Ann", &["p-a", "p-b"]);
    w.run(Duration::from_millis(50));
    let b = w.join("Bob", &["p-a", "p-b"]);
    w.run(Duration::from_secs(6));
    media_flows(&w.status(a));
    media_flows(&w.status(b));
    // Bob's process restarts: his connection to Ann is gone with it, while Ann's end of it is still up. He comes
    // back on a new socket, resumed under the same id, and offers Ann a new connection (another SDP session id).
    let old_addr = w.nodes[b].addr;
    w.restart_node(b, "Bob", "127.0.0.1:11001".parse().unwrap());
    let restarted_at = w.now;
    // Nothing has reached Ann yet: her old link is up when the new offer comes.
    assert!(w.status(a).connected, "{:?}", w.status(a));
    w.settle();
    assert!(
        w.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::Joined { resumed: true, .. })),
        "{:?}",
        w.nodes[b].events
    );
    assert_eq!(
        w.offers.last(),
        Some(&("p-b".to_string(), "p-a".to_string()))
    );
    let old_stray = w.strays.get(&old_addr).copied().unwrap_or(0);
    w.run(Duration::from_secs(6));
    // One Bob on Ann's side (w.status asserts it), on the new connection: media both ways again (receivers' reports
    // included), without the old connection timing out first.
    let (sa, sb) = (w.status(a), w.status(b));
    assert_eq!(sa.id, "p-b");
    assert_eq!(sb.id, "p-a");
    media_flows(&sa);
    media_flows(&sb);
    assert_eq!(sa.restarts, 0, "{sa:?}");
    // Ann's old connection is closed: nothing more goes to Bob's old socket.
    assert_eq!(
        w.strays.get(&old_addr).copied().unwrap_or(0),
        old_stray,
        "{:?}",
        w.strays
    );
    // And Ann saw no one leave, join, or drop out: the same Bob, reconnected.
    let noticed: Vec<&Event> = w.nodes[a]
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::PeerLeft { .. }
                    | Event::PeerJoined { .. }
                    | Event::Disconnected { .. }
                    | Event::IceRestart { .. }
            )
        })
        .collect();
    assert_eq!(
        noticed.len(),
        1,
        "only Bob's first join: {noticed:?} (restarted at {restarted_at:?})"
    );
}
