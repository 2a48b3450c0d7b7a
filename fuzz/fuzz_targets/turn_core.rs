#![no_main]
//! A script of client packets, authenticated requests, peer datagrams and time steps through one TURN core,
//! with its invariants checked after every step. The same function runs under proptest in the normal test
//! suite (crates/turn/tests/fuzz_properties.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peercall_turn::fuzzing::fuzz_core(data);
});
