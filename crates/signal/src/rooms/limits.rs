//! Per-address join throttles of the room core, sans-IO (every entry point takes `now`).
//!
//! Per client address (IPv4, or the /64 of IPv6): a token bucket of joins and one of new rooms, each refilled
//! at its rate per minute and holding a minute's worth; and a failed-join count with exponential back-off.
//! Live connections are bounded elsewhere (`max_connections_per_ip`); these bound what an address does over
//! time, so dropping and reconnecting buys nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::SignalConfig;
use crate::session::TokenBucket;

/// First back-off after the allowance of failed joins is used up; each further failure doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A room's (and at least an address's) failed joins are forgotten after this long without a new one.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Addresses tracked before idle entries are swept (the sweep runs again at twice the size it left).
const SWEEP_AT: usize = 4096;
/// Hard bound on tracked addresses: past it, entries without failures are dropped first.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
struct Entry {
    joins: TokenBucket,
    rooms: TokenBucket,
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
}

/// What [`Limits::fail`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Still within the allowance.
    Counted(u32),
    /// The address now backs off for this long.
    Backoff(u32, Duration),
}

#[derive(Debug)]
pub struct Limits {
    joins_per_min: u32,
    rooms_per_min: u32,
    allowance: u32,
    max_backoff: Duration,
    memory: Duration,
    by_ip: HashMap<IpAddr, Entry>,
    sweep_at: usize,
}

impl Limits {
    pub fn new(config: &SignalConfig) -> Self {
        Self {
            joins_per_min: config.max_joins_per_min,
            rooms_per_min: config.max_new_rooms_per_min,
            allowance: config.failed_joins_before_backoff,
            max_backoff: config.max_join_backoff.max(FIRST_BACKOFF),
            memory: FAILURE_MEMORY.max(config.max_join_backoff.saturating_mul(2)),
            by_ip: HashMap::new(),
            sweep_at: SWEEP_AT,
        }
    }

    fn entry(&mut self, ip: IpAddr, now: Instant) -> &mut Entry {
        if self.by_ip.len() >= self.sweep_at && !self.by_ip.contains_key(&ip) {
            self.sweep(now);
        }
        let (joins, rooms) = (self.joins_per_min, self.rooms_per_min);
        self.by_ip.entry(ip).or_insert_with(|| Entry {
            joins: TokenBucket::per_minute(joins, now),
            rooms: TokenBucket::per_minute(rooms, now),
            failures: 0,
            last_failure: None,
            blocked_until: None,
        })
    }

    /// Forgets addresses whose buckets are full and whose failures are forgotten: they behave like new ones.
    fn sweep(&mut self, now: Instant) {
        let memory = self.memory;
        self.by_ip.retain(|_, e| {
            !(e.joins.is_full(now)
                && e.rooms.is_full(now)
                && e.last_failure
                    .is_none_or(|t| now.saturating_duration_since(t) >= memory))
        });
        if self.by_ip.len() >= MAX_TRACKED {
            self.by_ip.retain(|_, e| e.failures > 0);
        }
        if self.by_ip.len() >= MAX_TRACKED {
            self.by_ip.clear();
        }
        self.sweep_at = SWEEP_AT.max(self.by_ip.len().saturating_mul(2));
    }

    /// Addresses tracked now; for tests.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.by_ip.len()
    }

    /// When the address is backing off: how long until it may try again.
    pub fn backoff_left(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let e = self.by_ip.get(&ip)?;
        e.blocked_until
            .filter(|t| *t > now)
            .map(|t| t.saturating_duration_since(now))
    }

    /// Takes one join token; `false` when the address has none left.
    pub fn take_join(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.entry(ip, now).joins.take(now)
    }

    /// Takes one new-room token; `false` when the address has none left.
    pub fn take_room(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.entry(ip, now).rooms.take(now)
    }

    /// A join from this address failed (wrong password, bad token).
    pub fn fail(&mut self, ip: IpAddr, now: Instant) -> Failure {
        let (allowance, max_backoff, memory) = (self.allowance, self.max_backoff, self.memory);
        let e = self.entry(ip, now);
        if e.last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= memory)
        {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = Some(now);
        if allowance == 0 || e.failures <= allowance {
            return Failure::Counted(e.failures);
        }
        let doublings = (e.failures - allowance - 1).min(31);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << doublings)
            .min(max_backoff);
        e.blocked_until = Some(now + backoff);
        Failure::Backoff(e.failures, backoff)
    }
}

/// Whole seconds, rounded up (for "try again in N s").
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
