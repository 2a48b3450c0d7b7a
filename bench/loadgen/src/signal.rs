//! Signaling load over WebSocket: N clients in rooms of two, each sending a fixed-size message to its partner at
//! a fixed rate. The same generator and the same message pattern drive peercall (`docs/protocol.md`) and the
//! PeerJS server (npm `peer`); only the envelope differs:
//!
//! - peercall: `join` into room `bench-<run>-<pair>`, then `{"type":"message","to":ID,"data":DATA}`, delivered as
//!   `{"v":1,"type":"message","from":ID,"data":DATA}`.
//! - PeerJS: connect to `/peerjs?key=peerjs&id=ID&token=T` (the server answers `OPEN`), then
//!   `{"type":"OFFER","dst":ID,"payload":DATA}`, delivered as `{"type":"OFFER","src":ID,"dst":ID,"payload":DATA}`;
//!   `HEARTBEAT` every 20 s as its client library does.
//!
//! DATA is `{"s":STEP,"t":SEND_TIME_NS,"p":"xxx…"}` with the padding making every message the same size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::engine::{SweepConfig, search};
use crate::procfs::{CpuMeter, rss_kib};
use crate::stats::{Histogram, median};
use crate::sys::now_ns;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Peercall,
    Peerjs,
}

#[derive(clap::Args, Debug)]
pub struct SignalArgs {
    #[arg(long, value_enum, default_value_t = Protocol::Peercall)]
    pub protocol: Protocol,
    /// Server address HOST:PORT (loopback only).
    #[arg(long)]
    pub server: std::net::SocketAddr,
    /// Clients (rounded down to an even number; rooms of two).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds to hold all connections idle after connecting (heartbeats and pings still answered).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Bytes of padding in every message's data.
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Run one step at this aggregate rate (messages/s) instead of a sweep.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measure latency at this fixed aggregate rate (messages/s) first.
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// First rate of the sweep (messages/s, all clients together); 0 skips the sweep.
    #[arg(long, default_value_t = 5000.0)]
    pub start_rate: f64,
    #[arg(long, default_value_t = 2_000_000.0)]
    pub max_rate: f64,
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    #[arg(long, default_value_t = 0.05)]
    pub precision: f64,
    /// A step passes when at least this percent of messages arrive...
    #[arg(long, default_value_t = 99.9)]
    pub min_delivered: f64,
    /// ...and their 99th percentile latency is at most this (milliseconds).
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
    /// Seconds per step (at most 120).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 14)]
    pub max_steps: usize,
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Each client sends the messages due within this many milliseconds in one batch (fewer wake-ups of the
    /// generator; adds at most this much to the latency measured, which counts from when a message was due).
    #[arg(long, default_value_t = 2.0)]
    pub batch_ms: f64,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Server PID (CPU and VmRSS).
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

/// What every client task is told to do now.
#[derive(Clone, Copy, Debug)]
struct Phase {
    /// Tag carried in the messages of this step; messages with another tag are stale.
    tag: u32,
    /// Messages per second for each client (0: idle); any rate, also below one message per step.
    rate: f64,
    start: Instant,
    /// `start` on the clock of `now_ns` (the send times carried in the messages).
    start_ns: u64,
    end: Instant,
    quit: bool,
}

impl Phase {
    /// Nothing to send from `at` on (`quit`: close the connection).
    fn idle(at: Instant, quit: bool) -> Phase {
        Phase {
            tag: 0,
            rate: 0.0,
            start: at,
            start_ns: 0,
            end: at,
            quit,
        }
    }
}

/// Where in its period client `index` sends (0 ≤ offset < 1): spread evenly over the clients whatever their
/// number (golden-ratio sequence), so the clients together send at the aggregate rate even when each sends less
/// than one message per step.
fn offset(index: usize) -> f64 {
    (index as f64 * 0.618_033_988_749_894_9).fract()
}

/// How many messages client `index` sends in `secs` seconds at `rate` per second: message k (k = 0, 1, ...) is
/// due at (k + 1 − offset) / rate seconds after the start of the step.
fn due(index: usize, rate: f64, secs: f64) -> u64 {
    if rate <= 0.0 || secs <= 0.0 {
        return 0;
    }
    (secs * rate + offset(index)).floor() as u64
}

struct Shared {
    proto: Protocol,
    pad: String,
    tag: AtomicU32,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    live: AtomicUsize,
    shards: Vec<std::sync::Mutex<Histogram>>,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn record(&self, client: usize, latency: u64) {
        let shard = &self.shards[client % self.shards.len()];
        if let Ok(mut h) = shard.lock() {
            h.record(latency);
        }
    }

    fn take_histogram(&self) -> Histogram {
        let mut all = Histogram::new();
        for s in &self.shards {
            if let Ok(mut h) = s.lock() {
                all.merge(&h);
                *h = Histogram::new();
            }
        }
        all
    }

    fn note_error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert(e);
        }
    }
}

/// The JSON text of one message to `to`.
fn envelope(proto: Protocol, to: &str, tag: u32, ts: u64, pad: &str) -> String {
    let data = json!({"s": tag, "t": ts, "p": pad});
    match proto {
        Protocol::Peercall => json!({"type": "message", "to": to, "data": data}).to_string(),
        Protocol::Peerjs => json!({"type": "OFFER", "dst": to, "payload": data}).to_string(),
    }
}

/// (tag, send time) of a delivered benchmark message; Err(text) for a server error; Ok(None) for anything else.
fn parse_delivery(proto: Protocol, text: &str) -> Result<Option<(u32, u64)>, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON from server: {e}"))?;
    let typ = v.get("type").and_then(Value::as_str).unwrap_or("");
    let data = match (proto, typ) {
        (Protocol::Peercall, "message") => v.get("data"),
        (Protocol::Peerjs, "OFFER") => v.get("payload"),
        (Protocol::Peercall, "error") | (Protocol::Peerjs, "ERROR") => {
            return Err(text.chars().take(200).collect());
        }
        _ => None,
    };
    let Some(d) = data else { return Ok(None) };
    let tag = d.get("s").and_then(Value::as_u64).unwrap_or(u64::MAX);
    let ts = d.get("t").and_then(Value::as_u64).unwrap_or(0);
    Ok(u32::try_from(tag).ok().map(|t| (t, ts)))
}

async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .map_err(|_| anyhow!("WebSocket connect timed out"))?
    .with_context(|| format!("connect {url}"))?;
    Ok(ws)
}

/// Reads text frames until `pred` returns Some (bounded by 15 s).
async fn read_until<T>(
    ws: &mut Ws,
    mut pred: impl FnMut(&Value) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for the server"))?
            .ok_or_else(|| anyhow!("the server closed the connection"))??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).with_context(|| format!("bad JSON: {t}"))?;
            if matches!(
                v.get("type").and_then(Value::as_str),
                Some("error" | "ERROR")
            ) {
                bail!("server error: {t}");
            }
            if let Some(x) = pred(&v) {
                return Ok(x);
            }
        }
    }
}

/// Opens the two connections of pair `pair`; returns (ws, own id, partner id) for both.
async fn open_pair(
    proto: Protocol,
    server: std::net::SocketAddr,
    run: u64,
    pair: usize,
) -> anyhow::Result<[(Ws, String, String); 2]> {
    match proto {
        Protocol::Peercall => {
            let url = format!("ws://{server}/ws");
            let room = format!("bench-{run}-{pair}");
            let join = |name: &str| {
                json!({"v": 1, "type": "join", "room": room, "name": name}).to_string()
            };
            let welcome_id = |v: &Value| -> Option<String> {
                (v.get("type")? == "welcome").then(|| v.get("id")?.as_str().map(str::to_owned))?
            };
            let mut a = connect(&url).await?;
            a.send(Message::Text(join("a"))).await?;
            let id_a = read_until(&mut a, welcome_id)
                .await
                .context("join (first of the pair)")?;
            let mut b = connect(&url).await?;
            b.send(Message::Text(join("b"))).await?;
            let id_b = read_until(&mut b, welcome_id)
                .await
                .context("join (second of the pair)")?;
            let seen = read_until(&mut a, |v| {
                (v.get("type")? == "peer-joined")
                    .then(|| v.get("peer")?.get("id")?.as_str().map(str::to_owned))?
            })
            .await
            .context("peer-joined")?;
            if seen != id_b {
                bail!("peer-joined named {seen}, expected {id_b}");
            }
            Ok([(a, id_a.clone(), id_b.clone()), (b, id_b, id_a)])
        }
        Protocol::Peerjs => {
            let ids = [format!("r{run}p{pair}a"), format!("r{run}p{pair}b")];
            let mut out = Vec::new();
            for id in &ids {
                let url = format!("ws://{server}/peerjs?key=peerjs&id={id}&token=t{run}");
                let mut ws = connect(&url).await?;
                read_until(&mut ws, |v| (v.get("type")? == "OPEN").then_some(()))
                    .await
                    .context("OPEN")?;
                out.push(ws);
            }
            let b = out.pop().expect("two connections were opened");
            let a = out.pop().expect("two connections were opened");
            let [ia, ib] = ids;
            Ok([(a, ia.clone(), ib.clone()), (b, ib, ia)])
        }
    }
}

/// One client: reads all the time (so pings, heartbeats and deliveries are handled), sends each message when it
/// is due. Every message carries the time it was due, not the time it went out: a generator (or a server
/// applying backpressure) that falls behind shows as latency, so a step is judged on delivery and latency alone.
/// Messages due within `gap` of each other go out in one batch (fewer wake-ups), which adds at most `gap` to
/// the latency measured.
async fn client_task(
    index: usize,
    mut ws: Ws,
    partner: String,
    shared: Arc<Shared>,
    mut phase_rx: watch::Receiver<Phase>,
    gap: Duration,
) {
    let mut phase = *phase_rx.borrow();
    let mut sent_in_phase = 0u64;
    let mut total = 0u64;
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let wake = tokio::time::sleep_until(far());
    tokio::pin!(wake);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(20));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let offset = offset(index);
    // When message k of the phase is due.
    let due_at = |phase: &Phase, k: u64| -> Duration {
        Duration::from_secs_f64(((k as f64 + 1.0 - offset) / phase.rate).max(0.0))
    };
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    shared.note_error(format!("client {index}: connection closed"));
                    break;
                };
                if let Message::Text(t) = msg {
                    match parse_delivery(shared.proto, &t) {
                        Ok(Some((tag, ts))) if tag == shared.tag.load(Ordering::Acquire) => {
                            shared.record(index, now_ns().saturating_sub(ts));
                            shared.received.fetch_add(1, Ordering::AcqRel);
                        }
                        Ok(_) => {}
                        Err(e) => shared.note_error(e),
                    }
                }
            }
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                phase = *phase_rx.borrow_and_update();
                if phase.quit {
                    break;
                }
                sent_in_phase = 0;
                total = due(index, phase.rate, (phase.end - phase.start).as_secs_f64());
                let at = if total > 0 { phase.start + due_at(&phase, 0) } else { far().into_std() };
                wake.as_mut().reset(at.into());
            }
            _ = heartbeat.tick(), if shared.proto == Protocol::Peerjs => {
                // PeerJS's client library sends one every 20 s; the server drops a silent client.
                if ws.send(Message::Text(r#"{"type":"HEARTBEAT"}"#.into())).await.is_err() {
                    break;
                }
            }
            () = &mut wake => {
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(phase.start).as_secs_f64();
                let now_due = (elapsed * phase.rate + offset).floor() as u64;
                let upto = now_due.min(total).min(sent_in_phase + 10_000);
                let mut failed = false;
                for k in sent_in_phase..upto {
                    let ts = phase.start_ns + due_at(&phase, k).as_nanos() as u64;
                    let text = envelope(shared.proto, &partner, phase.tag, ts, &shared.pad);
                    if ws.feed(Message::Text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    shared.note_error(format!("client {index}: send failed"));
                    break;
                }
                shared.sent.fetch_add(upto - sent_in_phase, Ordering::AcqRel);
                sent_in_phase = upto;
                let at = if sent_in_phase < total {
                    (phase.start + due_at(&phase, sent_in_phase)).max(Instant::now() + gap)
                } else {
                    far().into_std()
                };
                wake.as_mut().reset(at.into());
            }
        }
    }
    shared.live.fetch_sub(1, Ordering::AcqRel);
    let _ = ws.close(None).await;
}

#[derive(Clone, Debug)]
struct SigStep {
    target_rate: f64,
    /// Messages due in the step (what the clients had to send at the target rate).
    expected: u64,
    sent: u64,
    received: u64,
    secs: f64,
    hist: Histogram,
    cpu: Option<f64>,
    rss: Option<u64>,
    gen_cpu: Option<f64>,
    live: usize,
    errors: u64,
}

impl SigStep {
    /// Percent of the messages due that arrived: one the generator did not manage to send counts as lost.
    fn delivered(&self) -> f64 {
        let due = self.sent.max(self.expected);
        if due == 0 {
            100.0
        } else {
            self.received.min(due) as f64 * 100.0 / due as f64
        }
    }

    /// Passes on delivery and latency alone.
    fn passes(&self, min_delivered: f64, max_p99_ms: f64) -> bool {
        self.delivered() >= min_delivered && self.ms(0.99).is_none_or(|p| p <= max_p99_ms)
    }

    /// Server CPU time per delivered message, microseconds.
    fn cpu_us_per_message(&self) -> Option<f64> {
        let rate = self.rate();
        self.cpu
            .filter(|_| rate > 0.0)
            .map(|c| c / 100.0 * 1e6 / rate)
    }

    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.received as f64 / self.secs
        } else {
            0.0
        }
    }

    fn ms(&self, q: f64) -> Option<f64> {
        self.hist.percentile(q).map(|v| v as f64 / 1e6)
    }

    fn line(&self) -> String {
        format!(
            "target {:>8.0}/s  sent {:>8.0}/s  delivered {:>8.0}/s ({:.2}%)  p50 {:>7.2} ms  p99 {:>8.2} ms  cpu {} (gen {})  rss {}  live {}  errors {}",
            self.target_rate,
            if self.secs > 0.0 {
                self.sent as f64 / self.secs
            } else {
                0.0
            },
            self.rate(),
            self.delivered(),
            self.ms(0.5).unwrap_or(f64::NAN),
            self.ms(0.99).unwrap_or(f64::NAN),
            self.cpu
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "-".into()),
            self.gen_cpu
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "-".into()),
            self.rss
                .map(|r| format!("{r} KiB"))
                .unwrap_or_else(|| "-".into()),
            self.live,
            self.errors,
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "target_rate": self.target_rate,
            "expected": self.expected,
            "sent": self.sent,
            "received": self.received,
            "delivered_percent": self.delivered(),
            "delivered_rate": self.rate(),
            "p50_ms": self.ms(0.5),
            "p99_ms": self.ms(0.99),
            "max_ms": self.hist.max().map(|v| v as f64 / 1e6),
            "server_cpu_percent": self.cpu,
            "server_cpu_us_per_message": self.cpu_us_per_message(),
            "server_rss_kib": self.rss,
            "generator_cpu_percent": self.gen_cpu,
            "live_connections": self.live,
            "errors": self.errors,
        })
    }
}

/// How the clients connect: every pair joins its own room (peercall) or gets its own ids (PeerJS).
struct FleetSpec {
    proto: Protocol,
    server: std::net::SocketAddr,
    run_id: u64,
    pairs: usize,
    /// Pairs being opened at once.
    concurrency: usize,
    gap: Duration,
}

/// The client tasks of one generation of connections, and the channel that tells them what to do.
struct Fleet {
    tasks: tokio::task::JoinSet<()>,
    phase_tx: watch::Sender<Phase>,
}

impl Fleet {
    /// Connects every pair (bounded concurrency, bounded time); each client starts reading at once. Generation
    /// `generation` names rooms and ids apart from earlier generations. Returns the errors of the pairs that failed.
    async fn connect(
        how: &FleetSpec,
        generation: u64,
        shared: &Arc<Shared>,
    ) -> (Fleet, Vec<String>) {
        let (phase_tx, phase_rx) = watch::channel(Phase::idle(Instant::now(), false));
        let run = how.run_id * 100 + generation % 100;
        let mut tasks = tokio::task::JoinSet::new();
        let (proto, server, gap) = (how.proto, how.server, how.gap);
        let opened: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..how.pairs)
            .map(|p| async move { open_pair(proto, server, run, p).await })
            .buffer_unordered(how.concurrency)
            .map(|r| {
                r.map(|pair| {
                    // Clients are numbered 0..clients in the order they connect, as Controller::step counts
                    // the messages due (each client's share of the rate depends on its number).
                    let first = tasks.len();
                    for (i, (ws, _me, partner)) in pair.into_iter().enumerate() {
                        shared.live.fetch_add(1, Ordering::AcqRel);
                        let idx = first + i;
                        tasks.spawn(client_task(
                            idx,
                            ws,
                            partner,
                            shared.clone(),
                            phase_rx.clone(),
                            gap,
                        ));
                    }
                })
            })
            .collect()
            .await;
        let failures = opened
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        (Fleet { tasks, phase_tx }, failures)
    }

    /// Tells every client to close, and waits for them (at most 10 s).
    async fn stop(&mut self) {
        let _ = self.phase_tx.send(Phase::idle(Instant::now(), true));
        let tasks = &mut self.tasks;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

struct Controller {
    shared: Arc<Shared>,
    fleet: Fleet,
    how: FleetSpec,
    /// Clients connected (indices 0..clients).
    clients: usize,
    pid: Option<u32>,
    next_tag: u32,
    /// Times every client was connected again because a step had lost some.
    reconnects: u32,
}

impl Controller {
    /// Each step is judged on its own: when the one before lost clients (a server drops a client that reads too
    /// slowly, and at rates beyond the machine it is the generator that falls behind), every pair is connected
    /// afresh first, instead of the rest of the sweep failing for the missing partners.
    async fn reconnect_if_needed(&mut self) {
        let live = self.shared.live.load(Ordering::Acquire);
        if live >= self.clients {
            return;
        }
        self.fleet.stop().await;
        self.reconnects += 1;
        self.shared.live.store(0, Ordering::Release);
        let (fleet, failures) =
            Fleet::connect(&self.how, u64::from(self.reconnects), &self.shared).await;
        self.fleet = fleet;
        eprintln!(
            "  ({live} of {} clients were left: all connected again, {} now{})",
            self.clients,
            self.shared.live.load(Ordering::Acquire),
            failures
                .first()
                .map(|e| format!("; first failure: {e}"))
                .unwrap_or_default()
        );
    }

    /// A step of the sweep (or at a fixed rate), with every client connected.
    async fn fresh_step(&mut self, rate: f64, duration: Duration) -> SigStep {
        self.reconnect_if_needed().await;
        self.step(rate, duration).await
    }

    async fn step(&mut self, rate: f64, duration: Duration) -> SigStep {
        self.next_tag += 1;
        let tag = self.next_tag;
        let sh = &self.shared;
        sh.tag.store(tag, Ordering::Release);
        sh.sent.store(0, Ordering::Release);
        sh.received.store(0, Ordering::Release);
        let errors0 = sh.errors.load(Ordering::Acquire);
        let _ = sh.take_histogram();
        let clients = self.clients.max(1);
        let start = Instant::now() + Duration::from_millis(50);
        let start_ns = now_ns() + 50_000_000;
        let end = start + duration.min(Duration::from_secs(120));
        let per_client = rate / clients as f64;
        let secs = (end - start).as_secs_f64();
        let expected: u64 = (0..clients).map(|i| due(i, per_client, secs)).sum();
        let meter = CpuMeter::new(self.pid);
        let own = CpuMeter::new(Some(std::process::id()));
        let _ = self.fleet.phase_tx.send(Phase {
            tag,
            rate: per_client,
            start,
            start_ns,
            end,
            quit: false,
        });
        tokio::time::sleep_until(end.into()).await;
        let cpu = meter.finish();
        let gen_cpu = own.finish();
        // Drain: up to 3 s for what is still in flight.
        let drain_end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < drain_end
            && sh.received.load(Ordering::Acquire) < sh.sent.load(Ordering::Acquire).max(expected)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Idle phase; messages of this step arriving from now on are ignored.
        sh.tag.store(0, Ordering::Release);
        let _ = self.fleet.phase_tx.send(Phase::idle(end, false));
        SigStep {
            target_rate: rate,
            expected,
            sent: sh.sent.load(Ordering::Acquire),
            received: sh.received.load(Ordering::Acquire),
            secs: (end - start).as_secs_f64(),
            hist: sh.take_histogram(),
            cpu,
            rss: self.pid.and_then(|p| rss_kib(p).ok()),
            gen_cpu,
            live: sh.live.load(Ordering::Acquire),
            errors: sh.errors.load(Ordering::Acquire) - errors0,
        }
    }
}

pub fn signal(args: SignalArgs) -> anyhow::Result<()> {
    crate::sys::require_loopback(args.server, "--server")?;
    let nofile = crate::sys::raise_nofile();
    let pairs = (args.clients / 2).max(1);
    if (nofile as usize) < pairs * 2 + 64 {
        bail!(
            "{} connections need more open files than the limit of {nofile} (raise ulimit -n)",
            pairs * 2
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.clamp(1, 16))
        .enable_all()
        .build()?;
    rt.block_on(run(args, pairs))
}

async fn run(args: SignalArgs, pairs: usize) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        proto: args.protocol,
        pad: "x".repeat(args.payload.min(60_000)),
        tag: AtomicU32::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        live: AtomicUsize::new(0),
        shards: (0..64)
            .map(|_| std::sync::Mutex::new(Histogram::new()))
            .collect(),
        first_error: std::sync::Mutex::new(None),
    });
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        % 1_000_000_000;
    let rss_before = args.pid.and_then(|p| rss_kib(p).ok());

    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(args.batch_ms.clamp(0.0, 100.0) / 1000.0);
    let how = FleetSpec {
        proto: args.protocol,
        server: args.server,
        run_id,
        pairs,
        concurrency: (args.connect_concurrency / 2).clamp(1, 2000),
        gap,
    };
    let (fleet, failures) = Fleet::connect(&how, 0, &shared).await;
    let connect_secs = t0.elapsed().as_secs_f64();
    let live = shared.live.load(Ordering::Acquire);
    eprintln!(
        "{:?}: {live} of {} clients connected in {connect_secs:.1} s ({} pairs failed{})",
        args.protocol,
        pairs * 2,
        failures.len(),
        failures
            .first()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );
    let mut ctl = Controller {
        shared: shared.clone(),
        fleet,
        how,
        clients: live,
        pid: args.pid,
        next_tag: 0,
        reconnects: 0,
    };

    let mut result = json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "clients": pairs * 2,
        "connected": live,
        "connect_failures": failures.len(),
        "first_connect_error": failures.first(),
        "connect_secs": connect_secs,
        "payload": args.payload,
        "rss_before_kib": rss_before,
    });
    // Hold: everything idle but alive; then check every connection still relays (one message each).
    if args.hold > 0.0 {
        let hold = Duration::from_secs_f64(args.hold.min(3600.0));
        let rss_connected = args.pid.and_then(|p| rss_kib(p).ok());
        tokio::time::sleep(hold).await;
        let rss_held = args.pid.and_then(|p| rss_kib(p).ok());
        let clients = (pairs * 2) as f64;
        // One message per client over 2 s.
        let check = ctl.step(clients / 2.0, Duration::from_secs(2)).await;
        eprintln!(
            "held {:.0} s: live {}; server VmRSS {:?} KiB before, {:?} KiB connected, {:?} KiB after holding; check {}",
            hold.as_secs_f64(),
            shared.live.load(Ordering::Acquire),
            rss_before,
            rss_connected,
            rss_held,
            check.line()
        );
        result["hold"] = json!({
            "secs": hold.as_secs_f64(),
            "live": shared.live.load(Ordering::Acquire),
            "rss_connected_kib": rss_connected,
            "rss_held_kib": rss_held,
            "bytes_per_connection": match (rss_before, rss_held) {
                (Some(b), Some(h)) if live > 0 => Some((h as f64 - b as f64) * 1024.0 / live as f64),
                _ => None,
            },
            "check": check.to_json(),
        });
    }
    let duration = Duration::from_secs_f64(args.duration.clamp(0.2, 120.0));
    if let Some(r) = args.latency_rate {
        let s = ctl.step(r, duration).await;
        eprintln!("latency at {r:.0}/s: {}", s.line());
        result["latency"] = s.to_json();
    }
    let cfg = SweepConfig {
        start_rate: args.start_rate.max(1.0),
        min_rate: 1.0,
        max_rate: args.max_rate,
        factor: args.factor.clamp(1.05, 4.0),
        precision: args.precision.clamp(0.005, 0.5),
        max_loss: 0.0,
        step: duration,
        drain: Duration::from_secs(3),
        pause: Duration::from_millis(0),
        max_steps: args.max_steps.clamp(1, 64),
    };
    let mut repeats = Vec::new();
    let mut bests = Vec::new();
    for r in 0..args.repeat.clamp(1, 20) {
        if args.start_rate <= 0.0 && args.rate.is_none() {
            break;
        }
        let mut steps = Vec::new();
        let mut best: Option<SigStep> = None;
        if let Some(rate) = args.rate {
            let s = ctl.fresh_step(rate, duration).await;
            eprintln!("{}", s.line());
            steps.push(s);
        } else {
            eprintln!("sweep {} of {}", r + 1, args.repeat.clamp(1, 20));
            // The search is synchronous; run each step on this runtime from a blocking section.
            let handle = tokio::runtime::Handle::current();
            let (min_delivered, max_p99) = (args.min_delivered, args.max_p99_ms);
            let ctl_ref = &mut ctl;
            let (b, all) = tokio::task::block_in_place(|| {
                search(&cfg, |rate, _| {
                    let s = handle.block_on(ctl_ref.fresh_step(rate, duration));
                    let ok = s.passes(min_delivered, max_p99);
                    eprintln!("  {} {}", s.line(), if ok { "ok" } else { "FAIL" });
                    std::thread::sleep(Duration::from_millis(300));
                    (s, ok)
                })
            });
            best = b;
            steps = all;
        }
        if let Some(b) = &best {
            eprintln!("repeat {}: best {}", r + 1, b.line());
            bests.push(b.rate());
        }
        repeats.push(json!({
            "best": best.as_ref().map(SigStep::to_json),
            "steps": steps.iter().map(SigStep::to_json).collect::<Vec<_>>(),
        }));
    }
    if let Some(m) = median(&bests) {
        eprintln!("median of the best rates: {m:.0} messages/s");
    }
    result["best_rates"] = json!(bests);
    result["median_best_rate"] = json!(median(&bests));
    result["repeats"] = json!(repeats);
    result["errors"] = json!(shared.errors.load(Ordering::Acquire));
    result["first_error"] = json!(shared.first_error.lock().ok().and_then(|f| f.clone()));
    result["live_at_end"] = json!(shared.live.load(Ordering::Acquire));
    result["reconnects"] = json!(ctl.reconnects);
    ctl.fleet.stop().await;
    if args.json {
        println!("RESULT {result}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_the_same_data() {
        let a = envelope(Protocol::Peercall, "p1", 3, 42, "xx");
        let b = envelope(Protocol::Peerjs, "p1", 3, 42, "xx");
        let va: Value = serde_json::from_str(&a).expect("JSON");
        let vb: Value = serde_json::from_str(&b).expect("JSON");
        assert_eq!(va["data"], vb["payload"]);
        assert_eq!(va["to"], "p1");
        assert_eq!(vb["dst"], "p1");
        // What each server delivers:
        let da = r#"{"v":1,"type":"message","from":"p0","data":{"s":3,"t":42,"p":"xx"}}"#;
        let db = r#"{"type":"OFFER","src":"p0","dst":"p1","payload":{"s":3,"t":42,"p":"xx"}}"#;
        assert_eq!(parse_delivery(Protocol::Peercall, da), Ok(Some((3, 42))));
        assert_eq!(parse_delivery(Protocol::Peerjs, db), Ok(Some((3, 42))));
        assert_eq!(
            parse_delivery(Protocol::Peercall, r#"{"v":1,"type":"pong"}"#),
            Ok(None)
        );
        assert!(
            parse_delivery(
                Protocol::Peercall,
                r#"{"v":1,"type":"error","code":"rate-limited"}"#
            )
            .is_err()
        );
        assert!(parse_delivery(Protocol::Peerjs, "not json").is_err());
    }
}
