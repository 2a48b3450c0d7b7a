//! Signaling: WebSocket rooms that carry offers, answers and ICE candidates between peers and hand out
//! short-lived TURN credentials. [`rooms`] is the sans-IO logic; [`SignalService`] the axum driver.
//! The wire protocol is documented in docs/protocol.md.

pub mod protocol;
pub mod rooms;
mod server;

use std::time::Duration;

pub use rooms::{TurnAdvert, make_join_token, rest_credential};
pub use server::{SignalService, SignalStats};

/// Settings of the signaling server. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    pub max_message_bytes: usize,
    pub max_messages_per_sec: u32,
    pub max_connections_per_ip: u32,
    pub max_rooms: usize,
    pub max_peers_per_room: usize,
    pub require_room_password: bool,
    pub join_token_secret: Option<String>,
    pub resume_grace: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Invalid messages in a row before the connection is closed as abusive.
    pub max_errors_in_row: u32,
    /// Messages queued for one slow client before it is disconnected.
    pub send_queue: usize,
    pub public_host: Option<String>,
    pub turn: Option<TurnAdvert>,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
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
            max_errors_in_row: 20,
            send_queue: 256,
            public_host: None,
            turn: None,
        }
    }
}
