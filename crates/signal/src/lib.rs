//! peercall signaling: the WebSocket protocol of `docs/protocol.md`.
//!
//! The crate is split the sans-IO way:
//! - [`protocol`]: the wire types, parsing and serialization (no state);
//! - [`session`]: per-connection gate — frame size, rate limit, parsing, consecutive-error count;
//! - [`rooms`]: the shared room state machine — joins, presence, forwarding, resume, timers;
//! - [`token`] and [`ice`]: join tokens and TURN REST credentials;
//! - [`server`]: the axum WebSocket driver ([`SignalService`]) that only moves bytes between sockets and
//!   the cores above.
//!
//! None of the cores read a clock, touch a socket or sleep: every entry point takes the current `Instant`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

pub mod cluster;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod ice;
pub mod metrics;
pub mod protocol;
pub mod redis;
pub mod rooms;
pub mod server;
pub mod session;
pub mod token;

pub use guard::{AllowedOrigin, Origin, OriginError};
pub use ipnet::IpNet;
pub use protocol::{ClientMessage, ErrorCode, ServerMessage};
pub use server::SignalService;
pub use token::{JoinClaims, mint_join_token, verify_join_token};

/// Configuration of the signaling service. Every limit is explicit; see `docs/protocol.md` ("Limits").
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// Largest accepted text frame, in bytes; larger frames get `too-large` (default 64 KiB).
    pub max_message_bytes: usize,
    /// Messages per second per connection (token bucket; burst is twice this). 0 disables the limit.
    pub max_messages_per_sec: u32,
    /// Simultaneous connections per client IP address (IPv6: per /64). 0 disables the limit.
    pub max_connections_per_ip: u32,
    /// Rooms that may exist at once.
    pub max_rooms: usize,
    /// Peers per room, including peers inside their resume grace period (default 6).
    pub max_peers_per_room: usize,
    /// Refuse to create a room without a password.
    pub require_room_password: bool,
    /// When set, `join` needs a token signed with this secret (HMAC-SHA256; format in docs/protocol.md).
    pub join_token_secret: Option<String>,
    /// How long a dropped peer keeps its id and its place in the room, waiting for a resume.
    pub resume_grace: Duration,
    /// Interval of WebSocket pings.
    pub ping_interval: Duration,
    /// A connection that sent nothing (no pong, no message) for this long is closed.
    pub ping_timeout: Duration,
    /// Host named in the STUN/TURN URLs; by default the host the client reached us by.
    pub public_host: Option<String>,
    /// TURN server to advertise, with its REST-API shared secret. `None`: no `iceServers`.
    pub turn: Option<TurnAdvert>,
    /// Consecutive errors on one connection before it is closed with `abuse`.
    pub max_consecutive_errors: u32,
    /// Outgoing messages queued per connection; a client that falls this far behind is disconnected.
    pub outgoing_queue: usize,
    /// Messages kept for a peer inside its resume grace period, delivered when it resumes.
    pub max_pending_per_peer: usize,
    /// Origins allowed to open `/ws` besides the page's own and `public_host`'s ([`guard::origin_allowed`]).
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` name the client ([`guard::client_ip`]).
    pub trusted_proxies: Vec<IpNet>,
    /// `join`s per minute per client address (IPv6: per /64); the bucket holds a minute's worth. 0: unlimited.
    /// A `join` that resumes a live session is not counted.
    pub max_joins_per_min: u32,
    /// New rooms per minute per client address (IPv6: per /64), burst a minute's worth. 0: unlimited.
    pub max_new_rooms_per_min: u32,
    /// Failed joins (wrong password, bad token) one address may make before it backs off: the next failure
    /// blocks its joins for 1 s, each further one doubles that, up to `max_join_backoff`. 0: no back-off.
    pub failed_joins_before_backoff: u32,
    /// Longest back-off after failed joins.
    pub max_join_backoff: Duration,
    /// Failed password joins a room takes before every later join to it waits [`rooms::ROOM_GUESS_DELAY`]
    /// before it is checked (correct passwords too, so the delay says nothing). 0: never.
    pub room_failed_joins_before_delay: u32,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_messages_per_sec: 50,
            max_connections_per_ip: 20,
            max_rooms: 10_000,
            max_peers_per_room: 6,
            require_room_password: false,
            join_token_secret: None,
            resume_grace: Duration::from_secs(20),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(30),
            public_host: None,
            turn: None,
            max_consecutive_errors: 20,
            outgoing_queue: 256,
            max_pending_per_peer: 32,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            max_joins_per_min: 60,
            max_new_rooms_per_min: 20,
            failed_joins_before_backoff: 5,
            max_join_backoff: Duration::from_secs(600),
            room_failed_joins_before_delay: 10,
        }
    }
}

/// The TURN server whose URLs and short-lived credentials `welcome` carries.
#[derive(Debug, Clone)]
pub struct TurnAdvert {
    /// coturn-style REST-API shared secret (`static-auth-secret`).
    pub secret: String,
    /// STUN/TURN port for UDP and TCP.
    pub port: u16,
    /// TURN over TLS port; `None` when the TURN server has no certificate.
    pub tls_port: Option<u16>,
    /// TURN over TLS on the HTTPS port as well (peercall serves web and TURN on one TLS port), for networks that
    /// let only HTTPS out; `None` when the web port is plain HTTP or TURN runs elsewhere.
    pub https_port: Option<u16>,
    /// Lifetime of a minted credential (default 6 h); fresh ones are sent at 80 % of it.
    pub credential_ttl: Duration,
    /// Explicit TURN URLs (`turn:`/`turns:`, a fleet sharing `secret`); when not empty they replace the URLs
    /// made from the client's host and `port`/`tls_port`.
    pub servers: Vec<String>,
}

impl TurnAdvert {
    /// Default credential lifetime: 6 hours.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);
}

/// Counts for `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Open WebSocket connections known to the room core.
    pub connections: usize,
    /// Rooms with at least one peer (connected or inside its grace period).
    pub rooms: usize,
    /// Peers in rooms (connected or inside their grace period).
    pub peers: usize,
}
