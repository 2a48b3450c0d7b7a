#![no_main]
//! A script of connections, joins, forwarded messages, disconnects and time through the room core, with its
//! invariants checked after every step. The same function runs under proptest in the normal test suite
//! (crates/signal/tests/fuzz_properties.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peercall_signal::fuzzing::fuzz_rooms(data);
});
