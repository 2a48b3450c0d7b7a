//! The fuzz targets' functions (fuzz/fuzz_targets/signal_message.rs, signal_rooms.rs) under proptest, so the
//! normal test suite runs them too, plus their checked-in corpora.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_frame_is_parsed_or_refused_with_valid_json(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        peercall_signal::fuzzing::fuzz_message(&data);
    }

    #[test]
    fn json_like_frames_are_parsed_or_refused_with_valid_json(
        ty in prop_oneof![Just("join"), Just("offer"), Just("candidate"), Just("message"), Just("rename"), Just("x")],
        field in "[a-z]{1,8}",
        value in ".{0,40}",
    ) {
        let frame = format!(r#"{{"type":"{ty}","v":1,"{field}":{}}}"#, serde_json::Value::from(value));
        peercall_signal::fuzzing::fuzz_message(frame.as_bytes());
    }

    #[test]
    fn room_core_scripts_keep_every_invariant(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        peercall_signal::fuzzing::fuzz_rooms(&data);
    }
}

/// Every input of the checked-in corpora.
#[test]
fn checked_in_corpora_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut ran = 0;
    for (target, run) in [
        (
            "signal_message",
            peercall_signal::fuzzing::fuzz_message as fn(&[u8]),
        ),
        ("signal_rooms", peercall_signal::fuzzing::fuzz_rooms),
    ] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            ran += 1;
        }
    }
    assert!(ran > 10, "corpora checked in ({ran} inputs)");
}
