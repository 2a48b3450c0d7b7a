//! TURN metrics: lock-free atomics, rendered in Prometheus text format. No per-user labels (ephemeral REST
//! usernames would grow them without bound).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use peercall_stun::Method;

use crate::core::auth::AuthFailure;

/// A counter or gauge.
#[derive(Default, Debug)]
pub struct Value(AtomicI64);

impl Value {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Relaxed);
    }
    pub fn get(&self) -> i64 {
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

#[derive(Default, Debug)]
pub struct TurnMetrics {
    pub allocations: Value,
    pub permissions: Value,
    pub channels: Value,
    packets_to_peer: AtomicU64,
    bytes_to_peer: AtomicU64,
    packets_to_client: AtomicU64,
    bytes_to_client: AtomicU64,
    auth_failures: [AtomicU64; 5],
    /// [method][ok?]
    requests: [[AtomicU64; 2]; 6],
    pub malformed: Value,
    pub rate_limited: Value,
    pub policy_denied: Value,
    pub no_permission: Value,
    /// Packets between two allocations of this server handed from one core to the other without a socket.
    pub relayed_in_process: Value,
}

impl TurnMetrics {
    pub fn to_peer(&self, bytes: usize) {
        self.packets_to_peer.fetch_add(1, Relaxed);
        self.bytes_to_peer.fetch_add(bytes as u64, Relaxed);
    }

    pub fn to_client(&self, bytes: usize) {
        self.packets_to_client.fetch_add(1, Relaxed);
        self.bytes_to_client.fetch_add(bytes as u64, Relaxed);
    }

    pub fn auth_failed(&self, f: AuthFailure) {
        let i = AuthFailure::ALL.iter().position(|x| *x == f).unwrap_or(0);
        self.auth_failures[i].fetch_add(1, Relaxed);
    }

    pub fn request(&self, method: Method, ok: bool) {
        let i = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len());
        self.requests[i][usize::from(ok)].fetch_add(1, Relaxed);
    }

    pub fn packets_relayed(&self) -> (u64, u64) {
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
        counter(
            out,
            "peercall_turn_relayed_in_process_total",
            "Packets between two allocations of this server passed inside the process (no socket hop).",
            self.relayed_in_process.get(),
        );
    }
}
