//! Whatever the signaling server or the network sends, the engine answers with outputs or errors, never a
//! panic: random protocol-shaped messages (right types, wrong or random fields), random JSON and random
//! datagrams, interleaved with time.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use peercall_peer::{Clip, Engine, EngineConfig};
use proptest::prelude::*;
use serde_json::{Value, json};

fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 :=.-]{0,24}".prop_map(Value::from),
        Just(json!("p-b")),
        Just(json!("p-a")),
        Just(json!([{"id": "p-b", "name": "x"}, {"id": 3}, "junk"])),
        Just(
            json!([{"urls": ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"], "username": "u", "credential": "c"}])
        ),
        Just(
            json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0"})
        ),
        Just(json!("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")),
        Just(json!({"t": "chat", "text": "hi"})),
        Just(json!({"t": "id", "id": "p-c"})),
    ]
}

fn message() -> impl Strategy<Value = String> {
    let typ = prop_oneof![
        Just("welcome"),
        Just("peer-joined"),
        Just("peer-left"),
        Just("peer-updated"),
        Just("offer"),
        Just("answer"),
        Just("candidate"),
        Just("message"),
        Just("ice-servers"),
        Just("error"),
        Just("pong"),
        Just("nonsense"),
    ];
    let keys = prop::collection::vec(
        (
            prop_oneof![
                Just("id"),
                Just("from"),
                Just("peers"),
                Just("peer"),
                Just("sdp"),
                Just("candidate"),
                Just("data"),
                Just("iceServers"),
                Just("code"),
                Just("resumed"),
                Just("resume")
            ],
            field(),
        ),
        0..6,
    );
    prop_oneof![
        4 => (typ, keys).prop_map(|(t, kv)| {
            let mut m = json!({"type": t, "v": 1});
            for (k, v) in kv {
                m[k] = v;
            }
            m.to_string()
        }),
        1 => ".{0,40}".prop_map(|s: String| s),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Signal(String),
    Datagram(Vec<u8>),
    Wait(u64),
    Say,
    Lost,
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => message().prop_map(Step::Signal),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Step::Datagram),
        2 => (0u64..20_000).prop_map(Step::Wait),
        1 => Just(Step::Say),
        1 => Just(Step::Lost),
        1 => Just(Step::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn the_engine_never_panics(steps in prop::collection::vec(step(), 1..40)) {
        let mut now = Instant::now();
        let mut e = Engine::new(EngineConfig {
            room: "r".into(), name: "n".into(), password: None, token: None,
            clip: Clip::test_clip().unwrap(), relay_only: false, turn_tcp: false, record: true,
        }, now);
        e.add_socket(now, "127.0.0.1:4000".parse().unwrap());
        e.signaling_connected(now);
        e.handle_signal(now, r#"{"type":"welcome","v":1,"id":"p-a","peers":[{"id":"p-b","name":"B"}],"resume":"r"}"#).unwrap();
        for s in steps {
            match s {
                Step::Signal(text) => { let _ = e.handle_signal(now, &text); }
                Step::Datagram(d) => e.handle_datagram(now, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:4000".parse().unwrap(), &d),
                Step::Wait(ms) => { now += Duration::from_millis(ms); e.handle_timeout(now); }
                Step::Say => e.say("hello"),
                Step::Lost => e.signaling_lost(now),
                Step::Reconnect => e.signaling_connected(now),
            }
            while e.poll_output().is_some() {}
            let _ = e.poll_timeout();
            let _ = e.peers();
        }
        e.leave(now);
    }
}
