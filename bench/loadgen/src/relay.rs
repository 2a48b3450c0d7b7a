//! `turn-relay`, `stun-binding` and `hold-allocations`: setting up allocations (control plane, tokio) and
//! driving the packet engine (data plane, threads + batched syscalls).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;

use crate::engine::{BindingWorkload, Engine, RelayWorkload, Step, Sweep, SweepConfig, Workload};
use crate::procfs::rss_kib;
use crate::stats::median;
use crate::sys::{loopback_any_port, require_loopback, set_buffers, udp_socket};
use crate::turnclient::{Credentials, Retry, Session};

/// Socket buffer size for the generator's own sockets.
const BUF: usize = 8 << 20;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayMode {
    /// Through a TURN server: Allocate + ChannelBind, ChannelData out, bare UDP at the peers.
    Turn,
    /// Through the raw forwarder (`loadgen forwarder`): same ChannelData frames, header stripped.
    Forwarder,
    /// Straight from the client sockets to the peer sockets (the loopback floor for latency).
    Direct,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// Run one step at this rate (packets/s) instead of a sweep.
    #[arg(long)]
    pub rate: Option<f64>,
    /// First rate of the sweep (packets/s).
    #[arg(long, default_value_t = 20_000.0)]
    pub start_rate: f64,
    /// Never offer more than this (packets/s).
    #[arg(long, default_value_t = 2_000_000.0)]
    pub max_rate: f64,
    /// Multiply the rate by this while loss stays low.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Stop bisecting when good and bad rates are within this fraction.
    #[arg(long, default_value_t = 0.04)]
    pub precision: f64,
    /// Highest acceptable loss in percent.
    #[arg(long, default_value_t = 0.1)]
    pub max_loss: f64,
    /// Seconds per step (at most 120).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// At most this many steps per sweep.
    #[arg(long, default_value_t = 16)]
    pub max_steps: usize,
    /// Repeat the whole sweep this many times (the result reports each and their median).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Packets per sendmmsg call, per socket.
    #[arg(long, default_value_t = 8)]
    pub burst: usize,
    #[arg(long, default_value_t = 1)]
    pub send_threads: usize,
    #[arg(long, default_value_t = 1)]
    pub recv_threads: usize,
    /// Measure latency at this fixed rate first (packets/s), e.g. well below every server's limit.
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Server PID: CPU (from /proc/PID/stat) and VmRSS are reported per step.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print a final `RESULT {json}` line.
    #[arg(long)]
    pub json: bool,
}

impl SweepArgs {
    fn config(&self) -> SweepConfig {
        SweepConfig {
            start_rate: self.start_rate,
            min_rate: 1000.0,
            max_rate: self.max_rate.min(crate::engine::MAX_RATE),
            factor: self.factor.clamp(1.05, 4.0),
            precision: self.precision.clamp(0.005, 0.5),
            max_loss: self.max_loss,
            step: Duration::from_secs_f64(self.duration.clamp(0.2, 120.0)),
            drain: Duration::from_millis(500),
            pause: Duration::from_millis(300),
            max_steps: self.max_steps.clamp(1, 64),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RelayArgs {
    #[arg(long, value_enum, default_value_t = RelayMode::Turn)]
    pub mode: RelayMode,
    /// TURN server or forwarder address (loopback only).
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// Long-term credentials NAME:PASSWORD.
    #[arg(long)]
    pub user: Option<String>,
    /// Shared secret of coturn's REST scheme (a distinct user per allocation).
    #[arg(long)]
    pub auth_secret: Option<String>,
    /// Number of allocations (client sockets).
    #[arg(long, default_value_t = 64)]
    pub allocations: usize,
    /// Number of peer sockets the allocations send to (round robin). Forwarder mode uses one.
    #[arg(long, default_value_t = 1)]
    pub peers: usize,
    /// Payload bytes per packet (after the 4-byte ChannelData header), at least 28.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Allocations set up concurrently.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
    /// Closed loop instead of the rate sweep: each allocation keeps this many packets in flight and sends the
    /// next when one arrives (`--duration` per run, `--repeat` runs); repeatable: one series per window.
    #[arg(long)]
    pub window: Vec<usize>,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

struct Setup {
    clients: Vec<UdpSocket>,
    peers: Vec<UdpSocket>,
    channels: Option<Vec<u16>>,
    /// Keeps the allocations alive (their sockets were duplicated into `clients`) and releases them on drop.
    _refresher: Option<Refresher>,
}

/// A thread that refreshes the allocations and their channels every 60 s (permissions last 300 s) and
/// deletes the allocations when dropped.
struct Refresher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Refresher {
    fn start(
        rt: tokio::runtime::Runtime,
        mut sessions: Vec<Session>,
        peers: Vec<SocketAddr>,
    ) -> Refresher {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < Duration::from_secs(60) {
                    continue;
                }
                last = Instant::now();
                let failures: usize = rt.block_on(async {
                    futures_util::stream::iter(sessions.iter_mut().enumerate())
                        .map(|(i, s)| {
                            let peer = peers[i % peers.len()];
                            async move {
                                let ok = s.refresh(600).await.is_ok()
                                    && s.channel_bind(0x4000, peer).await.is_ok();
                                usize::from(!ok)
                            }
                        })
                        .buffer_unordered(64)
                        .fold(0, |a, b| async move { a + b })
                        .await
                });
                if failures > 0 {
                    eprintln!("warning: {failures} allocations failed to refresh");
                }
            }
            rt.block_on(async {
                futures_util::stream::iter(sessions.iter_mut())
                    .map(|s| async move {
                        s.retry = Retry {
                            rto: Duration::from_millis(200),
                            tries: 2,
                        };
                        let _ = s.refresh(0).await;
                    })
                    .buffer_unordered(256)
                    .collect::<Vec<()>>()
                    .await
            });
        });
        Refresher {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

async fn allocate_many(
    server: SocketAddr,
    creds: &Credentials,
    count: usize,
    concurrency: usize,
    lifetime: Option<u32>,
    peers: &[SocketAddr],
    bind_channel: bool,
) -> (Vec<Session>, Vec<String>) {
    let results: Vec<anyhow::Result<Session>> = futures_util::stream::iter(0..count)
        .map(|i| {
            let (user, pass) = creds.for_index(i);
            let peer = if peers.is_empty() {
                None
            } else {
                Some(peers[i % peers.len()])
            };
            async move {
                let mut s = Session::allocate(
                    server,
                    loopback_any_port(),
                    &user,
                    &pass,
                    lifetime,
                    Retry::default(),
                )
                .await?;
                if let (Some(peer), true) = (peer, bind_channel) {
                    s.channel_bind(0x4000, peer).await.context("ChannelBind")?;
                }
                Ok(s)
            }
        })
        .buffer_unordered(concurrency.clamp(1, 4096))
        .collect()
        .await;
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => ok.push(s),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (ok, errors)
}

fn setup_relay(args: &RelayArgs) -> anyhow::Result<Setup> {
    let n = args.allocations.clamp(1, 20_000);
    let peer_count = if args.mode == RelayMode::Forwarder {
        1
    } else {
        args.peers.clamp(1, 1024)
    };
    let peers: Vec<UdpSocket> = (0..peer_count)
        .map(|_| udp_socket(loopback_any_port(), BUF))
        .collect::<anyhow::Result<_>>()?;
    let peer_addrs: Vec<SocketAddr> = peers
        .iter()
        .map(|p| p.local_addr())
        .collect::<Result<_, _>>()?;
    match args.mode {
        RelayMode::Direct => {
            let mut clients = Vec::new();
            for i in 0..n {
                let c = udp_socket(loopback_any_port(), BUF)?;
                c.connect(peer_addrs[i % peer_addrs.len()])?;
                clients.push(c);
            }
            Ok(Setup {
                clients,
                peers,
                channels: None,
                _refresher: None,
            })
        }
        RelayMode::Forwarder => {
            let server = args
                .server
                .context("--server (the forwarder's address) is required")?;
            require_loopback(server, "--server")?;
            // Tell the forwarder where to send: it learns the peer from a "PEER" datagram.
            for _ in 0..3 {
                peers[0].send_to(b"PEER", server)?;
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut clients = Vec::new();
            for _ in 0..n {
                let c = udp_socket(loopback_any_port(), BUF)?;
                c.connect(server)?;
                clients.push(c);
            }
            Ok(Setup {
                clients,
                peers,
                channels: Some(vec![0x4000; n]),
                _refresher: None,
            })
        }
        RelayMode::Turn => {
            let server = args
                .server
                .context("--server (the TURN server's address) is required")?;
            require_loopback(server, "--server")?;
            let creds = Credentials::parse(args.user.as_deref(), args.auth_secret.as_deref())?;
            let t0 = Instant::now();
            let rt = runtime()?;
            let (sessions, errors) = rt.block_on(allocate_many(
                server,
                &creds,
                n,
                args.setup_concurrency,
                None,
                &peer_addrs,
                true,
            ));
            if let Some(e) = errors.first() {
                bail!(
                    "{} of {n} allocations failed, first error: {e}",
                    errors.len()
                );
            }
            eprintln!(
                "{n} allocations with a channel each in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            let mut clients = Vec::new();
            for s in &sessions {
                if !s.relayed.ip().is_loopback() {
                    bail!(
                        "relayed address {} is not loopback: start the server with --relay-ip 127.0.0.1",
                        s.relayed
                    );
                }
                // A duplicate descriptor for the data plane; the session keeps the original (and the allocation).
                let fd = s.sock.as_raw_fd();
                // SAFETY: dup of a valid descriptor owned by the session; the copy is owned by the new UdpSocket.
                let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    return Err(std::io::Error::last_os_error()).context("dup");
                }
                // SAFETY: `dup` is a fresh descriptor we own.
                let c = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(dup) };
                set_buffers(c.as_raw_fd(), BUF);
                clients.push(c);
            }
            let refresher = Refresher::start(rt, sessions, peer_addrs);
            Ok(Setup {
                clients,
                peers,
                channels: Some(vec![0x4000; n]),
                _refresher: Some(refresher),
            })
        }
    }
}

fn print_and_collect(label: &str, sweeps: &[Sweep], latency: Option<&Step>) -> serde_json::Value {
    let bests: Vec<f64> = sweeps
        .iter()
        .filter_map(|s| s.best.as_ref().map(|b| b.received_rate()))
        .collect();
    let med = median(&bests);
    for (i, s) in sweeps.iter().enumerate() {
        match &s.best {
            Some(b) => eprintln!("{label} repeat {}: best {}", i + 1, b.line()),
            None => eprintln!("{label} repeat {}: no rate met the loss target", i + 1),
        }
    }
    if let Some(m) = med {
        eprintln!(
            "{label}: median of the best rates {m:.0}/s over {} repeats",
            bests.len()
        );
    }
    if let Some(l) = latency {
        eprintln!("{label} latency: {}", l.line());
    }
    // The median-rate repeat's CPU per packet, to report alongside.
    let cpu: Vec<f64> = sweeps
        .iter()
        .filter_map(|s| s.best.as_ref().and_then(|b| b.cpu_us_per_packet()))
        .collect();
    let cpu_pct: Vec<f64> = sweeps
        .iter()
        .filter_map(|s| s.best.as_ref().and_then(|b| b.server_cpu_percent))
        .collect();
    json!({
        "best_rates": bests,
        "median_best_rate": med,
        "median_cpu_us_per_packet": median(&cpu),
        "median_cpu_percent_at_best": median(&cpu_pct),
        "latency": latency.map(|l| l.to_json()),
        "repeats": sweeps.iter().map(|s| json!({
            "best": s.best.as_ref().map(|b| b.to_json()),
            "steps": s.steps.iter().map(|x| x.to_json()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn drive(
    engine: &Engine,
    w: &dyn Workload,
    a: &SweepArgs,
    label: &str,
) -> anyhow::Result<serde_json::Value> {
    // Check the path works before measuring.
    let probe = engine.run(
        w,
        1000.0,
        Duration::from_millis(300),
        Duration::from_millis(500),
        0xFFFF_0000,
    );
    if probe.received == 0 {
        bail!(
            "{label}: nothing came back at 1000 packets/s (sent {}); is the path allowed?",
            probe.sent
        );
    }
    let latency = a.latency_rate.map(|r| {
        let s = engine.run(
            w,
            r,
            Duration::from_secs_f64(a.duration.clamp(0.2, 120.0)),
            Duration::from_millis(500),
            0xFFFF_0001,
        );
        eprintln!("{label} latency at {r:.0}/s: {}", s.line());
        s
    });
    let mut sweeps = Vec::new();
    let cfg = a.config();
    for r in 0..a.repeat.clamp(1, 20) {
        let tag = (r as u32 + 1) << 8;
        if let Some(rate) = a.rate {
            let step = engine.run(w, rate, cfg.step, cfg.drain, tag);
            eprintln!("{label}: {}", step.line());
            let ok = step.loss() < cfg.max_loss;
            sweeps.push(Sweep {
                best: ok.then(|| step.clone()),
                steps: vec![step],
            });
        } else {
            eprintln!("{label}: sweep {} of {}", r + 1, a.repeat.clamp(1, 20));
            sweeps.push(engine.sweep(w, &cfg, tag, true));
        }
        std::thread::sleep(cfg.pause);
    }
    Ok(print_and_collect(label, &sweeps, latency.as_ref()))
}

/// The closed-loop series: for each window, `repeat` runs; the median run (by delivered rate) is reported.
fn closed(
    engine: &Engine,
    w: &dyn Workload,
    windows: &[usize],
    a: &SweepArgs,
    label: &str,
) -> serde_json::Value {
    let duration = Duration::from_secs_f64(a.duration.clamp(0.2, 120.0));
    let mut series = Vec::new();
    for (wi, &window) in windows.iter().take(16).enumerate() {
        let mut runs: Vec<Step> = (0..a.repeat.clamp(1, 20))
            .map(|r| {
                let tag = 0x4000_0000 | ((wi as u32) << 8) | r as u32;
                let s = engine.closed_loop(w, window, duration, Duration::from_millis(500), tag);
                eprintln!("{label} closed loop, window {window}: {}", s.line());
                std::thread::sleep(Duration::from_millis(300));
                s
            })
            .collect();
        runs.sort_by(|x, y| x.received_rate().total_cmp(&y.received_rate()));
        let mid = &runs[runs.len() / 2];
        series.push(json!({
            "window": window,
            "median_rate": mid.received_rate(),
            "median": mid.to_json(),
            "rates": runs.iter().map(Step::received_rate).collect::<Vec<_>>(),
            "runs": runs.iter().map(Step::to_json).collect::<Vec<_>>(),
        }));
    }
    json!({ "closed_loop": series })
}

pub fn turn_relay(args: RelayArgs) -> anyhow::Result<()> {
    crate::sys::raise_nofile();
    if args.size < crate::engine::MIN_PAYLOAD || args.size > 1400 {
        bail!(
            "--size must be between {} and 1400 bytes",
            crate::engine::MIN_PAYLOAD
        );
    }
    let setup = setup_relay(&args)?;
    let engine = Engine {
        send_fds: setup.clients.iter().map(|c| c.as_raw_fd()).collect(),
        recv_fds: setup.peers.iter().map(|p| p.as_raw_fd()).collect(),
        burst: args.sweep.burst,
        send_threads: args.sweep.send_threads,
        recv_threads: args.sweep.recv_threads,
        pid: args.sweep.pid,
    };
    let w = RelayWorkload {
        channels: setup.channels.clone(),
        size: args.size,
    };
    let label = format!("{:?}", args.mode).to_lowercase();
    let mut result = if args.window.is_empty() {
        drive(&engine, &w, &args.sweep, &label)?
    } else {
        closed(&engine, &w, &args.window, &args.sweep, &label)
    };
    result["mode"] = json!(label);
    result["allocations"] = json!(setup.clients.len());
    result["peers"] = json!(setup.peers.len());
    result["size"] = json!(args.size);
    if args.sweep.json {
        println!("RESULT {result}");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct BindingArgs {
    /// STUN server address (loopback only).
    #[arg(long)]
    pub server: SocketAddr,
    /// Client sockets sending Binding requests.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

pub fn stun_binding(args: BindingArgs) -> anyhow::Result<()> {
    crate::sys::raise_nofile();
    require_loopback(args.server, "--server")?;
    let clients: Vec<UdpSocket> = (0..args.clients.clamp(1, 10_000))
        .map(|_| {
            let c = udp_socket(loopback_any_port(), BUF)?;
            c.connect(args.server)?;
            Ok(c)
        })
        .collect::<anyhow::Result<_>>()?;
    let fds: Vec<_> = clients.iter().map(|c| c.as_raw_fd()).collect();
    let engine = Engine {
        send_fds: fds.clone(),
        recv_fds: fds,
        burst: args.sweep.burst,
        send_threads: args.sweep.send_threads,
        recv_threads: args.sweep.recv_threads,
        pid: args.sweep.pid,
    };
    let mut result = drive(&engine, &BindingWorkload, &args.sweep, "binding")?;
    result["clients"] = json!(clients.len());
    if args.sweep.json {
        println!("RESULT {result}");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// TURN server address (loopback only).
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub auth_secret: Option<String>,
    /// Allocations to create and hold.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Allocations set up concurrently.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Also bind one channel per allocation (to a peer socket of the generator).
    #[arg(long)]
    pub channel: bool,
    /// Seconds to hold them after creation (at most 3600).
    #[arg(long, default_value_t = 30.0)]
    pub hold: f64,
    /// Refresh every allocation this often while holding (seconds).
    #[arg(long, default_value_t = 20.0)]
    pub refresh_every: f64,
    /// LIFETIME requested in Allocate and Refresh (seconds).
    #[arg(long, default_value_t = 600)]
    pub lifetime: u32,
    /// Give up creating after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// The server's PID, for VmRSS.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

pub fn hold_allocations(args: HoldArgs) -> anyhow::Result<()> {
    let nofile = crate::sys::raise_nofile();
    require_loopback(args.server, "--server")?;
    let count = args.count.clamp(1, 50_000);
    if (nofile as usize) < count + 64 {
        bail!(
            "need {} open files, the limit is {nofile} (raise ulimit -n)",
            count + 64
        );
    }
    let creds = Credentials::parse(args.user.as_deref(), args.auth_secret.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let peer = udp_socket(loopback_any_port(), BUF)?;
    let peer_addr = peer.local_addr()?;
    let rss = |p: Option<u32>| p.and_then(|p| rss_kib(p).ok());
    let rss_before = rss(args.pid);
    let t0 = Instant::now();
    let timeout = Duration::from_secs_f64(args.timeout.clamp(1.0, 3600.0));
    let (mut sessions, errors) = rt
        .block_on(async {
            tokio::time::timeout(
                timeout,
                allocate_many(
                    args.server,
                    &creds,
                    count,
                    args.concurrency,
                    Some(args.lifetime),
                    &[peer_addr],
                    args.channel,
                ),
            )
            .await
        })
        .context("creating the allocations took longer than --timeout")?;
    let create_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss(args.pid);
    eprintln!(
        "created {} of {count} allocations in {create_secs:.1} s ({:.0}/s); {} failed{}",
        sessions.len(),
        sessions.len() as f64 / create_secs,
        errors.len(),
        errors
            .first()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );
    let created = sessions.len();
    let per_alloc = |after: Option<u64>| match (rss_before, after) {
        (Some(b), Some(a)) if created > 0 => Some((a as f64 - b as f64) * 1024.0 / created as f64),
        _ => None,
    };
    let bytes_per_alloc = per_alloc(rss_after);
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        eprintln!(
            "server VmRSS {b} KiB -> {a} KiB: {:.0} bytes per allocation",
            bytes_per_alloc.unwrap_or(f64::NAN)
        );
    }
    // Hold, refreshing everything every `refresh_every` seconds.
    let hold = Duration::from_secs_f64(args.hold.clamp(0.0, 3600.0));
    let every = Duration::from_secs_f64(args.refresh_every.clamp(1.0, 3600.0));
    let hold_end = Instant::now() + hold;
    let mut refresh_failures = 0usize;
    let mut refreshes = 0usize;
    while Instant::now() + every <= hold_end {
        std::thread::sleep(every);
        let lifetime = args.lifetime;
        let failures: usize = rt.block_on(async {
            futures_util::stream::iter(sessions.iter_mut())
                .map(|s| async move { s.refresh(lifetime).await.is_err() as usize })
                .buffer_unordered(args.concurrency.clamp(1, 4096))
                .fold(0, |a, b| async move { a + b })
                .await
        });
        refreshes += 1;
        refresh_failures += failures;
        eprintln!(
            "refresh round {refreshes}: {failures} failures; VmRSS {:?} KiB",
            rss(args.pid)
        );
    }
    let remaining = hold_end.saturating_duration_since(Instant::now());
    std::thread::sleep(remaining);
    let rss_held = rss(args.pid);
    // Release.
    let released: usize = rt.block_on(async {
        futures_util::stream::iter(sessions.iter_mut())
            .map(|s| async move { s.refresh(0).await.is_ok() as usize })
            .buffer_unordered(args.concurrency.clamp(1, 4096))
            .fold(0, |a, b| async move { a + b })
            .await
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss_released = rss(args.pid);
    eprintln!(
        "held {:.0} s, {refreshes} refresh rounds, {refresh_failures} refresh failures; released {released}; VmRSS held {rss_held:?} KiB, after release {rss_released:?} KiB",
        hold.as_secs_f64()
    );
    if args.json {
        println!(
            "RESULT {}",
            json!({
                "requested": count,
                "created": created,
                "failed": errors.len(),
                "first_error": errors.first(),
                "create_secs": create_secs,
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_after,
                "rss_held_kib": rss_held,
                "rss_released_kib": rss_released,
                "bytes_per_allocation": bytes_per_alloc,
                "bytes_per_allocation_held": per_alloc(rss_held),
                "refresh_rounds": refreshes,
                "refresh_failures": refresh_failures,
                "released": released,
                "channel": args.channel,
            })
        );
    }
    drop(sessions);
    Ok(())
}
