//! The axum WebSocket driver: `GET /ws`.
//!
//! One task per connection moves frames between its socket and the cores: the per-connection
//! [`Session`] (size, rate, parsing — no lock) and the shared [`Rooms`] (behind a `Mutex`, held only while
//! the core runs and its outputs are collected; serialization and socket writes happen outside it). Each
//! connection has a bounded outgoing queue: a client that does not keep up is disconnected rather than
//! buffered without limit. A timer task drives [`Rooms::handle_timeout`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ServerMessage};
use crate::rooms::{ConnId, ConnInfo, Output, Rooms, close_code};
use crate::session::{Session, Verdict};
use crate::{SignalConfig, SignalStats, guard, ice};

/// WebSocket close code sent to every client on [`SignalService::shutdown`].
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Longest the timer task sleeps (it also re-anchors the core's wall clock when it wakes).
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long a closing connection waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Write timeout when the ping timeout is off.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Wake-up period of a connection task when keepalive is off entirely.
const NO_KEEPALIVE_WAKE: Duration = Duration::from_secs(3600);
/// Bytes tungstenite reads at once into a connection's read buffer (see `ws_handler`).
const READ_BUFFER: usize = 512;
/// Queued messages written per flush.
const WRITE_BATCH: usize = 64;

/// The signaling service: cheap to clone, all clones share one room state.
#[derive(Clone)]
pub struct SignalService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SignalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalService")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: SignalConfig,
    metrics: Arc<Metrics>,
    state: Mutex<SharedState>,
    shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait until each has sent its close frame.
    connections: TaskTracker,
    timer_wake: Notify,
    timer_started: AtomicBool,
    /// The Redis link, when this node is part of a cluster.
    cluster: OnceLock<crate::redis::Link>,
}

pub(crate) struct SharedState {
    pub(crate) rooms: Rooms,
    conns: HashMap<ConnId, ConnHandle>,
}

#[derive(Clone)]
struct ConnHandle {
    /// Its outgoing queue, which also carries the order to disconnect ([`Queue::kill`]).
    tx: Arc<Queue>,
}

enum Outgoing {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// Why [`Queue::try_send`] refused an item.
enum Refused {
    /// The connection's queue is full: it does not keep up.
    Full,
    /// Its task has ended (it disconnects itself).
    Closed,
}

/// A connection's outgoing queue: bounded like a channel, but holding no buffer while empty. A tokio mpsc
/// channel allocates a block of 32 slots and its cache-padded state (about 1.7 KiB) for every connection up
/// front; idle signaling connections, nearly all of them, never need it. Items are pushed by the cores' output
/// (under the state lock, never blocking) and popped by the connection's task.
struct Queue {
    items: Mutex<QueueItems>,
    ready: Notify,
}

struct QueueItems {
    items: std::collections::VecDeque<Outgoing>,
    capacity: usize,
    closed: bool,
    /// The connection is to be dropped (too slow): its task ends at its next look at the queue.
    killed: bool,
    /// The service shuts down: the task closes the socket (1001, or 4001 in a cluster). Carried by the queue
    /// rather than by a wait on the shutdown token in every task: one future less in each (issue 14).
    shutting_down: bool,
}

/// What [`Queue::recv`] found.
enum Next {
    Item(Outgoing),
    /// [`Queue::kill`]: disconnect now.
    Killed,
    /// [`Queue::shut_down`]: close the socket, the service is going away.
    ShuttingDown,
}

impl Queue {
    fn new(capacity: usize) -> Arc<Queue> {
        Arc::new(Queue {
            items: Mutex::new(QueueItems {
                items: std::collections::VecDeque::new(),
                capacity: capacity.max(1),
                closed: false,
                killed: false,
                shutting_down: false,
            }),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueItems> {
        // A panic while holding this lock cannot leave the queue inconsistent (push and pop only).
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_send(&self, item: Outgoing) -> Result<(), Refused> {
        {
            let mut q = self.lock();
            if q.closed || q.killed {
                return Err(Refused::Closed);
            }
            if q.items.len() >= q.capacity {
                return Err(Refused::Full);
            }
            q.items.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn try_recv(&self) -> Option<Outgoing> {
        let mut q = self.lock();
        let item = q.items.pop_front();
        // An emptied queue gives its buffer back: idle connections (nearly all of them) hold none, and a burst
        // costs one allocation.
        if q.items.is_empty() && q.items.capacity() > 0 {
            q.items = std::collections::VecDeque::new();
        }
        item
    }

    /// The next item; [`Next::ShuttingDown`] (before anything queued) once the service shuts down,
    /// [`Next::Killed`] once the connection is killed. Waits while the queue is empty. Cancel-safe: an item is
    /// only taken when returned.
    async fn recv(&self) -> Next {
        loop {
            // Registered before looking, so a push between the look and the wait is not missed.
            let notified = self.ready.notified();
            {
                let q = self.lock();
                if q.shutting_down {
                    return Next::ShuttingDown;
                }
                if q.killed {
                    return Next::Killed;
                }
            }
            if let Some(item) = self.try_recv() {
                return Next::Item(item);
            }
            notified.await;
        }
    }

    /// The service shuts down: the task closes its socket at its next look at the queue.
    fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.ready.notify_one();
    }

    /// Disconnects the connection: what is queued is dropped, nothing more is accepted, and its task ends when
    /// it next waits for the queue. Part of the queue rather than a token of its own: one waker per connection.
    fn kill(&self) {
        {
            let mut q = self.lock();
            q.killed = true;
            q.items = std::collections::VecDeque::new();
        }
        self.ready.notify_one();
    }

    /// The task has ended: refuse new items and drop those queued.
    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.items = std::collections::VecDeque::new();
    }
}

enum Delivery {
    Msg(ServerMessage),
    Close(u16, &'static str),
}

impl SignalService {
    /// A service with no connections and no rooms. Starts no task: the timer task starts with the first
    /// connection, the Redis link with [`enable_redis`](Self::enable_redis).
    pub fn new(config: SignalConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let seed: [u8; 32] = rand::random();
        let rooms = Rooms::new(
            config.clone(),
            metrics.clone(),
            seed,
            Instant::now(),
            unix_now(),
        );
        Self {
            inner: Arc::new(Inner {
                config,
                metrics,
                state: Mutex::new(SharedState {
                    rooms,
                    conns: HashMap::new(),
                }),
                shutdown: CancellationToken::new(),
                connections: TaskTracker::new(),
                timer_wake: Notify::new(),
                timer_started: AtomicBool::new(false),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// A router serving `GET /ws`. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
    /// the per-IP limit applies (without it, connections are not limited per IP), and set `TCP_NODELAY` on
    /// accepted sockets (`listener.tap_io(|t| { let _ = t.set_nodelay(true); })`): signaling is many small
    /// writes, and Nagle plus delayed ACKs add up to 40 ms per round trip (measured: 2000 joins took 45 s
    /// without it, 2.5 s with it).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(ws_handler))
            .with_state(self.inner.clone())
    }

    /// Appends Prometheus metrics (`peercall_signal_*`).
    pub fn metrics_text(&self, out: &mut String) {
        let stats = self.stats();
        self.inner.metrics.encode_prometheus(&stats, out);
        let draining = u8::from(self.inner.shutdown.is_cancelled());
        out.push_str(&format!(
            "# HELP peercall_signal_draining 1 once this node drains (SIGTERM): new connections are refused, \
             clients are closed (4001 in a cluster) to resume elsewhere.\n\
             # TYPE peercall_signal_draining gauge\npeercall_signal_draining {draining}\n"
        ));
        if let Some(link) = self.inner.cluster.get() {
            link.stats.encode_prometheus(&link.node, out);
        }
    }

    /// Joins the cluster of nodes sharing `settings`' Redis: rooms span nodes from now on (call before
    /// serving). Fails only for a bad URL; an unreachable Redis is retried in the background.
    pub fn enable_redis(
        &self,
        settings: &crate::redis::RedisSettings,
    ) -> Result<(), crate::redis::RedisError> {
        let link = crate::redis::start(&self.inner, settings)?;
        let node = link.node.clone();
        self.inner.with_state(|st, _| st.rooms.enable_cluster(node));
        let _ = self.inner.cluster.set(link);
        Ok(())
    }

    /// This node's cluster id and whether Redis is reachable; `None` without `--redis`.
    pub fn cluster_status(&self) -> Option<(String, bool)> {
        self.inner
            .cluster
            .get()
            .map(|l| (l.node.clone(), l.stats.up()))
    }

    /// Closes every connection with 1001 (going away) and refuses new ones with 503. In a cluster the close
    /// code is 4001 (draining: reconnect to another node and resume) and the node leaves the cluster at once, so
    /// the other nodes keep its peers' places for the grace period.
    pub fn shutdown(&self) {
        let connections = self.stats().connections;
        if let Some(link) = self.inner.cluster.get() {
            tracing::warn!(
                node = %link.node,
                "signaling node {} draining: {connections} client(s) told to reconnect to another node (close 4001)",
                link.node
            );
            link.stop();
        } else if connections > 0 {
            tracing::info!("signaling shutting down: {connections} client(s) closed (1001)");
        }
        self.inner.shutdown.cancel();
        // After the cancel: a connection registered after this walk sees the token cancelled (run_connection).
        for h in self.inner.lock().conns.values() {
            h.tx.shut_down();
        }
        self.inner.connections.close();
    }

    /// Resolves once [`shutdown`](Self::shutdown) was called and every connection has finished its close
    /// handshake (each is bounded by its own close timeout): the process must not exit before the clients were
    /// told where to go.
    pub async fn closed(&self) {
        self.inner.connections.wait().await;
    }

    /// Connections, rooms and peers right now (for `/healthz`).
    pub fn stats(&self) -> SignalStats {
        self.inner.lock().rooms.stats()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // A panic while holding the lock would be a bug in the core; keep serving the other rooms.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the shared state, then delivers the core's outputs (outside the lock).
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut SharedState, Instant) -> R) -> R {
        let mut batch: Vec<(ConnId, ConnHandle, Delivery)> = Vec::new();
        let mut requests = Vec::new();
        let (result, wake_timer) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let before = st.rooms.poll_timeout();
            let now = Instant::now();
            let result = f(st, now);
            while let Some(out) = st.rooms.poll_output() {
                match out {
                    Output::Send { conn, msg } => {
                        if let Some(h) = st.conns.get(&conn) {
                            batch.push((conn, h.clone(), Delivery::Msg(msg)));
                        }
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(h) = st.conns.remove(&conn) {
                            batch.push((conn, h, Delivery::Close(code, reason)));
                        }
                    }
                    Output::Cluster(req) => requests.push(req),
                }
            }
            let after = st.rooms.poll_timeout();
            let wake = match (before, after) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(a)) => a < b,
            };
            (result, wake)
        };
        if wake_timer {
            self.timer_wake.notify_one();
        }
        self.dispatch(batch);
        if let Some(link) = self.cluster.get() {
            for req in requests {
                link.submit(self, req);
            }
        }
        result
    }

    fn dispatch(&self, batch: Vec<(ConnId, ConnHandle, Delivery)>) {
        if batch.is_empty() {
            return;
        }
        let mut overflowed = Vec::new();
        let mut sent = 0;
        for (conn, handle, delivery) in batch {
            let item = match delivery {
                Delivery::Msg(msg) => Outgoing::Text(msg.to_json().into()),
                Delivery::Close(code, reason) => Outgoing::Close(code, reason),
            };
            match handle.tx.try_send(item) {
                Ok(()) => sent += 1,
                Err(Refused::Full) => {
                    handle.tx.kill();
                    overflowed.push(conn);
                }
                Err(Refused::Closed) => {} // its task has ended and disconnects itself
            }
        }
        self.metrics.sent(sent);
        for conn in overflowed {
            self.drop_slow(conn);
        }
    }

    /// A connection's queue is full: disconnect it (its peer may resume within the grace period).
    fn drop_slow(&self, conn: ConnId) {
        self.with_state(|st, now| {
            if let Some(h) = st.conns.remove(&conn) {
                h.tx.kill();
                self.metrics.slow_consumer();
                tracing::debug!(conn = conn.0, "signaling client too slow: disconnected");
            }
            st.rooms.disconnect(now, conn);
        });
    }

    /// One frame from a client.
    fn on_frame(&self, conn: ConnId, session: &mut Session, tx: &Queue, frame: Frame<'_>) {
        let now = Instant::now();
        let verdict = match frame {
            Frame::Text(bytes) => session.on_text(now, bytes, &self.metrics),
            Frame::Binary(len) => session.on_binary(now, len, &self.metrics),
        };
        match verdict {
            Verdict::Deliver(msg) => self.with_state(|st, now| {
                let outcome = st.rooms.handle_message(now, conn, msg);
                if session.on_outcome(outcome) {
                    st.rooms.kick(now, conn, ErrorCode::Abuse);
                }
            }),
            Verdict::Reply(msg) => self.reply(conn, tx, &msg),
            Verdict::ReplyThenAbuse(msg) => {
                self.reply(conn, tx, &msg);
                self.with_state(|st, now| st.rooms.kick(now, conn, ErrorCode::Abuse));
            }
        }
    }

    fn reply(&self, conn: ConnId, tx: &Queue, msg: &ServerMessage) {
        match tx.try_send(Outgoing::Text(msg.to_json().into())) {
            Ok(()) => self.metrics.sent(1),
            Err(Refused::Full) => self.drop_slow(conn),
            Err(Refused::Closed) => {}
        }
    }

    fn ensure_timer(self: &Arc<Self>) {
        if self.timer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { break };
                let next = inner.with_state(|st, now| {
                    st.rooms.sync_wall_clock(now, unix_now());
                    st.rooms.handle_timeout(now);
                    st.rooms.poll_timeout()
                });
                let cap = Instant::now() + TIMER_MAX_SLEEP;
                let deadline = next.map_or(cap, |n| n.min(cap));
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = inner.timer_wake.notified() => {}
                    () = inner.shutdown.cancelled() => break,
                }
            }
        });
    }
}

enum Frame<'a> {
    Text(&'a [u8]),
    Binary(usize),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The client's socket address, when the server was started with connect info.
struct PeerAddr(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The host the client reached us by: the URI authority (HTTP/2) or the `Host` header.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    uri.authority()
        .and_then(|a| ice::normalize_host(a.as_str()))
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(ice::normalize_host)
        })
}

/// Frames up to this size are read whole and answered with `too-large`; bigger ones break the connection.
fn hard_frame_limit(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(2)
        .max(max_message_bytes.saturating_add(4096))
}

async fn ws_handler(
    State(inner): State<Arc<Inner>>,
    PeerAddr(remote): PeerAddr,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if inner.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "peercall is shutting down").into_response();
    }
    let cfg = &inner.config;
    let from_proxy = remote.is_some_and(|a| guard::is_trusted(a.ip(), &cfg.trusted_proxies));
    let client = remote.map(|a| guard::client_ip(a.ip(), &headers, &cfg.trusted_proxies));
    // A browser always sends Origin; a page of another site must not open a connection in its visitor's name.
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let mut page_hosts: Vec<&str> = Vec::with_capacity(3);
    if let Some(a) = uri.authority() {
        page_hosts.push(a.as_str());
    }
    if let Some(h) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        page_hosts.push(h);
    }
    if from_proxy
        && let Some(h) = headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
    {
        page_hosts.push(h.trim());
    }
    if !guard::origin_allowed(
        origin,
        &page_hosts,
        cfg.public_host.as_deref(),
        &cfg.allowed_origins,
    ) {
        inner.metrics.origin_refused();
        let origin = origin.unwrap_or_default();
        tracing::debug!(client = ?client, origin, "signaling: WebSocket from another site refused");
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "peercall refused this WebSocket: its Origin ({origin}) is not this server's site. \
                 The server's operator can allow it with --allowed-origin.\n"
            ),
        )
            .into_response();
    }
    inner.ensure_timer();
    let host = request_host(&uri, &headers).or_else(|| ice::fallback_host(client));
    let join = join_in_url(&uri);
    let hard = hard_frame_limit(inner.config.max_message_bytes);
    ws.max_message_size(hard)
        .max_frame_size(hard)
        // Read buffer: tungstenite allocates it whole for every connection and keeps it; an idle signaling
        // connection reads a ping or a candidate (tens to hundreds of bytes) now and then. A larger message (an
        // SDP offer of a few KiB) grows it for that message; reads under load rarely find more than this queued.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| {
            let tracker = inner.connections.clone();
            tracker.track_future(run_connection(inner, socket, client, host, join))
        })
}

enum End {
    /// The core closed the connection (it has forgotten it already).
    Core(u16, &'static str),
    Shutdown,
    /// The client closed, the socket failed, or the ping timeout expired.
    Lost,
    /// Disconnected for being too slow (already handled by `drop_slow`).
    Killed,
}

/// The join message a client put in the upgrade's URL (`/ws?join=<the join message>`, docs/protocol.md), if any.
///
/// Why: a page sends its first frame only when its main thread runs the socket's open event, which on a page still
/// laying itself out comes a hundred milliseconds and more after the handshake; joining at the upgrade lets the
/// welcome and the others' offers (they offer when they hear of a newcomer) start at once. Its size is bounded by
/// the HTTP request's; the join then goes through exactly the checks of a first frame.
fn join_in_url(uri: &Uri) -> Option<Box<str>> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "join")
        .map(|(_, value)| value.into_owned().into_boxed_str())
}

async fn run_connection(
    inner: Arc<Inner>,
    mut socket: WebSocket,
    client: Option<IpAddr>,
    host: Option<String>,
    join: Option<Box<str>>,
) {
    let cfg = &inner.config;
    let tx = Queue::new(cfg.outgoing_queue);
    let handle = ConnHandle { tx: tx.clone() };
    let info = ConnInfo { ip: client, host };
    let shutdown = &inner.shutdown;
    let conn = inner.with_state(move |st, now| {
        let id = st.rooms.open(now, info);
        // Under the state lock, which shutdown's walk of `conns` takes after cancelling: either that walk sees
        // this connection, or this sees the token cancelled.
        if shutdown.is_cancelled() {
            handle.tx.shut_down();
        }
        st.conns.insert(id, handle);
        id
    });
    let mut session = Session::new(cfg, Instant::now());
    if let Some(join) = join {
        inner.on_frame(conn, &mut session, &tx, Frame::Text(join.as_bytes()));
    }
    // The socket is not `split()`: split halves share it through a lock in a heap block of its own (the whole
    // WebSocket moved there, about 400 bytes per connection, while this task keeps room for it anyway). The loop
    // below borrows it for one thing at a time: `tokio::select!` drops the branch futures (among them
    // `socket.next()`, cancel-safe) before running the chosen arm, whose writes then have the socket alone.
    // Only what changes is kept across the loop's awaits (`last_seen`, `next_ping`); the keepalive settings are
    // read from the config where needed: every value held across an await is part of every connection's task.
    let mut last_seen = Instant::now();
    let mut next_ping = ping_interval(cfg).map(|i| last_seen + i);

    let end = loop {
        let silent_until = ping_timeout(cfg).map(|t| last_seen + t);
        let deadline = match (next_ping, silent_until) {
            (Some(p), Some(t)) => p.min(t),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => last_seen + NO_KEEPALIVE_WAKE,
        };
        tokio::select! {
            biased;
            item = tx.recv() => match item {
                Next::ShuttingDown => break End::Shutdown,
                Next::Killed => break End::Killed,
                Next::Item(Outgoing::Text(text)) => {
                    let mut close = None;
                    // Boxed, like the ping and the close below: each future awaited inline in this loop would
                    // be part of every connection's task, idle or not (issue 14: memory per connection).
                    let written = Box::pin(tokio::time::timeout(write_timeout(cfg), async {
                        socket.feed(Message::Text(text)).await?;
                        for _ in 0..WRITE_BATCH {
                            match tx.try_recv() {
                                Some(Outgoing::Text(t)) => socket.feed(Message::Text(t)).await?,
                                Some(Outgoing::Close(code, reason)) => {
                                    close = Some((code, reason));
                                    break;
                                }
                                None => break,
                            }
                        }
                        socket.flush().await
                    }))
                    .await;
                    if !matches!(written, Ok(Ok(()))) {
                        break End::Lost;
                    }
                    if let Some((code, reason)) = close {
                        break End::Core(code, reason);
                    }
                }
                Next::Item(Outgoing::Close(code, reason)) => break End::Core(code, reason),
            },
            frame = socket.next() => {
                let Some(Ok(frame)) = frame else { break End::Lost };
                last_seen = Instant::now();
                match frame {
                    Message::Text(text) => inner.on_frame(conn, &mut session, &tx, Frame::Text(text.as_bytes())),
                    Message::Binary(data) => inner.on_frame(conn, &mut session, &tx, Frame::Binary(data.len())),
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(_) => {
                        // tungstenite has queued the close reply; flush it.
                        let _ = Box::pin(tokio::time::timeout(CLOSE_WAIT, socket.close())).await;
                        break End::Lost;
                    }
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                // last_seen has not moved since the deadline was computed (only a frame moves it).
                if ping_timeout(cfg).is_some_and(|t| now >= last_seen + t) {
                    inner.metrics.ping_timeout();
                    tracing::debug!(conn = conn.0, "signaling client silent past the ping timeout: closing");
                    break End::Lost;
                }
                if let (Some(at), Some(interval)) = (next_ping, ping_interval(cfg))
                    && now >= at
                {
                    let sent = Box::pin(tokio::time::timeout(write_timeout(cfg), socket.send(Message::Ping(Bytes::new())))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break End::Lost;
                    }
                    next_ping = Some(now + interval);
                }
            }
        }
    };

    let close = match end {
        End::Core(code, reason) => Some((code, reason)),
        End::Shutdown if inner.cluster.get().is_some() => {
            Some((close_code::DRAINING, "draining: reconnect to another node"))
        }
        End::Shutdown => Some((CLOSE_GOING_AWAY, "server shutting down")),
        End::Lost | End::Killed => None,
    };
    if let Some((code, reason)) = close {
        Box::pin(close_socket(socket, code, reason)).await;
    }
    tx.close();
    inner.with_state(|st, now| {
        st.conns.remove(&conn);
        st.rooms.disconnect(now, conn);
    });
}

/// The ping interval; a zero interval turns pings off.
fn ping_interval(cfg: &SignalConfig) -> Option<Duration> {
    (!cfg.ping_interval.is_zero()).then_some(cfg.ping_interval)
}

/// The ping timeout; a zero timeout turns it off.
fn ping_timeout(cfg: &SignalConfig) -> Option<Duration> {
    (!cfg.ping_timeout.is_zero()).then_some(cfg.ping_timeout)
}

/// How long a write may take: the ping timeout, or [`DEFAULT_WRITE_TIMEOUT`] without one.
fn write_timeout(cfg: &SignalConfig) -> Duration {
    ping_timeout(cfg)
        .unwrap_or(DEFAULT_WRITE_TIMEOUT)
        .max(Duration::from_millis(100))
}

async fn close_socket(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if socket.send(frame).await.is_err() {
            return;
        }
        // Read until the client's close frame (or EOF), so the close handshake completes.
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_show_the_drain() {
        let service = SignalService::new(SignalConfig::default());
        let text = |s: &SignalService| {
            let mut out = String::new();
            s.metrics_text(&mut out);
            out
        };
        assert!(text(&service).contains("\npeercall_signal_draining 0\n"));
        service.shutdown();
        assert!(text(&service).contains("\npeercall_signal_draining 1\n"));
    }

    #[test]
    fn host_from_request() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "[::1]:8080".parse().expect("header"));
        assert_eq!(
            request_host(&Uri::from_static("/ws"), &headers).as_deref(),
            Some("[::1]")
        );
        headers.insert(
            header::HOST,
            "Call.Example.org:443".parse().expect("header"),
        );
        assert_eq!(
            request_host(&Uri::from_static("/ws"), &headers).as_deref(),
            Some("call.example.org")
        );
        let uri: Uri = "https://10.0.0.5:8443/ws".parse().expect("uri");
        assert_eq!(request_host(&uri, &headers).as_deref(), Some("10.0.0.5"));
        headers.insert(header::HOST, "bad host".parse().expect("header"));
        assert_eq!(request_host(&Uri::from_static("/ws"), &headers), None);
        assert_eq!(hard_frame_limit(65536), 131072);
        let join = Uri::from_static(
            "/ws?x=1&join=%7B%22type%22%3A%22join%22%2C%22room%22%3A%22a%20b%22%7D",
        );
        assert_eq!(
            join_in_url(&join).as_deref(),
            Some(r#"{"type":"join","room":"a b"}"#)
        );
        assert_eq!(join_in_url(&Uri::from_static("/ws")), None);
        assert_eq!(join_in_url(&Uri::from_static("/ws?other=1")), None);
        assert_eq!(hard_frame_limit(100), 4196);
    }
}
