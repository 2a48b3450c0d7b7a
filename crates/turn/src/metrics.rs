//! TURN metrics: lock-free atomics, rendered in Prometheus text format. No per-user labels (ephemeral REST
//! usernames would grow them without bound).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use peercall_stun::Method;

use crate::core::QuotaKind;
use crate::core::auth::AuthFailure;
use crate::driver::StreamRefusal;

/// A counter or gauge.
#[derive(Default, Debug)]
pub(crate) struct Value(AtomicI64);

impl Value {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub(crate) fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub(crate) fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Relaxed);
    }
    pub(crate) fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

const METHODS: [Method; 5] = [
    Method::BINDING,
    Method::ALLOCATE,
    Method::REFRESH,
    Method::CREATE_PERMISSION,
    Method::CHANNEL_BIND,
];

/// How a TCP/TLS client connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum StreamClose {
    /// The client closed it (or the network did).
    Closed,
    /// No complete STUN message within the first-message deadline.
    FirstMessageTimeout,
    /// No allocation and nothing received for the idle timeout.
    Idle,
    /// Bytes that are neither STUN nor ChannelData.
    Garbage,
    /// The TLS handshake failed.
    TlsFailed,
}

impl StreamClose {
    const ALL: [StreamClose; 5] = [
        StreamClose::Closed,
        StreamClose::FirstMessageTimeout,
        StreamClose::Idle,
        StreamClose::Garbage,
        StreamClose::TlsFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            StreamClose::Closed => "closed_by_client",
            StreamClose::FirstMessageTimeout => "first_message_timeout",
            StreamClose::Idle => "idle",
            StreamClose::Garbage => "not_stun",
            StreamClose::TlsFailed => "tls_handshake_failed",
        }
    }
}

/// The server's counters and gauges. Each shard (and the TCP/TLS side) bumps its own; [`TurnMetrics::sum`]
/// adds them up for `/metrics`.
#[derive(Default, Debug)]
pub struct TurnMetrics {
    /// Live allocations.
    pub(crate) allocations: Value,
    /// Live permissions, over every allocation.
    pub(crate) permissions: Value,
    /// Live channel bindings, over every allocation.
    pub(crate) channels: Value,
    packets_to_peer: AtomicU64,
    bytes_to_peer: AtomicU64,
    packets_to_client: AtomicU64,
    bytes_to_client: AtomicU64,
    auth_failures: [AtomicU64; 5],
    /// [method][ok?]
    requests: [[AtomicU64; 2]; 6],
    /// Client packets that are neither STUN nor ChannelData, or do not parse.
    pub(crate) malformed: Value,
    /// Unauthenticated requests dropped by the per-source rate limit.
    pub(crate) rate_limited: Value,
    /// CreatePermission / ChannelBind peers refused by the peer address policy (403).
    pub(crate) policy_denied: Value,
    /// Peer datagrams dropped for lack of a permission.
    pub(crate) no_permission: Value,
    /// Allocations refused by a quota, by [`QuotaKind`].
    quota_refused: [AtomicU64; 3],
    /// CreatePermission / ChannelBind refused by the per-allocation caps.
    pub(crate) limit_refused: Value,
    /// Open TCP/TLS client connections.
    pub(crate) stream_connections: Value,
    /// Connections refused at accept: [per address, total].
    stream_refused: [AtomicU64; 2],
    /// Connections the server closed or lost, by [`StreamClose`].
    stream_closed: [AtomicU64; 5],
    /// Failed accept() calls (each followed by a back-off pause).
    pub(crate) accept_failed: Value,
    /// Packets between two allocations of this server handed from one core to the other without a socket.
    pub(crate) relayed_in_process: Value,
}

impl TurnMetrics {
    /// One packet of `bytes` application data relayed from a client to a peer.
    pub(crate) fn to_peer(&self, bytes: usize) {
        self.packets_to_peer.fetch_add(1, Relaxed);
        self.bytes_to_peer.fetch_add(bytes as u64, Relaxed);
    }

    /// One packet of `bytes` application data relayed from a peer to a client.
    pub(crate) fn to_client(&self, bytes: usize) {
        self.packets_to_client.fetch_add(1, Relaxed);
        self.bytes_to_client.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn auth_failed(&self, f: AuthFailure) {
        let i = AuthFailure::ALL.iter().position(|x| *x == f).unwrap_or(0);
        self.auth_failures[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn quota_refused(&self, kind: QuotaKind) {
        let i = QuotaKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.quota_refused[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_refused(&self, why: StreamRefusal) {
        let i = usize::from(why == StreamRefusal::Total);
        self.stream_refused[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_closed(&self, why: StreamClose) {
        let i = StreamClose::ALL.iter().position(|w| *w == why).unwrap_or(0);
        self.stream_closed[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn request(&self, method: Method, ok: bool) {
        let i = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len());
        self.requests[i][usize::from(ok)].fetch_add(1, Relaxed);
    }

    /// One set of metrics adding up `parts`: each shard counts on its own (no cache line shared between
    /// threads on the relay path), and `/metrics` shows their sum.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a TurnMetrics>) -> TurnMetrics {
        fn add(to: &AtomicU64, from: &AtomicU64) {
            to.fetch_add(from.load(Relaxed), Relaxed);
        }
        fn add_all(to: &[AtomicU64], from: &[AtomicU64]) {
            to.iter().zip(from).for_each(|(t, f)| add(t, f));
        }
        let total = TurnMetrics::default();
        for m in parts {
            for (to, from) in [
                (&total.allocations, &m.allocations),
                (&total.permissions, &m.permissions),
                (&total.channels, &m.channels),
                (&total.malformed, &m.malformed),
                (&total.rate_limited, &m.rate_limited),
                (&total.policy_denied, &m.policy_denied),
                (&total.no_permission, &m.no_permission),
                (&total.relayed_in_process, &m.relayed_in_process),
                (&total.limit_refused, &m.limit_refused),
                (&total.stream_connections, &m.stream_connections),
                (&total.accept_failed, &m.accept_failed),
            ] {
                to.add(from.get());
            }
            add(&total.packets_to_peer, &m.packets_to_peer);
            add(&total.bytes_to_peer, &m.bytes_to_peer);
            add(&total.packets_to_client, &m.packets_to_client);
            add(&total.bytes_to_client, &m.bytes_to_client);
            add_all(&total.auth_failures, &m.auth_failures);
            for (to, from) in total.requests.iter().zip(&m.requests) {
                add_all(to, from);
            }
            add_all(&total.quota_refused, &m.quota_refused);
            add_all(&total.stream_refused, &m.stream_refused);
            add_all(&total.stream_closed, &m.stream_closed);
        }
        total
    }

    /// Packets relayed so far: (client to peer, peer to client).
    #[cfg(test)]
    pub(crate) fn packets_relayed(&self) -> (u64, u64) {
        (
            self.packets_to_peer.load(Relaxed),
            self.packets_to_client.load(Relaxed),
        )
    }

    /// Appends the metrics in Prometheus text exposition format.
    pub fn encode_prometheus(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            out,
            "peercall_turn_allocations",
            "Active TURN allocations.",
            self.allocations.get(),
        );
        gauge(
            out,
            "peercall_turn_permissions",
            "Active TURN permissions.",
            self.permissions.get(),
        );
        gauge(
            out,
            "peercall_turn_channels",
            "Active TURN channel bindings.",
            self.channels.get(),
        );
        let _ = writeln!(
            out,
            "# HELP peercall_turn_relayed_packets_total Packets relayed, by direction."
        );
        let _ = writeln!(out, "# TYPE peercall_turn_relayed_packets_total counter");
        let _ = writeln!(
            out,
            "peercall_turn_relayed_packets_total{{direction=\"to_peer\"}} {}",
            self.packets_to_peer.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "peercall_turn_relayed_packets_total{{direction=\"to_client\"}} {}",
            self.packets_to_client.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP peercall_turn_relayed_bytes_total Payload bytes relayed, by direction."
        );
        let _ = writeln!(out, "# TYPE peercall_turn_relayed_bytes_total counter");
        let _ = writeln!(
            out,
            "peercall_turn_relayed_bytes_total{{direction=\"to_peer\"}} {}",
            self.bytes_to_peer.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "peercall_turn_relayed_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes_to_client.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP peercall_turn_auth_failures_total Refused credentials, by reason."
        );
        let _ = writeln!(out, "# TYPE peercall_turn_auth_failures_total counter");
        for (f, v) in AuthFailure::ALL.iter().zip(&self.auth_failures) {
            let _ = writeln!(
                out,
                "peercall_turn_auth_failures_total{{reason=\"{}\"}} {}",
                f.label(),
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP peercall_turn_requests_total STUN/TURN requests, by method and result."
        );
        let _ = writeln!(out, "# TYPE peercall_turn_requests_total counter");
        for (i, counts) in self.requests.iter().enumerate() {
            let name = METHODS.get(i).map_or("other", |m| m.name());
            for (result, v) in ["error", "success"].iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "peercall_turn_requests_total{{method=\"{name}\",result=\"{result}\"}} {}",
                    v.load(Relaxed)
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            out,
            "peercall_turn_malformed_packets_total",
            "Packets dropped as malformed.",
            self.malformed.get(),
        );
        counter(
            out,
            "peercall_turn_rate_limited_total",
            "Unauthenticated requests dropped by the rate limit.",
            self.rate_limited.get(),
        );
        counter(
            out,
            "peercall_turn_policy_denied_total",
            "Peer addresses refused by the relay policy (403).",
            self.policy_denied.get(),
        );
        counter(
            out,
            "peercall_turn_no_permission_drops_total",
            "Peer packets dropped for lack of a permission.",
            self.no_permission.get(),
        );
        let _ = writeln!(
            out,
            "# HELP peercall_turn_quota_refused_total Allocations refused by a quota (486 per user or client address, 508 in total).\n# TYPE peercall_turn_quota_refused_total counter"
        );
        for (kind, v) in QuotaKind::ALL.iter().zip(&self.quota_refused) {
            let _ = writeln!(
                out,
                "peercall_turn_quota_refused_total{{quota=\"{}\"}} {}",
                kind.label(),
                v.load(Relaxed)
            );
        }
        counter(
            out,
            "peercall_turn_allocation_limit_refused_total",
            "CreatePermission or ChannelBind refused by the per-allocation permission and channel caps (508).",
            self.limit_refused.get(),
        );
        gauge(
            out,
            "peercall_turn_stream_connections",
            "Open TCP/TLS client connections.",
            self.stream_connections.get(),
        );
        let _ = writeln!(
            out,
            "# HELP peercall_turn_stream_refused_total TCP/TLS connections refused at accept by a connection cap.\n# TYPE peercall_turn_stream_refused_total counter"
        );
        for (limit, v) in ["per_address", "total"].iter().zip(&self.stream_refused) {
            let _ = writeln!(
                out,
                "peercall_turn_stream_refused_total{{limit=\"{limit}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP peercall_turn_stream_closed_total TCP/TLS connections ended, by why.\n# TYPE peercall_turn_stream_closed_total counter"
        );
        for (why, v) in StreamClose::ALL.iter().zip(&self.stream_closed) {
            let _ = writeln!(
                out,
                "peercall_turn_stream_closed_total{{reason=\"{}\"}} {}",
                why.label(),
                v.load(Relaxed)
            );
        }
        counter(
            out,
            "peercall_turn_accept_failures_total",
            "Failed accepts of TCP/TLS connections (each followed by a back-off pause).",
            self.accept_failed.get(),
        );
        counter(
            out,
            "peercall_turn_relayed_in_process_total",
            "Packets between two allocations of this server passed inside the process (no socket hop).",
            self.relayed_in_process.get(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_of_shards_is_what_one_set_would_have_counted() {
        let (a, b, one) = (
            TurnMetrics::default(),
            TurnMetrics::default(),
            TurnMetrics::default(),
        );
        for m in [&a, &one] {
            m.allocations.inc();
            m.to_peer(100);
            m.request(Method::ALLOCATE, true);
            m.quota_refused(QuotaKind::Client);
        }
        for m in [&b, &one] {
            m.allocations.inc();
            m.to_client(7);
            m.stream_closed(StreamClose::Idle);
            m.auth_failed(AuthFailure::StaleNonce);
        }
        let (mut summed, mut single) = (String::new(), String::new());
        TurnMetrics::sum([&a, &b]).encode_prometheus(&mut summed);
        one.encode_prometheus(&mut single);
        assert_eq!(summed, single);
        assert!(summed.contains("peercall_turn_allocations 2"), "{summed}");
    }
}
