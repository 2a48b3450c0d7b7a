//! The signaling server over real sockets: axum on 127.0.0.1:0, tokio-tungstenite clients.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peercall_signal::{SignalConfig, SignalService, TurnAdvert};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

async fn serve(config: SignalConfig) -> (SignalService, SocketAddr) {
    let svc = SignalService::new(config);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let app = svc
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (svc, addr)
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as seen by the client.
#[derive(Debug, PartialEq)]
enum Ended {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    Dropped,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = timeout(WAIT, connect_async(format!("ws://{addr}/ws")))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned()))
            .await
            .expect("send");
    }

    /// The next text message as JSON (pings and pongs skipped).
    async fn recv(&mut self) -> Value {
        loop {
            let msg = timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).expect("server sends JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Nothing arrives for a while (pings aside).
    async fn quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    async fn join(&mut self, room: &str, name: &str) -> Value {
        self.send(json!({"type":"join","v":1,"room":room,"name":name}))
            .await;
        let w = self.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        w
    }

    /// Reads until the connection ends; every text message seen on the way is returned too.
    async fn ended(&mut self) -> (Ended, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("the server ends the connection in time")
            {
                Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(&t).expect("JSON")),
                Some(Ok(Message::Close(Some(f)))) => {
                    return (Ended::Close(f.code.into(), f.reason.to_string()), seen);
                }
                Some(Ok(Message::Close(None))) => return (Ended::Close(1005, String::new()), seen),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (Ended::Dropped, seen),
            }
        }
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id is a string").to_owned()
}

/// Two clients in one room, welcome/presence consumed: (a, b, id a, id b).
async fn pair(addr: SocketAddr, room: &str) -> (Client, Client, String, String) {
    let mut a = Client::connect(addr).await;
    let wa = a.join(room, "Ann").await;
    let mut b = Client::connect(addr).await;
    let wb = b.join(room, "Bob").await;
    let joined = a.recv().await;
    assert_eq!(
        joined,
        json!({"v":1,"type":"peer-joined","peer":{"id": id(&wb), "name":"Bob"}})
    );
    assert_eq!(wb["peers"], json!([{"id": id(&wa), "name": "Ann"}]));
    (a, b, id(&wa), id(&wb))
}

#[tokio::test]
async fn two_clients_exchange_offer_answer_candidates_with_from_stamped() {
    let (_svc, addr) = serve(SignalConfig::default()).await;
    let (mut a, mut b, ida, idb) = pair(addr, "call").await;

    a.send(json!({"type":"offer","to":idb,"sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"v":1,"type":"offer","from":ida,"sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"})
    );
    b.send(json!({"type":"answer","to":ida,"sdp":"v=0 answer"}))
        .await;
    assert_eq!(b_from(&a.recv().await), (idb.clone(), "answer".into()));
    let cand = json!({"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0});
    b.send(json!({"type":"candidate","to":ida,"candidate":cand}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"v":1,"type":"candidate","from":idb,"candidate":cand})
    );
    b.send(json!({"type":"candidate","to":ida,"candidate":null}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"v":1,"type":"candidate","from":idb,"candidate":null})
    );
    a.send(json!({"type":"message","to":idb,"data":{"chat":"hello"}}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"v":1,"type":"message","from":ida,"data":{"chat":"hello"}})
    );
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await, json!({"v":1,"type":"pong"}));
    a.quiet().await;
    b.quiet().await;
}

fn b_from(v: &Value) -> (String, String) {
    (
        v["from"].as_str().expect("from").to_owned(),
        v["type"].as_str().expect("type").to_owned(),
    )
}

#[tokio::test]
async fn forged_from_is_replaced_by_the_real_sender() {
    let (_svc, addr) = serve(SignalConfig::default()).await;
    let (mut a, mut b, ida, idb) = pair(addr, "call").await;
    // Ann claims to be Bob (writing to Bob) and to be someone else entirely.
    a.send(json!({"type":"message","to":idb,"from":idb,"data":"spoof-1"}))
        .await;
    a.send(json!({"type":"offer","to":idb,"from":"p-000000000000","sdp":"x"}))
        .await;
    let m1 = b.recv().await;
    let m2 = b.recv().await;
    assert_eq!(m1["from"], json!(ida));
    assert_eq!(m2["from"], json!(ida));
    a.quiet().await;
}

#[tokio::test]
async fn a_peer_of_another_room_is_unreachable() {
    let (_svc, addr) = serve(SignalConfig::default()).await;
    let (mut a, mut b, _ida, _idb) = pair(addr, "call").await;
    let mut c = Client::connect(addr).await;
    let wc = c.join("other", "Cid").await;
    a.send(json!({"type":"offer","to":id(&wc),"sdp":"x"})).await;
    let e = a.recv().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "unknown-peer");
    assert_eq!(e["ref"], "offer");
    c.quiet().await;
    b.quiet().await;
    // And the other way round.
    c.send(json!({"type":"message","to":_ida,"data":1})).await;
    assert_eq!(c.recv().await["code"], "unknown-peer");
    a.quiet().await;
}

#[tokio::test]
async fn bad_frames_get_the_right_error_and_nobody_else_hears() {
    let config = SignalConfig {
        max_message_bytes: 1024,
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let (mut a, mut b, _ida, idb) = pair(addr, "call").await;

    a.send_text("{not json").await;
    let e = a.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad-json"))
    );
    a.send_text(r#"{"type":"teleport","to":"x"}"#).await;
    assert_eq!(a.recv().await["code"], "unknown-type");
    a.send_text(r#"{"type":"offer","to":7}"#).await;
    let e = a.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("bad-field"), Some("offer"))
    );
    // Over the limit but under the hard cap: answered with too-large, and the connection stays.
    let big = json!({"type":"message","to":idb,"data":"x".repeat(1500)}).to_string();
    a.send_text(&big).await;
    assert_eq!(a.recv().await["code"], "too-large");
    a.ws.send(Message::Binary(vec![1, 2, 3]))
        .await
        .expect("send binary");
    assert_eq!(a.recv().await["code"], "bad-json");
    a.send(json!({"type":"join","v":1,"room":"call","name":"again"}))
        .await;
    assert_eq!(a.recv().await["code"], "already-joined");
    b.quiet().await;

    // Still a working connection.
    a.send(json!({"type":"message","to":idb,"data":"still here"}))
        .await;
    assert_eq!(b.recv().await["data"], "still here");

    let mut text = String::new();
    svc.metrics_text(&mut text);
    for line in [
        "peercall_signal_errors_total{code=\"bad-json\"} 2",
        "peercall_signal_errors_total{code=\"unknown-type\"} 1",
        "peercall_signal_errors_total{code=\"too-large\"} 1",
        "peercall_signal_messages_total{type=\"message\"} 1",
        "peercall_signal_connections 2",
        "peercall_signal_rooms 1",
        "peercall_signal_peers 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn an_absurd_frame_breaks_only_that_connection() {
    let config = SignalConfig {
        max_message_bytes: 1024,
        resume_grace: Duration::from_secs(30),
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let (mut a, mut b, _ida, _idb) = pair(addr, "call").await;
    let _ = a.ws.send(Message::Text("x".repeat(1 << 20))).await;
    let (end, _) = a.ended().await;
    assert!(matches!(end, Ended::Dropped | Ended::Close(..)), "{end:?}");
    b.quiet().await; // inside the grace period nobody is told
    assert_eq!(svc.stats().connections, 1);
}

#[tokio::test]
async fn rate_limit_then_abuse_close() {
    let config = SignalConfig {
        max_messages_per_sec: 2,
        max_consecutive_errors: 1000,
        ..SignalConfig::default()
    };
    let (_svc, addr) = serve(config).await;
    let mut a = Client::connect(addr).await;
    for _ in 0..10 {
        a.send(json!({"type":"ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..10 {
        let m = a.recv().await;
        match (m["type"].as_str(), m["code"].as_str()) {
            (Some("pong"), _) => pongs += 1,
            (Some("error"), Some("rate-limited")) => limited += 1,
            _ => panic!("unexpected {m}"),
        }
    }
    assert!(
        (4..=5).contains(&pongs),
        "burst of 4 (2/s x 2), got {pongs} pongs"
    );
    assert_eq!(pongs + limited, 10);

    // With the default error budget (here 5), repeated errors close the connection for abuse.
    let config = SignalConfig {
        max_consecutive_errors: 5,
        ..SignalConfig::default()
    };
    let (_svc, addr) = serve(config).await;
    let (mut a, mut b, _ida, idb) = pair(addr, "call").await;
    for _ in 0..5 {
        a.send_text("garbage").await;
    }
    let (end, seen) = a.ended().await;
    let codes: Vec<_> = seen
        .iter()
        .map(|m| m["code"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        codes,
        [
            "bad-json", "bad-json", "bad-json", "bad-json", "bad-json", "abuse"
        ]
    );
    assert_eq!(end, Ended::Close(1008, "abuse".into()));
    // Ann is gone for good (no resume after abuse): Bob is told she left, nothing else.
    let left = b.recv().await;
    assert_eq!(left["type"], "peer-left");
    b.quiet().await;
    let _ = idb;
}

#[tokio::test]
async fn room_full_closes_with_room_full() {
    let config = SignalConfig {
        max_peers_per_room: 2,
        ..SignalConfig::default()
    };
    let (_svc, addr) = serve(config).await;
    let (mut a, mut b, _, _) = pair(addr, "call").await;
    let mut c = Client::connect(addr).await;
    c.send(json!({"type":"join","v":1,"room":"call","name":"Cid"}))
        .await;
    let (end, seen) = c.ended().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["code"], "room-full");
    assert_eq!(seen[0]["ref"], "join");
    assert_eq!(end, Ended::Close(1008, "room-full".into()));
    a.quiet().await;
    b.quiet().await;
}

#[tokio::test]
async fn resume_keeps_the_id_and_nobody_notices() {
    let config = SignalConfig {
        resume_grace: Duration::from_secs(10),
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let mut a = Client::connect(addr).await;
    let wa = a.join("call", "Ann").await;
    let mut b = Client::connect(addr).await;
    let wb = b.join("call", "Bob").await;
    a.recv().await; // peer-joined
    drop(a); // the socket just dies, no leave
    // Wait until the server has noticed.
    for _ in 0..100 {
        if svc.stats().connections == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(svc.stats().connections, 1);
    assert_eq!(
        svc.stats().peers,
        2,
        "Ann keeps her place during the grace period"
    );
    b.send(json!({"type":"message","to":id(&wa),"data":"are you there?"}))
        .await;

    let mut a2 = Client::connect(addr).await;
    a2.send(json!({"type":"join","v":1,"room":"call","name":"Ann","resume":wa["resume"]}))
        .await;
    let w2 = a2.recv().await;
    assert_eq!(w2["type"], "welcome");
    assert_eq!(w2["id"], wa["id"]);
    assert_eq!(w2["resumed"], json!(true));
    assert_eq!(w2["peers"], json!([{"id": id(&wb), "name": "Bob"}]));
    assert_eq!(
        a2.recv().await["data"],
        "are you there?",
        "what was sent meanwhile is delivered"
    );
    b.quiet().await;
    // The call goes on with the same id.
    b.send(json!({"type":"offer","to":id(&wa),"sdp":"restart"}))
        .await;
    assert_eq!(a2.recv().await["from"], wb["id"]);
}

#[tokio::test]
async fn without_resume_the_others_see_peer_left_after_the_grace() {
    let config = SignalConfig {
        resume_grace: Duration::from_millis(400),
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let (a, mut b, ida, _) = pair(addr, "call").await;
    let dropped = std::time::Instant::now();
    drop(a);
    let left = b.recv().await;
    assert_eq!(left, json!({"v":1,"type":"peer-left","id": ida}));
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "not before the grace period: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "soon after it: {waited:?}");
    assert_eq!(svc.stats().peers, 1);
}

#[tokio::test]
async fn leave_is_announced_at_once() {
    let config = SignalConfig {
        resume_grace: Duration::from_secs(30),
        ..SignalConfig::default()
    };
    let (_svc, addr) = serve(config).await;
    let (mut a, mut b, ida, _) = pair(addr, "call").await;
    a.send(json!({"type":"leave"})).await;
    assert_eq!(b.recv().await, json!({"v":1,"type":"peer-left","id": ida}));
    let (end, _) = a.ended().await;
    assert_eq!(end, Ended::Close(1000, "leave".into()));
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let config = SignalConfig {
        max_connections_per_ip: 3,
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(addr).await);
    }
    let mut extra = Client::connect(addr).await;
    let (end, seen) = extra.ended().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["code"], "too-many-connections");
    assert_eq!(end, Ended::Close(1008, "too-many-connections".into()));
    assert_eq!(svc.stats().connections, 3);
    // Closing one frees a slot.
    let mut first = held.remove(0);
    first.ws.close(None).await.expect("close");
    let _ = first.ended().await;
    for _ in 0..100 {
        if svc.stats().connections == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = Client::connect(addr).await;
    again.join("r", "Back").await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_ping_timeout() {
    let config = SignalConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(400),
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    // A reading client answers pings (tungstenite replies automatically) and stays.
    let mut alive = Client::connect(addr).await;
    let w = alive.join("r", "Alive").await;
    // A client that never reads never answers pings.
    let mut silent = Client::connect(addr).await;
    let started = std::time::Instant::now();
    let mut seen_ping = false;
    while started.elapsed() < Duration::from_millis(1200) {
        match timeout(Duration::from_millis(50), alive.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => seen_ping = true,
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Ok(other) => panic!("alive client lost its connection: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(seen_ping, "the server pings");
    assert_eq!(svc.stats().connections, 1, "only the silent one was closed");
    let (end, _) = silent.ended().await;
    assert_eq!(end, Ended::Dropped);
    alive.send(json!({"type":"ping"})).await;
    assert_eq!(alive.recv().await["type"], "pong");
    let mut text = String::new();
    svc.metrics_text(&mut text);
    assert!(
        text.contains("peercall_signal_ping_timeouts_total 1"),
        "{text}"
    );
    let _ = w;
}

#[tokio::test]
async fn ice_servers_name_the_host_the_client_used() {
    let config = SignalConfig {
        turn: Some(TurnAdvert {
            secret: "turn-secret".into(),
            port: 3478,
            tls_port: None,
            https_port: None,
            credential_ttl: Duration::from_secs(3600),
            servers: Vec::new(),
        }),
        ..SignalConfig::default()
    };
    let (_svc, addr) = serve(config).await;
    let mut a = Client::connect(addr).await;
    let w = a.join("r", "Ann").await;
    let ice = &w["iceServers"];
    assert_eq!(ice[0], json!({"urls": ["stun:127.0.0.1:3478"]}));
    assert_eq!(
        ice[1]["urls"],
        json!([
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp"
        ])
    );
    let username = ice[1]["username"].as_str().expect("username");
    let (expiry, peer) = username.split_once(':').expect("expiry:peer");
    assert_eq!(peer, id(&w));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!(
        expiry >= now + 3590 && expiry <= now + 3610,
        "expiry {expiry} vs now {now}"
    );

    // A client that reached us as [::1]:8080 gets [::1] in its URLs.
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("host", "[::1]:8080".parse().expect("header"));
    let (ws, _) = connect_async(req).await.expect("handshake");
    let mut b = Client { ws };
    let w = b.join("r", "Bob").await;
    assert_eq!(w["iceServers"][0], json!({"urls": ["stun:[::1]:3478"]}));
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_not_buffered() {
    let config = SignalConfig {
        outgoing_queue: 8,
        max_messages_per_sec: 0,
        resume_grace: Duration::from_secs(30),
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let (mut a, b, _ida, idb) = pair(addr, "call").await;
    // Bob stops reading; Ann sends him ~32 MiB at most.
    let chunk = "y".repeat(60 * 1024);
    let mut dropped = false;
    for _ in 0..512 {
        a.send(json!({"type":"message","to":idb,"data":chunk}))
            .await;
        if svc.stats().connections == 1 {
            dropped = true;
            break;
        }
    }
    if !dropped {
        for _ in 0..100 {
            if svc.stats().connections == 1 {
                dropped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(dropped, "the slow client was disconnected");
    let mut text = String::new();
    svc.metrics_text(&mut text);
    assert!(
        text.contains("peercall_signal_slow_consumer_closes_total 1"),
        "{text}"
    );
    // Ann's connection is unaffected.
    a.send(json!({"type":"ping"})).await;
    loop {
        if a.recv().await["type"] == "pong" {
            break;
        }
    }
    drop(b);
}

#[tokio::test]
async fn shutdown_says_going_away_and_refuses_new_clients() {
    let (svc, addr) = serve(SignalConfig::default()).await;
    let (mut a, mut b, _, _) = pair(addr, "call").await;
    svc.shutdown();
    assert_eq!(
        a.ended().await.0,
        Ended::Close(1001, "server shutting down".into())
    );
    assert_eq!(
        b.ended().await.0,
        Ended::Close(1001, "server shutting down".into())
    );
    let refused = connect_async(format!("ws://{addr}/ws")).await;
    assert!(
        refused.is_err(),
        "new connections are refused after shutdown"
    );
}

#[tokio::test]
async fn zero_ping_settings_turn_the_keepalive_off() {
    let config = SignalConfig {
        ping_interval: Duration::ZERO,
        ping_timeout: Duration::ZERO,
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    let mut silent = Client::connect(addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(svc.stats().connections, 1);
    // No ping was sent meanwhile: the first frame is the pong to our ping.
    silent.send(json!({"type":"ping"})).await;
    let first = timeout(WAIT, silent.ws.next()).await.expect("in time");
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
}

/// Connects with extra request headers; `Err` carries the HTTP status and body of a refused handshake.
async fn connect_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                .expect("name"),
            v.parse().expect("header"),
        );
    }
    match timeout(WAIT, connect_async(req)).await.expect("in time") {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("handshake: {e}"),
    }
}

#[tokio::test]
async fn websockets_from_another_site_are_refused_with_a_readable_403() {
    let config = SignalConfig {
        allowed_origins: vec!["https://app.example.com".parse().expect("origin")],
        public_host: Some("call.example.org".into()),
        ..SignalConfig::default()
    };
    let (svc, addr) = serve(config).await;
    // The page peercall served itself (Origin = the Host the request was sent to).
    let own = format!("http://{addr}");
    let mut c = connect_with(addr, &[("origin", &own)])
        .await
        .expect("same origin");
    c.join("r", "Ann").await;
    // No Origin: a native client.
    connect_with(addr, &[]).await.expect("no origin");
    // --allowed-origin and --public-host.
    connect_with(addr, &[("origin", "https://app.example.com")])
        .await
        .expect("listed");
    connect_with(addr, &[("origin", "https://call.example.org")])
        .await
        .expect("public host");
    // Another site, another port of this host, or an opaque origin: 403 with a body that says why.
    for origin in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let (status, body) = connect_with(addr, &[("origin", origin)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{origin} was let in"));
        assert_eq!(status, 403, "{origin}");
        assert!(
            body.contains("--allowed-origin") && body.contains(origin),
            "{origin}: {body}"
        );
    }
    let mut text = String::new();
    svc.metrics_text(&mut text);
    assert!(
        text.contains("peercall_signal_origin_refused_total 3"),
        "{text}"
    );
    // `*` allows every origin.
    let (_svc, addr) = serve(SignalConfig {
        allowed_origins: vec!["*".parse().expect("any")],
        ..SignalConfig::default()
    })
    .await;
    connect_with(addr, &[("origin", "https://evil.example")])
        .await
        .expect("*");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    // Untrusted: X-Forwarded-For is ignored, every client is 127.0.0.1 and shares its connection limit.
    let (svc, addr) = serve(SignalConfig {
        max_connections_per_ip: 2,
        ..SignalConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..2 {
        let xff = format!("203.0.113.{i}");
        let mut c = connect_with(addr, &[("x-forwarded-for", &xff)])
            .await
            .expect("connect");
        c.join("r", "P").await;
        held.push(c);
    }
    let mut third = connect_with(addr, &[("x-forwarded-for", "203.0.113.9")])
        .await
        .expect("connect");
    let (_, seen) = third.ended().await;
    assert_eq!(
        seen[0]["code"], "too-many-connections",
        "a client cannot pick its own address"
    );
    drop(svc);

    // Trusted (the proxy is 127.0.0.1): each forwarded client has its own limit, and the proxy's own
    // address is not limited for them.
    let (svc, addr) = serve(SignalConfig {
        max_connections_per_ip: 2,
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        ..SignalConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..6 {
        let xff = format!("203.0.113.{}", i / 2);
        let mut c = connect_with(addr, &[("x-forwarded-for", &xff)])
            .await
            .expect("connect");
        c.join("r2", "P").await;
        held.push(c);
    }
    let mut over = connect_with(addr, &[("forwarded", "for=203.0.113.0")])
        .await
        .expect("connect");
    let (_, seen) = over.ended().await;
    assert_eq!(
        seen[0]["code"], "too-many-connections",
        "203.0.113.0 has its 2"
    );
    assert_eq!(svc.stats().connections, 6);
}

/// Connects with the join in the upgrade URL (`/ws?join=...`, docs/protocol.md).
async fn connect_joining(addr: SocketAddr, join: &Value) -> Client {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("join", &join.to_string())
        .finish();
    let (ws, _) = timeout(WAIT, connect_async(format!("ws://{addr}/ws?{query}")))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    Client { ws }
}

#[tokio::test]
async fn a_join_in_the_url_is_welcomed_without_a_frame_and_checked_like_one() {
    let (_svc, addr) = serve(SignalConfig::default()).await;
    let mut ann = Client::connect(addr).await;
    let wa = ann.join("url-room", "Ann").await;
    // Bob sends nothing: the server joins him at the handshake, and Ann hears of him.
    let mut bob = connect_joining(
        addr,
        &json!({"v":1,"type":"join","room":"url-room","name":"Bob"}),
    )
    .await;
    let wb = bob.recv().await;
    assert_eq!(wb["type"], "welcome", "{wb}");
    assert_eq!(wb["peers"], json!([{"id": id(&wa), "name": "Ann"}]));
    let joined = ann.recv().await;
    assert_eq!(joined["type"], "peer-joined");
    assert_eq!(joined["peer"]["id"], wb["id"]);
    // A second join on the same connection is refused, as after a join frame.
    bob.send(json!({"v":1,"type":"join","room":"url-room","name":"Bob"}))
        .await;
    assert_eq!(bob.recv().await["type"], "error");
    // A join in the URL that is not valid gets the error a bad first frame gets, and nothing joins.
    let mut eve = connect_joining(
        addr,
        &json!({"v":9,"type":"join","room":"url-room","name":"Eve"}),
    )
    .await;
    let refused = eve.recv().await;
    assert_eq!(refused["code"], "unsupported-version", "{refused}");
    ann.quiet().await;
}
