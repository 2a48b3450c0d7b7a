//! The native peercall peer, sans-IO: [`Engine`] joins a room over signaling protocol v1, runs one str0m
//! `Rtc` per remote peer with perfect negotiation (as the browser client), sends a looped VP8/Opus clip and
//! hands what arrives to the caller (for [`record::Recorder`]). [`turn::TurnClient`] is its TURN client. The
//! tokio driver and the `peercall join` command live in the `peercall` crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod gather;
pub mod ladder;
pub mod media;
pub mod record;
pub mod turn;

pub use engine::{Engine, EngineConfig, Event, Kind, Output, PeerStatus, Route, Transmit};
pub use media::Clip;

/// Errors of the native peer's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// A media file that cannot be sent (not IVF/VP8, not Ogg/Opus, damaged).
    #[error("{0}")]
    BadMedia(String),
    /// A signaling frame that is not a protocol message.
    #[error("bad signaling message: {0}")]
    Signaling(String),
    /// Writing a recording failed.
    #[error("recording: {0}")]
    Record(#[from] std::io::Error),
}
