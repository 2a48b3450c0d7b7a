//! STUN/TURN server (RFC 8489, RFC 8656): a sans-IO core ([`core`]) and the tokio driver around it.
//!
//! The driver only moves bytes: shard threads (one per CPU) read UDP client and peer datagrams in batches and
//! send the core's answers in batches; tokio tasks serve TCP and TLS clients.

// libc calls (sockets, epoll, recvmmsg/sendmmsg, getifaddrs) need unsafe; every block says why it is sound.
#![allow(unsafe_code)]
#![warn(missing_docs)]

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
    /// Certificate chain, leaf first. Re-read by [`TurnHandle::reload_tls`].
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `--external-ip PUBLIC[/PRIVATE]`: the address advertised for relays bound on PRIVATE (or on every relay
/// address when PRIVATE is absent), for hosts behind a 1:1 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    /// The address peers reach the relay at, advertised in XOR-RELAYED-ADDRESS.
    pub public: IpAddr,
    /// The local relay address this mapping is for; `None`: every relay address of `public`'s family.
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
    /// UDP and TCP addresses of the STUN/TURN server (TCP on the same IP and port as UDP). Port 0 picks one.
    pub listen: Vec<SocketAddr>,
    /// TURNS (TLS over TCP) addresses; used only when `tls` or `tls_config` gives a certificate.
    pub tls_listen: Vec<SocketAddr>,
    /// Certificate and key files for TURNS, loaded at bind and re-read on [`TurnHandle::reload_tls`].
    pub tls: Option<TlsFiles>,
    /// A ready TLS configuration for TURNS, used when `tls` is `None`: one whose certificate resolver swaps
    /// certificates by itself (an ACME-managed one), so a renewal needs no reload and drops no connection.
    pub tls_config: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Addresses relay sockets are bound on (one IPv4 and one IPv6 for RFC 6156). Empty: the `listen`
    /// addresses, or on a wildcard address this host's first non-loopback IPv4 address.
    pub relay_ip: Vec<IpAddr>,
    /// Addresses to advertise instead of relay addresses behind a 1:1 NAT.
    pub external_ip: Vec<ExternalIp>,
    /// Long-term credential realm, sent in 401 answers and part of every key (1 to 127 characters).
    pub realm: String,
    /// Static long-term users, `(name, password)`.
    pub users: Vec<(String, String)>,
    /// Shared secrets of the TURN REST scheme (username `EXPIRY:USER`, password
    /// base64(HMAC-SHA1(secret, username))); any of them opens, so secrets can be rotated.
    pub auth_secrets: Vec<String>,
    /// Peer ranges relayed to although they are private, loopback or otherwise special.
    pub allow_peer: Vec<ipnet::IpNet>,
    /// Peer ranges refused on top of the special ranges refused by default.
    pub deny_peer: Vec<ipnet::IpNet>,
    /// Relay to 127.0.0.0/8 and ::1 (tests and single-host setups).
    pub allow_loopback_peers: bool,
    /// Lowest relay port.
    pub min_port: u16,
    /// Highest relay port (inclusive).
    pub max_port: u16,
    /// Allocations one username may hold at once.
    pub user_quota: u32,
    /// Allocations per client address (IPv6 by /64), whatever the username.
    pub client_quota: u32,
    /// Allocations the whole server (every shard) may hold at once.
    pub total_quota: u32,
    /// Permissions per allocation.
    pub max_permissions: u32,
    /// Channel bindings per allocation.
    pub max_channels: u32,
    /// TCP/TLS connection caps and deadlines.
    pub stream_limits: StreamLimits,
    /// Longest allocation lifetime a client may ask for; longer requests are cut to it.
    pub max_lifetime: Duration,
    /// Lifetime of an allocation whose request names none (RFC 8656: 10 minutes).
    pub default_lifetime: Duration,
    /// Unauthenticated requests answered per second per source address; more are dropped. 0: no limit.
    pub unauth_rate_per_sec: u32,
    /// SOFTWARE attribute put in answers; `None` sends none (says nothing about the version).
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
    /// A socket could not be bound (port in use, address not on this host), or a shard thread not started.
    #[error("cannot listen on {transport} {addr}")]
    Bind {
        /// `UDP`, `TCP` or `TLS`.
        transport: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TURNS certificate or key could not be loaded.
    #[error("TURNS: {0}")]
    Tls(#[from] tls::TlsError),
    /// `relay_ip` is empty and none could be derived: the server listens on a wildcard address and the host has
    /// no non-loopback address.
    #[error(
        "no relay address: give --relay-ip (listening on a wildcard address and no interface address found)"
    )]
    NoRelayIp,
    /// `min_port` is 0 or above `max_port`: (min, max).
    #[error("relay port range {0}..={1} is empty")]
    BadPortRange(u16, u16),
}
