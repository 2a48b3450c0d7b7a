#![no_main]
//! Every parser of the STUN/TURN codec over arbitrary bytes. The same function runs under proptest in the
//! normal test suite (crates/stun/tests/properties.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peercall_stun::fuzz_entry(data);
});
