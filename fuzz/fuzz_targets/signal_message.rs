#![no_main]
//! One signaling frame through the connection gate and the parser. The same function runs under proptest in
//! the normal test suite (crates/signal/tests/fuzz_properties.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peercall_signal::fuzzing::fuzz_message(data);
});
