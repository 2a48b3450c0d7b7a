//! The fuzz targets' functions (fuzz/fuzz_targets/turn_core.rs, stream_framing.rs) under proptest, so the
//! normal test suite runs them too, plus their checked-in corpora.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn turn_core_scripts_keep_every_invariant(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        peercall_turn::fuzzing::fuzz_core(&data);
    }

    #[test]
    fn stream_framing_matches_parsing_the_whole_stream(
        sizes in proptest::collection::vec(any::<u8>(), 8),
        frames in proptest::collection::vec(frame(), 0..6),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut data = sizes;
        for f in frames {
            data.extend(f);
        }
        data.extend(tail);
        peercall_turn::fuzzing::fuzz_stream_framing(&data);
    }
}

/// A well-formed STUN message or ChannelData frame (random bytes would almost never frame).
fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u16..64, any::<u8>()).prop_map(|(words, fill)| {
            let len = words * 4;
            let mut m = vec![0x00, 0x01];
            m.extend(len.to_be_bytes());
            m.extend(0x2112_A442u32.to_be_bytes());
            m.extend([fill; 12]);
            m.extend(std::iter::repeat_n(fill, usize::from(len)));
            m
        }),
        (
            0x4000u16..0x4fff,
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(ch, data)| {
                let mut m = ch.to_be_bytes().to_vec();
                m.extend((data.len() as u16).to_be_bytes());
                m.extend(&data);
                while m.len() % 4 != 0 {
                    m.push(0);
                }
                m
            }),
    ]
}

/// Every input of the checked-in corpora (what the fuzzer once found stays covered).
#[test]
fn checked_in_corpora_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut ran = 0;
    for (target, run) in [
        ("turn_core", peercall_turn::fuzzing::fuzz_core as fn(&[u8])),
        (
            "stream_framing",
            peercall_turn::fuzzing::fuzz_stream_framing,
        ),
    ] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            run(&data);
            ran += 1;
        }
    }
    assert!(ran > 10, "corpora checked in ({ran} inputs)");
}
