//! STUN/TURN server.
