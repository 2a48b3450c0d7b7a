#![no_main]
//! TURN over TCP/TLS: the framer fed in reads of arbitrary sizes must find exactly the frames of the whole
//! stream. The same function runs under proptest in the normal test suite
//! (crates/turn/tests/fuzz_properties.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peercall_turn::fuzzing::fuzz_stream_framing(data);
});
