//! Counters shared by the cores and the driver, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::SignalStats;
use crate::protocol::{CLIENT_TYPES, ErrorCode};

/// Monotonic counters. Plain atomics: no I/O, safe to bump from any core or task.
#[derive(Debug, Default)]
pub struct Metrics {
    messages: [AtomicU64; CLIENT_TYPES.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    forwarded: AtomicU64,
    connections_accepted: AtomicU64,
    slow_consumers: AtomicU64,
    ping_timeouts: AtomicU64,
    resumes: AtomicU64,
    sent: AtomicU64,
    origin_refused: AtomicU64,
    joins_refused: [AtomicU64; JoinRefusal::ALL.len()],
    joins_delayed: AtomicU64,
    join_failures: AtomicU64,
}

/// Why a `join` was refused before it was looked at (`peercall_signal_joins_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinRefusal {
    /// The address used up its joins per minute (`--max-joins-per-min`).
    JoinRate,
    /// The address used up its new rooms per minute (`--max-new-rooms-per-min`).
    NewRoomRate,
    /// The address is backing off after failed joins (`--failed-joins-before-backoff`).
    Backoff,
}

impl JoinRefusal {
    /// Every reason, in the order of the counter array.
    pub(crate) const ALL: [JoinRefusal; 3] = [
        JoinRefusal::JoinRate,
        JoinRefusal::NewRoomRate,
        JoinRefusal::Backoff,
    ];

    /// The `reason` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::JoinRate => "join-rate",
            JoinRefusal::NewRoomRate => "new-room-rate",
            JoinRefusal::Backoff => "backoff",
        }
    }
}

impl Metrics {
    /// A valid client message of type `CLIENT_TYPES[index]` was received.
    pub(crate) fn message(&self, type_index: usize) {
        if let Some(c) = self.messages.get(type_index) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// An `error` with this code was sent.
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(code.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// A message was passed on to a peer: sent, queued for a peer inside its grace period, or handed to the
    /// peer's node in a cluster.
    pub(crate) fn forwarded(&self) {
        self.forwarded.fetch_add(1, Relaxed);
    }

    /// A WebSocket upgrade on `/ws` was accepted.
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
    }

    /// A connection was dropped because its outgoing queue was full (it stopped reading).
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// A connection was dropped for sending nothing (not even a pong) within the ping timeout.
    pub(crate) fn ping_timeout(&self) {
        self.ping_timeouts.fetch_add(1, Relaxed);
    }

    /// A `join` got a session back within its grace period.
    pub(crate) fn resumed(&self) {
        self.resumes.fetch_add(1, Relaxed);
    }

    /// `n` server messages were queued on connections' outgoing queues.
    pub(crate) fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Relaxed);
    }

    /// A `/ws` request from a foreign `Origin` was refused with 403.
    pub(crate) fn origin_refused(&self) {
        self.origin_refused.fetch_add(1, Relaxed);
    }

    /// A `join` was refused by a per-address throttle.
    pub(crate) fn join_refused(&self, why: JoinRefusal) {
        self.joins_refused[why as usize].fetch_add(1, Relaxed);
    }

    /// A `join` was held back by a room's guessing delay.
    pub(crate) fn join_delayed(&self) {
        self.joins_delayed.fetch_add(1, Relaxed);
    }

    /// A `join` failed (wrong password, bad token) and counts towards back-off.
    pub(crate) fn join_failed(&self) {
        self.join_failures.fetch_add(1, Relaxed);
    }

    /// Joins refused for one reason; for tests.
    #[cfg(test)]
    pub(crate) fn joins_refused_of(&self, why: JoinRefusal) -> u64 {
        self.joins_refused[why as usize].load(Relaxed)
    }

    /// Joins delayed by a room's guessing delay; for tests.
    #[cfg(test)]
    pub(crate) fn joins_delayed(&self) -> u64 {
        self.joins_delayed.load(Relaxed)
    }

    /// Failed joins counted towards back-off; for tests.
    #[cfg(test)]
    pub(crate) fn join_failures(&self) -> u64 {
        self.join_failures.load(Relaxed)
    }

    /// Messages received of one type (by wire name); for tests.
    #[cfg(test)]
    pub(crate) fn messages_of(&self, type_name: &str) -> u64 {
        CLIENT_TYPES
            .iter()
            .position(|t| *t == type_name)
            .map_or(0, |i| self.messages[i].load(Relaxed))
    }

    /// Errors sent with one code; for tests.
    #[cfg(test)]
    pub(crate) fn errors_of(&self, code: ErrorCode) -> u64 {
        self.errors[code.index()].load(Relaxed)
    }

    /// Appends the Prometheus text exposition, names prefixed `peercall_signal_`.
    pub fn encode_prometheus(&self, stats: &SignalStats, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP peercall_signal_{name} {help}");
            let _ = writeln!(out, "# TYPE peercall_signal_{name} gauge");
            let _ = writeln!(out, "peercall_signal_{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP peercall_signal_{name} {help}");
            let _ = writeln!(out, "# TYPE peercall_signal_{name} counter");
            let _ = writeln!(out, "peercall_signal_{name} {v}");
        };
        gauge(
            out,
            "connections",
            "Open signaling WebSocket connections.",
            stats.connections,
        );
        gauge(out, "rooms", "Rooms with at least one peer.", stats.rooms);
        gauge(
            out,
            "peers",
            "Peers in rooms, including those inside their resume grace period.",
            stats.peers,
        );

        let _ = writeln!(
            out,
            "# HELP peercall_signal_messages_total Valid client messages received, by type."
        );
        let _ = writeln!(out, "# TYPE peercall_signal_messages_total counter");
        for (name, c) in CLIENT_TYPES.iter().zip(&self.messages) {
            let _ = writeln!(
                out,
                "peercall_signal_messages_total{{type=\"{name}\"}} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP peercall_signal_errors_total Error messages sent to clients, by code."
        );
        let _ = writeln!(out, "# TYPE peercall_signal_errors_total counter");
        for (code, c) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "peercall_signal_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                c.load(Relaxed)
            );
        }
        counter(
            out,
            "forwarded_total",
            "Peer-to-peer messages relayed.",
            self.forwarded.load(Relaxed),
        );
        counter(
            out,
            "sent_total",
            "Messages queued to clients.",
            self.sent.load(Relaxed),
        );
        counter(
            out,
            "connections_accepted_total",
            "WebSocket connections accepted.",
            self.connections_accepted.load(Relaxed),
        );
        counter(
            out,
            "resumes_total",
            "Sessions resumed within the grace period.",
            self.resumes.load(Relaxed),
        );
        counter(
            out,
            "slow_consumer_closes_total",
            "Connections dropped because their outgoing queue was full.",
            self.slow_consumers.load(Relaxed),
        );
        counter(
            out,
            "ping_timeouts_total",
            "Connections closed for not answering pings.",
            self.ping_timeouts.load(Relaxed),
        );
        counter(
            out,
            "origin_refused_total",
            "WebSocket requests refused (403) because their Origin is another site.",
            self.origin_refused.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP peercall_signal_joins_refused_total Joins refused by a per-address throttle, by reason."
        );
        let _ = writeln!(out, "# TYPE peercall_signal_joins_refused_total counter");
        for (why, c) in JoinRefusal::ALL.iter().zip(&self.joins_refused) {
            let _ = writeln!(
                out,
                "peercall_signal_joins_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                c.load(Relaxed)
            );
        }
        counter(
            out,
            "join_failures_total",
            "Failed joins (wrong password, bad token) counted towards back-off.",
            self.join_failures.load(Relaxed),
        );
        counter(
            out,
            "joins_delayed_total",
            "Joins held back by a room's guessing delay.",
            self.joins_delayed.load(Relaxed),
        );
    }
}
