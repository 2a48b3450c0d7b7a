//! Quick relay throughput check, in one process on loopback (server and clients share the cores, so the
//! figures are a floor, not the benchmark of docs/benchmarks.md):
//!
//!     cargo run --release -p peercall-signal --example relay -- [pairs] [messages-per-pair]
//!
//! Each pair joins its own room; one side sends candidate-sized messages, the other receives them. Prints
//! messages per second and relay latency percentiles.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use peercall_signal::{SignalConfig, SignalService};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("server JSON"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn joined(addr: SocketAddr, room: &str, name: &str) -> (Ws, String) {
    let (mut ws, _) = connect_async_with_config(format!("ws://{addr}/ws"), None, true)
        .await
        .expect("connect");
    ws.send(Message::Text(
        json!({"type":"join","v":1,"room":room,"name":name}).to_string(),
    ))
    .await
    .expect("send join");
    let w = next_json(&mut ws).await;
    assert_eq!(w["type"], "welcome");
    (ws, w["id"].as_str().expect("id").to_owned())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(50)
        .min(2000);
    let per_pair: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000)
        .min(1_000_000);

    let config = SignalConfig {
        max_messages_per_sec: 0,
        max_connections_per_ip: 0,
        outgoing_queue: 4096,
        // Clients idle at the start barrier do not read, so they would not answer pings.
        ping_interval: Duration::ZERO,
        ping_timeout: Duration::ZERO,
        ..SignalConfig::default()
    };
    let svc = SignalService::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = svc
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });

    let epoch = Instant::now();
    let setup = Instant::now();
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(pairs + 1));
    let mut tasks = Vec::new();
    for p in 0..pairs {
        let room = format!("bench-{p}");
        let (mut a, _ida) = joined(addr, &room, "sender").await;
        let (mut b, idb) = joined(addr, &room, "receiver").await;
        let _ = next_json(&mut a).await; // peer-joined
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            let recv = tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_pair);
                for _ in 0..per_pair {
                    let m = next_json(&mut b).await;
                    let sent = m["data"]["t"].as_u64().expect("timestamp");
                    lat.push(epoch.elapsed().as_nanos() as u64 - sent);
                }
                lat
            });
            let cand = "candidate:842163049 1 udp 1677729535 192.0.2.10 54321 typ srflx raddr 0.0.0.0 rport 0";
            for i in 0..per_pair {
                let t = epoch.elapsed().as_nanos() as u64;
                let msg = json!({"type":"message","to":idb,"data":{"t":t,"i":i,"c":cand}}).to_string();
                a.send(Message::Text(msg)).await.expect("send");
            }
            let lat = recv.await.expect("receiver");
            drop(a);
            lat
        }));
    }
    go.wait().await; // every pair is connected and joined: go
    let setup = setup.elapsed();
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            tokio::time::timeout(Duration::from_secs(300), t)
                .await
                .expect("bounded")
                .expect("task"),
        );
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |q: f64| Duration::from_nanos(all[((all.len() - 1) as f64 * q) as usize]);
    let total = pairs * per_pair;
    println!("setup: {} connections joined in {setup:.2?}", pairs * 2);
    println!(
        "{pairs} pairs x {per_pair} messages = {total} relayed in {elapsed:.2?}: {:.0} msg/s; latency p50 {:?} p99 {:?} max {:?}",
        total as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let mut text = String::new();
    svc.metrics_text(&mut text);
    for line in text.lines().filter(|l| {
        l.starts_with("peercall_signal_forwarded_total") || l.starts_with("peercall_signal_slow")
    }) {
        println!("{line}");
    }
}
