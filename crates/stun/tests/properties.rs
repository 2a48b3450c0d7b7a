//! Property tests: every attribute survives encode → parse (typed and through the enum), whole messages
//! with integrity trailers round-trip, stream framing splits concatenated frames back apart, and no input
//! panics the parsers.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use peercall_stun::*;
use proptest::prelude::*;

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn any_family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::V4), Just(Family::V6)]
}

/// Text that fits every text attribute's encode limit (100 chars of up to 4 bytes < 509 bytes).
fn any_text() -> impl Strategy<Value = String> {
    "\\PC{0,100}"
}

/// Encodes `attr` alone (plus MESSAGE-INTEGRITY and FINGERPRINT when `trailers`), parses it back and returns
/// the bytes so the caller can decode with the right type.
fn encode_one<A: EncodeAttr>(attr: &A, tid: &TransactionId, trailers: bool) -> Vec<u8> {
    let mut buf = vec![0xEEu8; 4096];
    let mut w =
        MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, tid).expect("header fits");
    w.add(attr).expect("attribute fits");
    if trailers {
        w.add_message_integrity(b"key").expect("fits");
        w.add_message_integrity_sha256(b"key").expect("fits");
        w.add_fingerprint().expect("fits");
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// The per-attribute round trip: typed decode gives the value back, the enum decodes it and re-encodes to the
/// very same bytes, and the trailers verify.
macro_rules! round_trip {
    ($test:ident, $T:ident, $strategy:expr, |$i:ident| $make:expr) => {
        round_trip!($test, $T, $strategy, |$i| $make, true);
    };
    ($test:ident, $T:ident, $strategy:expr, |$i:ident| $make:expr, $trailers:expr) => {
        proptest! {
            #[test]
            fn $test(input in $strategy, tid in any::<[u8; 12]>()) {
                let $i = &input;
                let a = $make;
                let bytes = encode_one(&a, &tid, $trailers);
                let msg = Message::parse(&bytes).expect("what the writer wrote parses");
                prop_assert_eq!(msg.class(), Class::Request);
                prop_assert_eq!(msg.method(), Method::ALLOCATE);
                prop_assert_eq!(msg.transaction_id(), &tid);
                prop_assert_eq!(msg.decode::<$T>(), Some(Ok(a)));
                let raw = msg.get(<$T as DecodeAttr>::TYPE).expect("present");
                prop_assert_eq!(raw.offset, 20);
                // Through the enum: same type, same bytes when written again.
                let any = msg.decode_any(raw.typ).expect("present").expect("valid");
                prop_assert_eq!(any.typ(), raw.typ);
                prop_assert_eq!(encode_one(&any, &tid, $trailers), bytes.clone());
                if $trailers {
                    prop_assert_eq!(msg.verify_integrity(b"key"), Ok(()));
                    prop_assert_eq!(msg.verify_integrity_sha256(b"key"), Ok(()));
                    prop_assert_eq!(msg.verify_fingerprint(), Ok(()));
                    prop_assert_eq!(msg.verify_integrity(b"other"), Err(IntegrityError::Mismatch));
                    prop_assert_eq!(msg.verify_integrity_sha256(b"other"), Err(IntegrityError::Mismatch));
                }
            }
        }
    };
}

round_trip!(
    mapped_address,
    MappedAddress,
    any_addr(),
    |i| MappedAddress(*i)
);
round_trip!(xor_mapped_address, XorMappedAddress, any_addr(), |i| {
    XorMappedAddress(*i)
});
round_trip!(alternate_server, AlternateServer, any_addr(), |i| {
    AlternateServer(*i)
});
round_trip!(xor_peer_address, XorPeerAddress, any_addr(), |i| {
    XorPeerAddress(*i)
});
round_trip!(xor_relayed_address, XorRelayedAddress, any_addr(), |i| {
    XorRelayedAddress(*i)
});
round_trip!(username, Username, any_text(), |i| Username(i));
round_trip!(realm, Realm, any_text(), |i| Realm(i));
round_trip!(nonce, Nonce, any_text(), |i| Nonce(i));
round_trip!(software, Software, any_text(), |i| Software(i));
round_trip!(
    alternate_domain,
    AlternateDomain,
    "[a-z0-9.-]{0,255}",
    |i| AlternateDomain(i)
);
round_trip!(userhash, UserHash, any::<[u8; 32]>(), |i| UserHash(i));
round_trip!(
    message_integrity,
    MessageIntegrity,
    any::<[u8; 20]>(),
    |i| MessageIntegrity(i),
    false
);
round_trip!(
    message_integrity_sha256,
    MessageIntegritySha256,
    (4usize..=8).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4)),
    |i| MessageIntegritySha256(i),
    false
);
round_trip!(
    fingerprint,
    Fingerprint,
    any::<u32>(),
    |i| Fingerprint(*i),
    false
);
round_trip!(error_code, ErrorCode, (300u16..700, any_text()), |i| {
    ErrorCode {
        code: i.0,
        reason: &i.1,
    }
});
round_trip!(
    address_error_code,
    AddressErrorCode,
    (any_family(), 300u16..700, any_text()),
    |i| AddressErrorCode {
        family: i.0,
        code: i.1,
        reason: &i.2
    }
);
round_trip!(
    password_algorithm,
    PasswordAlgorithm,
    (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..20)),
    |i| PasswordAlgorithm {
        algorithm: i.0,
        params: &i.1
    }
);
round_trip!(
    password_algorithms,
    PasswordAlgorithms,
    proptest::collection::vec(
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..7)),
        0..5
    )
    .prop_map(|v| v
        .into_iter()
        .map(|(a, p)| PasswordAlgorithm {
            algorithm: a,
            params: p.leak()
        })
        .collect::<Vec<_>>()),
    |i| PasswordAlgorithms::new(i)
);
round_trip!(
    unknown_attributes,
    UnknownAttributes,
    proptest::collection::vec(any::<u16>(), 0..12),
    |i| UnknownAttributes::new(i)
);
round_trip!(channel_number, ChannelNumber, any::<u16>(), |i| {
    ChannelNumber(*i)
});
round_trip!(lifetime, Lifetime, any::<u32>(), |i| Lifetime(*i));
round_trip!(
    data,
    Data,
    proptest::collection::vec(any::<u8>(), 0..1500),
    |i| Data(i)
);
round_trip!(
    requested_address_family,
    RequestedAddressFamily,
    any_family(),
    |i| RequestedAddressFamily(*i)
);
round_trip!(
    additional_address_family,
    AdditionalAddressFamily,
    any_family(),
    |i| AdditionalAddressFamily(*i)
);
round_trip!(even_port, EvenPort, any::<bool>(), |i| EvenPort(*i));
round_trip!(requested_transport, RequestedTransport, any::<u8>(), |i| {
    RequestedTransport(*i)
});
round_trip!(dont_fragment, DontFragment, Just(()), |_i| DontFragment);
round_trip!(reservation_token, ReservationToken, any::<[u8; 8]>(), |i| {
    ReservationToken(*i)
});
round_trip!(icmp, Icmp, (any::<u8>(), any::<u8>(), any::<u32>()), |i| {
    Icmp {
        typ: i.0,
        code: i.1,
        data: i.2,
    }
});
round_trip!(priority, Priority, any::<u32>(), |i| Priority(*i));
round_trip!(use_candidate, UseCandidate, Just(()), |_i| UseCandidate);
round_trip!(ice_controlled, IceControlled, any::<u64>(), |i| {
    IceControlled(*i)
});
round_trip!(ice_controlling, IceControlling, any::<u64>(), |i| {
    IceControlling(*i)
});

/// Owned inputs from which a borrowed `Attribute` is built, for whole-message properties.
#[derive(Debug, Clone)]
struct Inputs {
    addr: SocketAddr,
    text: String,
    bytes: Vec<u8>,
    n32: u32,
    n64: u64,
    family: Family,
    code: u16,
    which: u8,
    unknown_typ: u16,
}

fn inputs() -> impl Strategy<Value = Inputs> {
    (
        (
            any_addr(),
            "[a-zA-Z0-9 :.]{0,40}",
            proptest::collection::vec(any::<u8>(), 0..300),
        ),
        (
            any::<u32>(),
            any::<u64>(),
            any_family(),
            300u16..700,
            0u8..14,
            0xC000u16..0xFFFF,
        ),
    )
        .prop_map(
            |((addr, text, bytes), (n32, n64, family, code, which, unknown_typ))| Inputs {
                addr,
                text,
                bytes,
                n32,
                n64,
                family,
                code,
                which,
                unknown_typ,
            },
        )
}

fn build(i: &Inputs) -> Attribute<'_> {
    match i.which {
        0 => Attribute::XorMappedAddress(i.addr),
        1 => Attribute::Username(&i.text),
        2 => Attribute::ErrorCode {
            code: i.code,
            reason: &i.text,
        },
        3 => Attribute::Realm(&i.text),
        4 => Attribute::Nonce(&i.text),
        5 => Attribute::Lifetime(i.n32),
        6 => Attribute::XorPeerAddress(i.addr),
        7 => Attribute::Data(&i.bytes),
        8 => Attribute::XorRelayedAddress(i.addr),
        9 => Attribute::RequestedAddressFamily(i.family),
        10 => Attribute::Priority(i.n32),
        11 => Attribute::IceControlling(i.n64),
        12 => Attribute::RequestedTransport(17),
        _ => Attribute::Unknown {
            typ: i.unknown_typ,
            value: &i.bytes,
        },
    }
}

fn write_message(
    attrs: &[Attribute<'_>],
    tid: &TransactionId,
    trailers: (bool, bool, bool),
) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let mut w = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, tid).expect("fits");
    for a in attrs {
        w.add(a).expect("fits");
    }
    if trailers.0 {
        w.add_message_integrity(b"k1").expect("fits");
    }
    if trailers.1 {
        w.add_message_integrity_sha256(b"k2").expect("fits");
    }
    if trailers.2 {
        w.add_fingerprint().expect("fits");
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

proptest! {
    /// Several attributes plus any combination of trailers: every attribute comes back in order, every
    /// trailer verifies, and typed lookups find the first occurrence.
    #[test]
    fn whole_messages_round_trip(
        list in proptest::collection::vec(inputs(), 0..10),
        tid in any::<[u8; 12]>(),
        trailers in any::<(bool, bool, bool)>(),
    ) {
        let attrs: Vec<Attribute<'_>> = list.iter().map(build).collect();
        let bytes = write_message(&attrs, &tid, trailers);
        let msg = Message::parse(&bytes).expect("parses");
        prop_assert_eq!(msg.class(), Class::Indication);
        prop_assert_eq!(msg.method(), Method::SEND);
        let decoded: Vec<Attribute<'_>> = msg
            .attributes()
            .map(|r| Attribute::decode(r.typ, r.value, &tid).expect("valid"))
            .collect();
        prop_assert_eq!(&decoded, &attrs);
        prop_assert_eq!(msg.verify_integrity(b"k1").is_ok(), trailers.0);
        prop_assert_eq!(msg.verify_integrity_sha256(b"k2").is_ok(), trailers.1);
        prop_assert_eq!(msg.verify_fingerprint().is_ok(), trailers.2);
        prop_assert_eq!(msg.has_fingerprint(), trailers.2);
        for a in &attrs {
            let first = attrs.iter().find(|b| b.typ() == a.typ()).expect("itself");
            prop_assert_eq!(msg.decode_any(a.typ()), Some(Ok(*first)));
        }
        let mut unknown = [0u16; 4];
        let n = msg.unknown_comprehension_required(attr::is_known, &mut unknown);
        prop_assert_eq!(n, 0, "generated unknown types are all comprehension-optional");
    }

    /// Appending attributes after MESSAGE-INTEGRITY by hand: lookups ignore them (RFC 8489 §14.5) while the
    /// integrity still verifies.
    #[test]
    fn attributes_after_integrity_are_ignored(i in inputs(), tid in any::<[u8; 12]>()) {
        let a = build(&i);
        let mut bytes = write_message(&[], &tid, (true, false, false));
        let mut extra = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut extra, Class::Indication, Method::SEND, &tid).expect("fits");
        w.add(&a).expect("fits");
        let n = w.finish();
        bytes.extend_from_slice(&extra[20..n]);
        let len = u16::try_from(bytes.len() - 20).expect("small");
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        let msg = Message::parse(&bytes).expect("parses");
        prop_assert_eq!(msg.get(a.typ()), None);
        prop_assert_eq!(msg.decode_any(a.typ()), None);
        prop_assert_eq!(msg.wire_attributes().count(), 2);
        prop_assert_eq!(msg.verify_integrity(b"k1"), Ok(()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_entry(&data);
    }

    /// Arbitrary bytes behind a valid header reach the attribute walker and every decoder.
    #[test]
    fn arbitrary_attributes_never_panic(tid in any::<[u8; 12]>(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut data = vec![0u8; 20];
        data[0..2].copy_from_slice(&message_type(Class::Request, Method::ALLOCATE).to_be_bytes());
        let len = (body.len() & !3) as u16;
        data[2..4].copy_from_slice(&len.to_be_bytes());
        data[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        data[8..20].copy_from_slice(&tid);
        data.extend_from_slice(&body[..body.len() & !3]);
        fuzz_entry(&data);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        list in proptest::collection::vec(inputs(), 0..6),
        trailers in any::<(bool, bool, bool)>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let attrs: Vec<Attribute<'_>> = list.iter().map(build).collect();
        let mut bytes = write_message(&attrs, &[7; 12], trailers);
        fuzz_entry(&bytes);
        for (at, x) in flips {
            let len = bytes.len();
            bytes[at % len] ^= x;
        }
        fuzz_entry(&bytes);
        fuzz_entry(&bytes[..cut % (bytes.len() + 1)]);
    }

    #[test]
    fn channel_data_round_trips(channel in CHANNEL_RANGE, payload in proptest::collection::vec(any::<u8>(), 0..1500), pad in any::<bool>()) {
        let mut buf = vec![0xAAu8; 4 + payload.len() + 3];
        let n = write_channel_data(&mut buf, channel, &payload, pad).expect("fits");
        prop_assert_eq!(n, if pad { channel_data_padded_len(payload.len()) } else { 4 + payload.len() });
        prop_assert!(buf[4 + payload.len()..n].iter().all(|&b| b == 0), "padding is zeroed");
        prop_assert_eq!(classify(&buf[..n]), PacketKind::ChannelData);
        let cd = ChannelData::parse(&buf[..n]).expect("parses");
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &payload[..]);
        prop_assert_eq!(stream_frame_len(&buf[..n]).expect("frames"), Some(channel_data_padded_len(payload.len())));
    }

    /// Concatenated STUN and (padded) ChannelData frames, delivered in arbitrary chunks, are split back into
    /// exactly the frames that were sent.
    #[test]
    fn stream_framing_recovers_frames(
        frames in proptest::collection::vec((any::<bool>(), inputs(), CHANNEL_RANGE), 1..8),
        chunk in 1usize..200,
    ) {
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for (stun, i, channel) in &frames {
            let frame = if *stun {
                write_message(&[build(i)], &[1; 12], (false, false, true))
            } else {
                let mut buf = vec![0u8; 4 + i.bytes.len() + 3];
                let n = write_channel_data(&mut buf, *channel, &i.bytes, true).expect("fits");
                buf.truncate(n);
                buf
            };
            stream.extend_from_slice(&frame);
            sent.push(frame);
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            while let Some(n) = stream_frame_len(&pending).expect("valid stream") {
                if pending.len() < n {
                    break;
                }
                got.push(pending.drain(..n).collect::<Vec<u8>>());
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(&got, &sent);
        for frame in &got {
            match classify(frame) {
                PacketKind::Stun => prop_assert!(Message::parse(frame).expect("parses").verify_fingerprint().is_ok()),
                PacketKind::ChannelData => { ChannelData::parse(frame).expect("parses"); }
                PacketKind::Other => prop_assert!(false, "unexpected frame kind"),
            }
        }
    }

    /// The Data indication helpers: the in-place variant produces exactly what the copying one does.
    #[test]
    fn data_indication_in_place_matches_copy(peer in any_addr(), payload in proptest::collection::vec(any::<u8>(), 0..1500), tid in any::<[u8; 12]>()) {
        let mut copied = vec![0x11u8; 2048];
        let n = write_data_indication(&mut copied, &tid, peer, &payload).expect("fits");
        let mut in_place = vec![0x22u8; 2048];
        let at = data_indication_payload_offset(Family::of(peer.ip()));
        in_place[at..at + payload.len()].copy_from_slice(&payload);
        let m = write_data_indication_in_place(&mut in_place, &tid, peer, payload.len()).expect("fits");
        prop_assert_eq!(&copied[..n], &in_place[..m]);
        let msg = Message::parse(&copied[..n]).expect("parses");
        prop_assert_eq!(msg.class(), Class::Indication);
        prop_assert_eq!(msg.method(), Method::DATA);
        prop_assert_eq!(msg.decode::<XorPeerAddress>(), Some(Ok(XorPeerAddress(peer))));
        let data = msg.decode::<Data>().expect("present").expect("valid");
        prop_assert_eq!(data.0, &payload[..]);
        // Zero copy: the payload is a sub-slice of the message at the advertised offset.
        prop_assert_eq!(data.0.as_ptr(), copied[at..].as_ptr());
    }

    #[test]
    fn message_type_round_trips(method in 0u16..0x1000, class in prop_oneof![Just(Class::Request), Just(Class::Indication), Just(Class::Success), Just(Class::Error)]) {
        let t = message_type(class, Method(method));
        prop_assert_eq!(t & 0xC000, 0);
        let mut buf = [0u8; 20];
        let n = MessageWriter::new(&mut buf, class, Method(method), &[0; 12]).expect("fits").finish();
        let msg = Message::parse(&buf[..n]).expect("parses");
        prop_assert_eq!(msg.class(), class);
        prop_assert_eq!(msg.method(), Method(method));
    }
}

/// The fuzz seeds (RFC sample messages, a ChannelData frame) stay valid inputs and pass the fuzz entry.
#[test]
fn fuzz_seeds_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/parse");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory exists") {
        let path = entry.expect("readable").path();
        let data = std::fs::read(&path).expect("readable seed");
        match classify(&data) {
            PacketKind::Stun => assert!(Message::parse(&data).is_ok(), "{path:?}"),
            PacketKind::ChannelData => assert!(ChannelData::parse(&data).is_ok(), "{path:?}"),
            PacketKind::Other => panic!("{path:?} is neither STUN nor ChannelData"),
        }
        fuzz_entry(&data);
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} seeds");
}
