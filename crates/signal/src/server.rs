//! The axum WebSocket driver: moves frames between sockets and the room logic.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SignalConfig;
use crate::rooms::{ConnId, Now, Out, Rooms, RoomsConfig};

/// What a connection task is told to do.
enum Outgoing {
    Text(String),
    Close(u16, &'static str),
}

struct Inner {
    rooms: Mutex<Rooms>,
    senders: Mutex<HashMap<ConnId, mpsc::Sender<Outgoing>>>,
    next_conn: AtomicU64,
    config: SignalConfig,
    shutdown: CancellationToken,
    sent: Mutex<HashMap<&'static str, u64>>,
}

/// The signaling service; cheap to clone.
#[derive(Clone)]
pub struct SignalService {
    inner: Arc<Inner>,
}

/// Numbers for /healthz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalStats {
    pub connections: usize,
    pub rooms: usize,
    pub peers: usize,
}

fn now() -> Now {
    Now { instant: Instant::now(), unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) }
}

impl SignalService {
    pub fn new(config: SignalConfig) -> SignalService {
        let rooms_config = RoomsConfig {
            max_message_bytes: config.max_message_bytes,
            max_messages_per_sec: config.max_messages_per_sec,
            max_connections_per_ip: config.max_connections_per_ip,
            max_rooms: config.max_rooms,
            max_peers_per_room: config.max_peers_per_room,
            require_room_password: config.require_room_password,
            join_token_secret: config.join_token_secret.clone(),
            resume_grace: config.resume_grace,
            max_errors_in_row: config.max_errors_in_row,
            public_host: config.public_host.clone(),
            turn: config.turn.clone(),
        };
        let inner = Arc::new(Inner {
            rooms: Mutex::new(Rooms::new(rooms_config, rand::random())),
            senders: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            config,
            shutdown: CancellationToken::new(),
            sent: Mutex::new(HashMap::new()),
        });
        // Timers of the room logic (resume grace, credential refresh); stops at shutdown.
        let weak = Arc::downgrade(&inner);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.shutdown.is_cancelled() {
                        return;
                    }
                    let mut out = Vec::new();
                    lock(&inner.rooms).handle_timeout(now(), &mut out);
                    deliver(&inner, out);
                }
            });
        }
        SignalService { inner }
    }

    /// `GET /ws`.
    pub fn router(&self) -> Router {
        Router::new().route("/ws", get(upgrade)).with_state(self.inner.clone())
    }

    pub fn stats(&self) -> SignalStats {
        let rooms = lock(&self.inner.rooms);
        SignalStats { connections: rooms.connections(), rooms: rooms.rooms(), peers: rooms.peers() }
    }

    /// Tells every client the server is going away (close code 1001) and refuses new connections.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let senders: Vec<_> = lock(&self.inner.senders).values().cloned().collect();
        for tx in senders {
            let _ = tx.try_send(Outgoing::Close(1001, "server shutting down"));
        }
    }

    /// Prometheus text.
    pub fn metrics_text(&self, out: &mut String) {
        let stats = self.stats();
        let rooms = lock(&self.inner.rooms);
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(out, "peercall_signal_connections", "Open signaling WebSocket connections.", stats.connections);
        gauge(out, "peercall_signal_rooms", "Rooms with at least one participant.", stats.rooms);
        gauge(out, "peercall_signal_peers", "Participants in rooms (including those within the resume grace period).", stats.peers);
        let _ = writeln!(out, "# HELP peercall_signal_messages_received_total Client messages accepted, by type.");
        let _ = writeln!(out, "# TYPE peercall_signal_messages_received_total counter");
        let mut received: Vec<_> = rooms.counters.messages_in.iter().collect();
        received.sort();
        for (kind, n) in received {
            let _ = writeln!(out, "peercall_signal_messages_received_total{{type=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP peercall_signal_messages_sent_total Server messages sent, by type.");
        let _ = writeln!(out, "# TYPE peercall_signal_messages_sent_total counter");
        let mut sent: Vec<_> = lock(&self.inner.sent).iter().map(|(k, v)| (*k, *v)).collect();
        sent.sort();
        for (kind, n) in sent {
            let _ = writeln!(out, "peercall_signal_messages_sent_total{{type=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP peercall_signal_errors_total Errors answered to clients, by code.");
        let _ = writeln!(out, "# TYPE peercall_signal_errors_total counter");
        for code in crate::protocol::ErrorCode::ALL {
            let n = rooms.counters.errors.get(code.as_str()).copied().unwrap_or(0);
            let _ = writeln!(out, "peercall_signal_errors_total{{code=\"{}\"}} {n}", code.as_str());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands the room logic's output to the connection tasks. A client whose queue is full is disconnected:
/// one slow reader must not grow the server's memory.
fn deliver(inner: &Inner, out: Vec<Out>) {
    if out.is_empty() {
        return;
    }
    let senders = lock(&inner.senders);
    let mut sent = lock(&inner.sent);
    for o in out {
        match o {
            Out::Send(conn, msg) => {
                *sent.entry(msg.kind()).or_insert(0) += 1;
                if let Some(tx) = senders.get(&conn) {
                    if tx.try_send(Outgoing::Text(msg.to_json())).is_err() {
                        let _ = tx.try_send(Outgoing::Close(1008, "too slow"));
                    }
                }
            }
            Out::Close(conn) => {
                if let Some(tx) = senders.get(&conn) {
                    let _ = tx.try_send(Outgoing::Close(1008, "closed by server"));
                }
            }
        }
    }
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(inner): State<Arc<Inner>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned();
    // Room for an oversized frame to be read and answered with `too-large`; far larger ones are cut off.
    let limit = inner.config.max_message_bytes.saturating_mul(4).max(64 * 1024);
    ws.max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| connection(inner, socket, addr, host))
}

async fn connection(inner: Arc<Inner>, socket: WebSocket, addr: SocketAddr, host: String) {
    let (mut sink, mut stream) = socket.split();
    if inner.shutdown.is_cancelled() {
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
        return;
    }
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(inner.config.send_queue);
    lock(&inner.senders).insert(conn, tx);
    let mut out = Vec::new();
    lock(&inner.rooms).connect(now(), conn, addr.ip(), &host, &mut out);
    deliver(&inner, out);

    let mut ping = tokio::time::interval(inner.config.ping_interval);
    ping.tick().await;
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            outgoing = rx.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    // Flush what was queued before the close (e.g. the error explaining it).
                    while let Ok(Outgoing::Text(text)) = rx.try_recv() {
                        let _ = sink.send(Message::Text(text.into())).await;
                    }
                    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
                None => break,
            },
            incoming = stream.next() => {
                let mut out = Vec::new();
                match incoming {
                    Some(Ok(Message::Text(text))) => lock(&inner.rooms).handle_text(now(), conn, text.as_str(), &mut out),
                    Some(Ok(Message::Binary(_))) => lock(&inner.rooms).handle_binary(conn, &mut out),
                    Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                    Some(Ok(Message::Ping(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                }
                deliver(&inner, out);
            }
            _ = ping.tick() => {
                if last_pong.elapsed() > inner.config.ping_timeout {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001, reason: "ping timeout".into() }))).await;
                    break;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    lock(&inner.senders).remove(&conn);
    let mut out = Vec::new();
    lock(&inner.rooms).disconnected(now(), conn, &mut out);
    deliver(&inner, out);
}
