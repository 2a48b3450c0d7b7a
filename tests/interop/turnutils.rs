//! Interop tests against coturn clients (filled in by the TURN work).
