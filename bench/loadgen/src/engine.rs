//! The open-loop packet engine: paced sendmmsg from a set of sockets, recvmmsg+epoll on another set, a
//! timestamp in every packet, and a rate sweep that finds the highest rate with less than the allowed loss.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::procfs::{CpuMeter, rss_kib};
use crate::stats::{Histogram, loss_percent};
use crate::sys::{Batch, Epoll, now_ns, precise_sleep_setup};

/// What the packets look like: how to build one and how to recognise (and time) one that came back.
pub trait Workload: Sync {
    /// Writes the packet number `seq` of sending socket `sock` into `buf`; returns its length.
    fn fill(&self, sock: usize, seq: u64, ts: u64, tag: u32, buf: &mut [u8]) -> usize;
    /// The send timestamp of a received packet that belongs to run `tag`, or `None` (foreign or stale).
    fn check(&self, pkt: &[u8], tag: u32) -> Option<u64>;
    /// Largest packet `fill` writes.
    fn max_len(&self) -> usize;
    /// The sending socket a received packet came from, when the packet says (the closed loop needs it).
    fn sock_of(&self, _pkt: &[u8]) -> Option<usize> {
        None
    }
}

/// Sockets and batching parameters.
pub struct Engine {
    pub send_fds: Vec<RawFd>,
    pub recv_fds: Vec<RawFd>,
    /// Packets per sendmmsg call (per socket, round robin over sockets).
    pub burst: usize,
    pub send_threads: usize,
    pub recv_threads: usize,
    /// Server PID for CPU and memory readings.
    pub pid: Option<u32>,
}

/// One measurement at one offered rate.
#[derive(Clone, Debug)]
pub struct Step {
    pub target_rate: f64,
    pub sent: u64,
    pub received: u64,
    pub send_secs: f64,
    pub hist: Histogram,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// The load generator's own CPU use (percent of one core) during the step.
    pub generator_cpu_percent: Option<f64>,
    pub send_errors: u64,
}

impl Step {
    fn empty(target_rate: f64) -> Step {
        Step {
            target_rate,
            sent: 0,
            received: 0,
            send_secs: 0.0,
            hist: Histogram::new(),
            server_cpu_percent: None,
            server_rss_kib: None,
            generator_cpu_percent: None,
            send_errors: 0,
        }
    }

    pub fn achieved_rate(&self) -> f64 {
        if self.send_secs > 0.0 {
            self.sent as f64 / self.send_secs
        } else {
            0.0
        }
    }

    pub fn received_rate(&self) -> f64 {
        if self.send_secs > 0.0 {
            self.received as f64 / self.send_secs
        } else {
            0.0
        }
    }

    pub fn loss(&self) -> f64 {
        loss_percent(self.sent, self.received)
    }

    pub fn p50_us(&self) -> Option<f64> {
        self.hist.percentile(0.5).map(|v| v as f64 / 1000.0)
    }

    pub fn p99_us(&self) -> Option<f64> {
        self.hist.percentile(0.99).map(|v| v as f64 / 1000.0)
    }

    /// Server CPU time per relayed packet in microseconds.
    pub fn cpu_us_per_packet(&self) -> Option<f64> {
        let cpu = self.server_cpu_percent?;
        let rate = self.received_rate();
        (rate > 0.0).then(|| cpu / 100.0 / rate * 1e6)
    }

    pub fn line(&self) -> String {
        format!(
            "target {:>9.0}/s  sent {:>9.0}/s  recv {:>9.0}/s  loss {:>7.3}%  p50 {:>8.1} µs  p99 {:>9.1} µs  cpu {} (gen {})  rss {}",
            self.target_rate,
            self.achieved_rate(),
            self.received_rate(),
            self.loss(),
            self.p50_us().unwrap_or(f64::NAN),
            self.p99_us().unwrap_or(f64::NAN),
            self.server_cpu_percent
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "-".into()),
            self.generator_cpu_percent
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "-".into()),
            self.server_rss_kib
                .map(|r| format!("{} KiB", r))
                .unwrap_or_else(|| "-".into()),
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "target_rate": self.target_rate,
            "sent": self.sent,
            "received": self.received,
            "sent_rate": self.achieved_rate(),
            "received_rate": self.received_rate(),
            "loss_percent": self.loss(),
            "p50_us": self.p50_us(),
            "p99_us": self.p99_us(),
            "max_us": self.hist.max().map(|v| v as f64 / 1000.0),
            "server_cpu_percent": self.server_cpu_percent,
            "server_cpu_us_per_packet": self.cpu_us_per_packet(),
            "server_rss_kib": self.server_rss_kib,
            "generator_cpu_percent": self.generator_cpu_percent,
            "send_errors": self.send_errors,
        })
    }
}

/// Hard bounds on one step, whatever the caller asks for.
pub const MAX_STEP: Duration = Duration::from_secs(120);
pub const MAX_RATE: f64 = 20_000_000.0;

impl Engine {
    /// Sends at `rate` packets/s for `duration`, then waits up to `drain` for stragglers.
    pub fn run(
        &self,
        w: &dyn Workload,
        rate: f64,
        duration: Duration,
        drain: Duration,
        tag: u32,
    ) -> Step {
        let rate = rate.clamp(1.0, MAX_RATE);
        let duration = duration.min(MAX_STEP);
        let sent_total = AtomicU64::new(0);
        let recv_total = AtomicU64::new(0);
        let send_errors = AtomicU64::new(0);
        let senders_done = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let send_threads = self.send_threads.clamp(1, self.send_fds.len().max(1));
        let recv_threads = self.recv_threads.clamp(1, self.recv_fds.len().max(1));
        let slot = w.max_len().max(64);
        let burst = self.burst.clamp(1, 1024);

        let meter = CpuMeter::new(self.pid);
        let own = CpuMeter::new(Some(std::process::id()));
        let start = now_ns();
        let end = start + duration.as_nanos() as u64;
        let mut send_secs = 0.0;
        let mut hist = Histogram::new();
        std::thread::scope(|s| {
            let mut receivers = Vec::new();
            for t in 0..recv_threads {
                let fds: Vec<RawFd> = self
                    .recv_fds
                    .iter()
                    .copied()
                    .skip(t)
                    .step_by(recv_threads)
                    .collect();
                let (recv_total, stop) = (&recv_total, &stop);
                receivers.push(s.spawn(move || receive_loop(w, &fds, tag, slot, recv_total, stop)));
            }
            let mut senders = Vec::new();
            for t in 0..send_threads {
                let socks: Vec<(usize, RawFd)> = self
                    .send_fds
                    .iter()
                    .copied()
                    .enumerate()
                    .skip(t)
                    .step_by(send_threads)
                    .collect();
                let (sent_total, send_errors) = (&sent_total, &send_errors);
                let per_thread = rate / send_threads as f64;
                senders.push(s.spawn(move || {
                    send_loop(
                        w,
                        &socks,
                        per_thread,
                        start,
                        end,
                        tag,
                        slot,
                        burst,
                        sent_total,
                        send_errors,
                    )
                }));
            }
            let mut last_send = start;
            for h in senders {
                if let Ok(t) = h.join() {
                    last_send = last_send.max(t);
                }
            }
            senders_done.store(true, Ordering::Release);
            send_secs = (last_send.saturating_sub(start)) as f64 / 1e9;
            // Drain: until everything came back or the drain time is over.
            let drain_end = now_ns() + drain.as_nanos() as u64;
            while now_ns() < drain_end
                && recv_total.load(Ordering::Acquire) < sent_total.load(Ordering::Acquire)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Release);
            for h in receivers {
                if let Ok(part) = h.join() {
                    hist.merge(&part);
                }
            }
        });
        let _ = senders_done.load(Ordering::Relaxed);
        let server_cpu_percent = meter.finish();
        let generator_cpu_percent = own.finish();
        Step {
            target_rate: rate,
            sent: sent_total.load(Ordering::Acquire),
            received: hist.count(),
            send_secs,
            hist,
            server_cpu_percent,
            server_rss_kib: self.pid.and_then(|p| rss_kib(p).ok()),
            generator_cpu_percent,
            send_errors: send_errors.load(Ordering::Acquire),
        }
    }

    /// Closed loop: every sending socket (allocation) keeps `window` packets in flight, and sends the next one
    /// only when one of its packets arrives, as media under congestion control does; the rate is whatever the
    /// path sustains. One thread sends and receives. A socket whose packets stop arriving for `LOST_AFTER` has
    /// them counted as lost and sends a fresh window (so loss cannot stall the loop). Runs `duration`, then
    /// waits up to `drain` for what is still in flight.
    pub fn closed_loop(
        &self,
        w: &dyn Workload,
        window: usize,
        duration: Duration,
        drain: Duration,
        tag: u32,
    ) -> Step {
        const LOST_AFTER: u64 = 200_000_000;
        let window = window.clamp(1, 1024);
        let duration = duration.min(MAX_STEP);
        let n = self.send_fds.len();
        let slot = w.max_len().max(64);
        let mut out = Batch::new(window.clamp(8, 64), slot);
        let mut inb = Batch::new(64, slot.max(2048));
        let mut hist = Histogram::new();
        let mut seqs = vec![0u64; n];
        let mut inflight = vec![0usize; n];
        let mut owed = vec![window; n];
        let mut progress = vec![0u64; n];
        let (mut sent, mut errors) = (0u64, 0u64);
        let Ok(mut ep) = Epoll::new(self.recv_fds.len().clamp(1, 1024)) else {
            return Step::empty(window as f64);
        };
        for (i, &fd) in self.recv_fds.iter().enumerate() {
            if ep.add(fd, i as u64).is_err() {
                return Step::empty(window as f64);
            }
        }
        let meter = CpuMeter::new(self.pid);
        let own = CpuMeter::new(Some(std::process::id()));
        let start = now_ns();
        let end = start + duration.as_nanos() as u64;
        let drain_end = end + drain.as_nanos() as u64;
        progress.iter_mut().for_each(|p| *p = start);
        let mut last_sweep = start;
        let mut ready = Vec::with_capacity(1024);
        loop {
            let now = now_ns();
            let sending = now < end;
            if !sending && (now >= drain_end || inflight.iter().all(|&f| f == 0)) {
                break;
            }
            if sending {
                for i in 0..n {
                    while owed[i] > 0 {
                        let k = owed[i].min(out.capacity());
                        for j in 0..k {
                            let len = w.fill(i, seqs[i] + j as u64, now_ns(), tag, out.slot_mut(j));
                            out.set(j, len, None);
                        }
                        match out.send(self.send_fds[i], 0, k) {
                            Ok(0) | Err(_) => {
                                errors += 1;
                                break;
                            }
                            Ok(done) => {
                                seqs[i] += done as u64;
                                sent += done as u64;
                                inflight[i] += done;
                                owed[i] -= done;
                            }
                        }
                    }
                }
            }
            ready.clear();
            ready.extend(ep.wait(Duration::from_millis(1)));
            for &tok in &ready {
                let Some(&fd) = self.recv_fds.get(tok as usize) else {
                    continue;
                };
                loop {
                    let got = inb.recv(fd).unwrap_or_default();
                    let now = now_ns();
                    for i in 0..got {
                        let pkt = inb.packet(i);
                        let (Some(ts), Some(sock)) = (w.check(pkt, tag), w.sock_of(pkt)) else {
                            continue;
                        };
                        hist.record(now.saturating_sub(ts));
                        if let Some(f) = inflight.get_mut(sock) {
                            *f = f.saturating_sub(1);
                            owed[sock] += 1;
                            progress[sock] = now;
                        }
                    }
                    if got < inb.capacity() {
                        break;
                    }
                }
            }
            let now = now_ns();
            if sending && now - last_sweep > 10_000_000 {
                last_sweep = now;
                for i in 0..n {
                    if inflight[i] > 0 && now - progress[i] > LOST_AFTER {
                        owed[i] += inflight[i];
                        inflight[i] = 0;
                        progress[i] = now;
                    }
                }
            }
        }
        Step {
            target_rate: window as f64,
            sent,
            received: hist.count(),
            send_secs: duration.as_secs_f64(),
            hist,
            server_cpu_percent: meter.finish(),
            server_rss_kib: self.pid.and_then(|p| rss_kib(p).ok()),
            generator_cpu_percent: own.finish(),
            send_errors: errors,
        }
    }

    /// Finds the highest rate with loss below `cfg.max_loss` percent (see [`search`]).
    pub fn sweep(
        &self,
        w: &dyn Workload,
        cfg: &SweepConfig,
        tag_base: u32,
        verbose: bool,
    ) -> Sweep {
        let (best, steps) = search(cfg, |rate, i| {
            let step = self.run(
                w,
                rate,
                cfg.step,
                cfg.drain,
                tag_base.wrapping_add(i as u32),
            );
            let sustained = step.achieved_rate() >= 0.97 * rate;
            let ok = step.loss() < cfg.max_loss && sustained;
            if verbose {
                eprintln!(
                    "  {} {}",
                    step.line(),
                    if ok {
                        "ok"
                    } else if sustained {
                        "LOSS"
                    } else {
                        "NOT SUSTAINED"
                    }
                );
            }
            (step, ok)
        });
        Sweep { best, steps }
    }
}

/// The rate search shared by every benchmark: multiply the rate by `factor` while `run` says it holds, then
/// bisect between the last good and the first bad rate until they are within `precision` (relative).
/// Returns the result at the best good rate and every step. At most `cfg.max_steps` runs.
pub fn search<S: Clone>(
    cfg: &SweepConfig,
    mut run: impl FnMut(f64, usize) -> (S, bool),
) -> (Option<S>, Vec<S>) {
    let mut steps = Vec::new();
    let mut good: Option<(f64, S)> = None;
    let mut bad_rate: Option<f64> = None;
    let mut rate = cfg.start_rate.clamp(cfg.min_rate, cfg.max_rate);
    for i in 0..cfg.max_steps {
        let (step, ok) = run(rate, i);
        if ok {
            if good.as_ref().is_none_or(|(g, _)| *g < rate) {
                good = Some((rate, step.clone()));
            }
        } else {
            bad_rate = Some(bad_rate.map_or(rate, |b: f64| b.min(rate)));
        }
        steps.push(step);
        let lo = good.as_ref().map(|(g, _)| *g);
        rate = match (lo, bad_rate) {
            (Some(lo), None) => lo * cfg.factor,
            (Some(lo), Some(hi)) => {
                if hi / lo <= 1.0 + cfg.precision {
                    break;
                }
                (lo + hi) / 2.0
            }
            (None, Some(hi)) => {
                if hi <= cfg.min_rate {
                    break;
                }
                (hi / cfg.factor).max(cfg.min_rate)
            }
            (None, None) => unreachable!("a step is either good or bad"),
        };
        if rate > cfg.max_rate {
            if lo.is_some_and(|l| l >= cfg.max_rate) {
                break;
            }
            rate = cfg.max_rate;
        }
        std::thread::sleep(cfg.pause);
    }
    (good.map(|(_, s)| s), steps)
}

#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub start_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    pub factor: f64,
    pub precision: f64,
    pub max_loss: f64,
    pub step: Duration,
    pub drain: Duration,
    pub pause: Duration,
    pub max_steps: usize,
}

pub struct Sweep {
    pub best: Option<Step>,
    pub steps: Vec<Step>,
}

#[allow(clippy::too_many_arguments)]
fn send_loop(
    w: &dyn Workload,
    socks: &[(usize, RawFd)],
    rate: f64,
    start: u64,
    end: u64,
    tag: u32,
    slot: usize,
    burst: usize,
    sent_total: &AtomicU64,
    send_errors: &AtomicU64,
) -> u64 {
    precise_sleep_setup();
    let mut batch = Batch::new(burst, slot);
    let per_ns = rate / 1e9;
    let mut sent = 0u64;
    let mut next = 0usize;
    let mut seqs = vec![0u64; socks.len()];
    let mut errors = 0u64;
    let mut last = start;
    if socks.is_empty() {
        return start;
    }
    loop {
        let now = now_ns();
        if now >= end {
            break;
        }
        let due = ((now - start) as f64 * per_ns) as u64;
        if due <= sent {
            // Ahead of schedule: sleep until the next packet is due (short sleeps are precise: timer slack 1 µs).
            let next_due = start + ((sent + 1) as f64 / per_ns) as u64;
            let wait = next_due.saturating_sub(now).min(end - now);
            if wait > 20_000 {
                std::thread::sleep(Duration::from_nanos(wait.min(2_000_000)));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        let n = ((due - sent) as usize).min(burst);
        let (idx, fd) = socks[next];
        let seq = seqs[next];
        for i in 0..n {
            let len = w.fill(idx, seq + i as u64, now, tag, batch.slot_mut(i));
            batch.set(i, len, None);
        }
        match batch.send(fd, 0, n) {
            Ok(k) => {
                sent += k as u64;
                seqs[next] += k as u64;
                if k == 0 {
                    std::thread::yield_now();
                }
            }
            Err(_) => {
                errors += 1;
                if errors > 1_000_000 {
                    break;
                }
            }
        }
        next = (next + 1) % socks.len();
        last = now;
    }
    sent_total.fetch_add(sent, Ordering::AcqRel);
    send_errors.fetch_add(errors, Ordering::AcqRel);
    last.max(now_ns().min(end))
}

fn receive_loop(
    w: &dyn Workload,
    fds: &[RawFd],
    tag: u32,
    slot: usize,
    recv_total: &AtomicU64,
    stop: &AtomicBool,
) -> Histogram {
    let mut hist = Histogram::new();
    let Ok(mut ep) = Epoll::new(fds.len().clamp(1, 1024)) else {
        return hist;
    };
    for (i, &fd) in fds.iter().enumerate() {
        if ep.add(fd, i as u64).is_err() {
            return hist;
        }
    }
    let mut batch = Batch::new(64, slot.max(2048));
    let mut ready = Vec::with_capacity(1024);
    while !stop.load(Ordering::Acquire) {
        ready.clear();
        ready.extend(ep.wait(Duration::from_millis(5)));
        for &tok in &ready {
            let fd = fds[tok as usize];
            loop {
                let n = batch.recv(fd).unwrap_or_default();
                if n == 0 {
                    break;
                }
                let now = now_ns();
                let mut got = 0;
                for i in 0..n {
                    if let Some(ts) = w.check(batch.packet(i), tag) {
                        hist.record(now.saturating_sub(ts));
                        got += 1;
                    }
                }
                recv_total.fetch_add(got, Ordering::AcqRel);
                if n < batch.capacity() {
                    break;
                }
            }
        }
    }
    hist
}

/// Relay payload: `[optional 4-byte ChannelData header] MAGIC tag ts sock seq padding`.
pub struct RelayWorkload {
    /// ChannelData channel per sending socket, or `None` to send the bare payload (direct mode).
    pub channels: Option<Vec<u16>>,
    /// Payload size (bytes after the ChannelData header), at least 28.
    pub size: usize,
}

pub const RELAY_MAGIC: u32 = 0x5043_4c42; // "PCLB"
pub const MIN_PAYLOAD: usize = 28;

impl Workload for RelayWorkload {
    fn fill(&self, sock: usize, seq: u64, ts: u64, tag: u32, buf: &mut [u8]) -> usize {
        let size = self.size.max(MIN_PAYLOAD);
        let (head, payload) = match &self.channels {
            Some(ch) => {
                let c = ch.get(sock).copied().unwrap_or(0x4000);
                buf[0..2].copy_from_slice(&c.to_be_bytes());
                buf[2..4].copy_from_slice(&(size as u16).to_be_bytes());
                (4, &mut buf[4..])
            }
            None => (0, buf),
        };
        payload[0..4].copy_from_slice(&RELAY_MAGIC.to_be_bytes());
        payload[4..8].copy_from_slice(&tag.to_be_bytes());
        payload[8..16].copy_from_slice(&ts.to_be_bytes());
        payload[16..20].copy_from_slice(&(sock as u32).to_be_bytes());
        payload[20..28].copy_from_slice(&seq.to_be_bytes());
        head + size
    }

    fn check(&self, pkt: &[u8], tag: u32) -> Option<u64> {
        if pkt.len() < MIN_PAYLOAD
            || pkt[0..4] != RELAY_MAGIC.to_be_bytes()
            || pkt[4..8] != tag.to_be_bytes()
        {
            return None;
        }
        Some(u64::from_be_bytes(pkt[8..16].try_into().ok()?))
    }

    fn max_len(&self) -> usize {
        4 + self.size.max(MIN_PAYLOAD)
    }

    fn sock_of(&self, pkt: &[u8]) -> Option<usize> {
        let sock = u32::from_be_bytes(pkt.get(16..20)?.try_into().ok()?);
        usize::try_from(sock).ok()
    }
}

/// STUN Binding requests; the transaction id carries the send time and the run tag, so the response does too.
pub struct BindingWorkload;

impl Workload for BindingWorkload {
    fn fill(&self, _sock: usize, _seq: u64, ts: u64, tag: u32, buf: &mut [u8]) -> usize {
        let t = crate::stunmsg::message_type(
            crate::stunmsg::Class::Request,
            crate::stunmsg::method::BINDING,
        );
        buf[0..2].copy_from_slice(&t.to_be_bytes());
        buf[2..4].copy_from_slice(&0u16.to_be_bytes());
        buf[4..8].copy_from_slice(&crate::stunmsg::MAGIC_COOKIE.to_be_bytes());
        buf[8..16].copy_from_slice(&ts.to_be_bytes());
        buf[16..20].copy_from_slice(&tag.to_be_bytes());
        20
    }

    fn check(&self, pkt: &[u8], tag: u32) -> Option<u64> {
        if pkt.len() < 20
            || pkt[0..2]
                != crate::stunmsg::message_type(
                    crate::stunmsg::Class::Success,
                    crate::stunmsg::method::BINDING,
                )
                .to_be_bytes()
            || pkt[4..8] != crate::stunmsg::MAGIC_COOKIE.to_be_bytes()
            || pkt[16..20] != tag.to_be_bytes()
        {
            return None;
        }
        Some(u64::from_be_bytes(pkt[8..16].try_into().ok()?))
    }

    fn max_len(&self) -> usize {
        20
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{loopback_any_port, udp_socket};
    use std::os::fd::AsRawFd;

    #[test]
    fn relay_workload_round_trip() {
        let w = RelayWorkload {
            channels: Some(vec![0x4001, 0x4002]),
            size: 100,
        };
        let mut buf = vec![0u8; w.max_len()];
        let n = w.fill(1, 42, 123_456, 7, &mut buf);
        assert_eq!(n, 104);
        assert_eq!(&buf[0..4], &[0x40, 0x02, 0, 100]);
        assert_eq!(w.check(&buf[4..n], 7), Some(123_456));
        assert_eq!(
            w.check(&buf[4..n], 8),
            None,
            "another run's packet is stale"
        );
        assert_eq!(
            w.check(&buf[..n], 7),
            None,
            "a ChannelData frame is not a bare payload"
        );
        let direct = RelayWorkload {
            channels: None,
            size: 10,
        };
        let n = direct.fill(0, 0, 9, 1, &mut buf);
        assert_eq!(n, MIN_PAYLOAD);
        assert_eq!(direct.check(&buf[..n], 1), Some(9));
    }

    #[test]
    fn binding_workload_matches_only_success_responses() {
        let w = BindingWorkload;
        let mut buf = [0u8; 64];
        let n = w.fill(0, 0, 555, 3, &mut buf);
        let req = crate::stunmsg::Parsed::parse(&buf[..n]).expect("a valid Binding request");
        assert_eq!(req.method, crate::stunmsg::method::BINDING);
        assert_eq!(w.check(&buf[..n], 3), None, "a request is not an answer");
        buf[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        assert_eq!(w.check(&buf[..n], 3), Some(555));
    }

    /// Paced sending over loopback with a direct peer: the rate is met and nothing is lost.
    #[test]
    fn engine_direct_loopback() {
        let peer = udp_socket(loopback_any_port(), 4 << 20).expect("bind");
        let client = udp_socket(loopback_any_port(), 4 << 20).expect("bind");
        client
            .connect(peer.local_addr().expect("bound"))
            .expect("connect");
        let e = Engine {
            send_fds: vec![client.as_raw_fd()],
            recv_fds: vec![peer.as_raw_fd()],
            burst: 8,
            send_threads: 1,
            recv_threads: 1,
            pid: Some(std::process::id()),
        };
        let w = RelayWorkload {
            channels: None,
            size: 64,
        };
        let step = e.run(
            &w,
            5000.0,
            Duration::from_millis(400),
            Duration::from_millis(500),
            1,
        );
        assert!((1800..=2200).contains(&step.sent), "sent {}", step.sent);
        assert_eq!(step.received, step.sent);
        assert!(step.p50_us().expect("samples") < 50_000.0);
        let cfg = SweepConfig {
            // Low rates: the sweep's logic is under test, not this machine's speed (a loaded CI core must pass).
            start_rate: 500.0,
            min_rate: 100.0,
            max_rate: 2000.0,
            factor: 2.0,
            precision: 0.1,
            max_loss: 0.1,
            step: Duration::from_millis(200),
            drain: Duration::from_millis(300),
            pause: Duration::from_millis(10),
            max_steps: 5,
        };
        let sweep = e.sweep(&w, &cfg, 100, false);
        assert_eq!(sweep.best.expect("some rate works").target_rate, 2000.0);
        assert_eq!(
            sweep.steps.len(),
            3,
            "500, 1000, 2000 then stop at the maximum"
        );
    }
}
