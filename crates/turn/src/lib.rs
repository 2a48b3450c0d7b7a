//! STUN/TURN server (RFC 8489, RFC 8656): a sans-IO core ([`core`]) and the tokio driver around it.
//!
//! The driver only moves bytes: shard threads (one per CPU) read UDP client and peer datagrams in batches and
//! send the core's answers in batches; tokio tasks serve TCP and TLS clients.

// libc calls (sockets, epoll, recvmmsg/sendmmsg, getifaddrs) need unsafe; every block says why it is sound.
#![allow(unsafe_code)]

pub mod core;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use driver::{Listening, StreamLimits, TurnHandle, TurnServer, interface_addresses};
pub use metrics::TurnMetrics;

/// TLS certificate and key files (PEM) for TURNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `--external-ip PUBLIC[/PRIVATE]`: the address advertised for relays bound on PRIVATE (or on every relay
/// address when PRIVATE is absent), for hosts behind a 1:1 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    pub public: IpAddr,
    pub private: Option<IpAddr>,
}

impl ExternalIp {
    /// Whether this mapping applies to relays on `relay_ip`: PUBLIC/PRIVATE names its private address; PUBLIC
    /// alone maps the relays of its own family (an IPv4 PUBLIC says nothing of IPv6).
    pub fn maps(&self, relay_ip: IpAddr) -> bool {
        match self.private {
            Some(private) => private == relay_ip,
            None => self.public.is_ipv4() == relay_ip.is_ipv4(),
        }
    }
}

impl FromStr for ExternalIp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (public, private) = match s.split_once('/') {
            Some((p, q)) => (p, Some(q)),
            None => (s, None),
        };
        let public = public
            .parse()
            .map_err(|_| format!("{s:?}: {public:?} is not an IP address"))?;
        let private = match private {
            Some(q) => Some(
                q.parse()
                    .map_err(|_| format!("{s:?}: {q:?} is not an IP address"))?,
            ),
            None => None,
        };
        Ok(ExternalIp { public, private })
    }
}

impl std::fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.private {
            Some(private) => write!(f, "{}/{}", self.public, private),
            None => write!(f, "{}", self.public),
        }
    }
}

/// Everything the server needs to start. `Default` is a safe local setup: loopback and private peers refused.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// A ready TLS configuration for TURNS, used when `tls` is `None`: one whose certificate resolver swaps
    /// certificates by itself (an ACME-managed one), so a renewal needs no reload and drops no connection.
    pub tls_config: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub relay_ip: Vec<IpAddr>,
    pub external_ip: Vec<ExternalIp>,
    pub realm: String,
    pub users: Vec<(String, String)>,
    pub auth_secrets: Vec<String>,
    pub allow_peer: Vec<ipnet::IpNet>,
    pub deny_peer: Vec<ipnet::IpNet>,
    pub allow_loopback_peers: bool,
    pub min_port: u16,
    pub max_port: u16,
    pub user_quota: u32,
    /// Allocations per client address (IPv6 by /64), whatever the username.
    pub client_quota: u32,
    pub total_quota: u32,
    /// Permissions per allocation.
    pub max_permissions: u32,
    /// Channel bindings per allocation.
    pub max_channels: u32,
    /// TCP/TLS connection caps and deadlines.
    pub stream_limits: StreamLimits,
    pub max_lifetime: Duration,
    pub default_lifetime: Duration,
    pub unauth_rate_per_sec: u32,
    pub software: Option<String>,
    /// Threads serving UDP, each with its own core and SO_REUSEPORT sockets; 0 = one per CPU.
    pub threads: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            tls_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5349))],
            tls: None,
            tls_config: None,
            relay_ip: Vec::new(),
            external_ip: Vec::new(),
            realm: "peercall".to_owned(),
            users: Vec::new(),
            auth_secrets: Vec::new(),
            allow_peer: Vec::new(),
            deny_peer: Vec::new(),
            allow_loopback_peers: false,
            min_port: 49152,
            max_port: 65535,
            user_quota: 32,
            client_quota: 256,
            total_quota: 20_000,
            max_permissions: 32,
            max_channels: 32,
            stream_limits: StreamLimits::default(),
            max_lifetime: Duration::from_secs(3600),
            default_lifetime: Duration::from_secs(600),
            unauth_rate_per_sec: 100,
            software: None,
            threads: 0,
        }
    }
}

/// Why the server could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    #[error("cannot listen on {transport} {addr}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TURNS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(
        "no relay address: give --relay-ip (listening on a wildcard address and no interface address found)"
    )]
    NoRelayIp,
    #[error("relay port range {0}..={1} is empty")]
    BadPortRange(u16, u16),
}
