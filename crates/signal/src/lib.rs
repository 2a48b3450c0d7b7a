//! Signaling server.
