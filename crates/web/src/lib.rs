//! Embedded browser client.
