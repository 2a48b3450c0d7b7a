//! Property tests: every attribute survives encode → parse, and no input panics the parsers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use peercall_stun::{
    Attribute, ChannelData, Class, Family, Message, MessageWriter, Method, ParseError,
    PasswordAlgorithm, PasswordAlgorithms, UnknownAttributes, fuzz_entry, stream_frame_len,
    write_channel_data_header,
};
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

/// Owned inputs from which a borrowed `Attribute` is built.
#[derive(Debug, Clone)]
struct Inputs {
    addr: SocketAddr,
    text: String,
    bytes: Vec<u8>,
    hash: [u8; 32],
    n32: u32,
    n64: u64,
    n16: u16,
    n8: u8,
    flag: bool,
    family: Family,
    token: [u8; 8],
    code: u16,
    which: usize,
    types: Vec<u16>,
    algorithms: Vec<PasswordAlgorithm<'static>>,
}

fn inputs() -> impl Strategy<Value = Inputs> {
    (
        (
            any_addr(),
            "[a-zA-Z0-9 :.]{0,40}",
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<[u8; 32]>(),
        ),
        (
            any::<u32>(),
            any::<u64>(),
            0x4000u16..=0x4FFF,
            any::<u8>(),
            any::<bool>(),
            any_family(),
        ),
        (any::<[u8; 8]>(), 300u16..700, 0usize..31),
    )
        .prop_map(
            |(
                (addr, text, bytes, hash),
                (n32, n64, n16, n8, flag, family),
                (token, code, which),
            )| Inputs {
                addr,
                text,
                bytes,
                hash,
                n32,
                n64,
                n16,
                n8,
                flag,
                family,
                token,
                code,
                which,
                types: vec![0x0003, 0x7fff],
                algorithms: vec![
                    PasswordAlgorithm {
                        algorithm: PasswordAlgorithm::MD5,
                        params: &[],
                    },
                    PasswordAlgorithm {
                        algorithm: PasswordAlgorithm::SHA256,
                        params: &[],
                    },
                ],
            },
        )
}

fn build(i: &Inputs) -> Attribute<'_> {
    match i.which {
        0 => Attribute::MappedAddress(i.addr),
        1 => Attribute::XorMappedAddress(i.addr),
        2 => Attribute::Username(&i.text),
        3 => Attribute::UserHash(&i.hash),
        4 => Attribute::ErrorCode {
            code: i.code,
            reason: &i.text,
        },
        5 => Attribute::Realm(&i.text),
        6 => Attribute::Nonce(&i.text),
        7 => Attribute::PasswordAlgorithm {
            algorithm: i.n16,
            params: &i.bytes[..i.bytes.len().min(8)],
        },
        8 => Attribute::UnknownAttributes(UnknownAttributes::new(&i.types)),
        9 => Attribute::Software(&i.text),
        10 => Attribute::AlternateServer(i.addr),
        11 => Attribute::AlternateDomain(&i.text),
        12 => Attribute::ChannelNumber(i.n16),
        13 => Attribute::Lifetime(i.n32),
        14 => Attribute::XorPeerAddress(i.addr),
        15 => Attribute::Data(&i.bytes),
        16 => Attribute::XorRelayedAddress(i.addr),
        17 => Attribute::RequestedAddressFamily(i.family),
        18 => Attribute::EvenPort(i.flag),
        19 => Attribute::RequestedTransport(i.n8),
        20 => Attribute::DontFragment,
        21 => Attribute::ReservationToken(i.token),
        22 => Attribute::AdditionalAddressFamily(i.family),
        23 => Attribute::AddressErrorCode {
            family: i.family,
            code: i.code,
            reason: &i.text,
        },
        24 => Attribute::Icmp {
            typ: i.n8,
            code: i.n8.wrapping_add(1),
            data: i.n32,
        },
        25 => Attribute::Priority(i.n32),
        26 => Attribute::UseCandidate,
        27 => Attribute::IceControlled(i.n64),
        28 => Attribute::IceControlling(i.n64),
        29 => Attribute::MessageIntegritySha256(&i.hash),
        _ => Attribute::PasswordAlgorithms(PasswordAlgorithms::new(&i.algorithms)),
    }
}

proptest! {
    #[test]
    fn every_attribute_round_trips(i in inputs(), tid in any::<[u8; 12]>()) {
        let a = build(&i);
        let mut buf = [0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &tid).expect("header fits");
        w.add(&a).expect("attribute fits");
        // MESSAGE-INTEGRITY may not follow MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
        let with_integrity = a.typ() != peercall_stun::attr::MESSAGE_INTEGRITY_SHA256;
        if with_integrity {
            w.add_message_integrity(b"key").expect("fits");
        }
        w.add_fingerprint().expect("fits");
        let n = w.finish();
        let msg = Message::parse(&buf[..n]).expect("what we write parses");
        prop_assert_eq!(msg.class(), Class::Request);
        prop_assert_eq!(msg.method(), Method::ALLOCATE);
        prop_assert_eq!(msg.transaction_id(), &tid);
        prop_assert_eq!(msg.decode_any(a.typ()), Some(Ok(a)));
        if with_integrity {
            prop_assert!(msg.verify_integrity(b"key").is_ok());
            prop_assert!(msg.verify_integrity(b"other").is_err());
        }
        prop_assert!(msg.verify_fingerprint().is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_entry(&data);
    }

    #[test]
    fn mutated_valid_messages_never_panic(i in inputs(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let a = build(&i);
        let mut buf = [0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::REFRESH, &[7; 12]).expect("fits");
        w.add(&a).expect("fits");
        if a.typ() != peercall_stun::attr::MESSAGE_INTEGRITY_SHA256 {
            w.add_message_integrity(b"k").expect("fits");
        }
        let n = w.finish();
        let mut bytes = buf[..n].to_vec();
        for (at, x) in flips {
            let len = bytes.len();
            bytes[at % len] ^= x;
        }
        fuzz_entry(&bytes);
        fuzz_entry(&bytes[..cut % (bytes.len() + 1)]);
    }

    #[test]
    fn channel_data_round_trips(channel in 0x4000u16..=0x4FFF, payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut buf = vec![0u8; 4 + payload.len() + 3];
        buf[4..4 + payload.len()].copy_from_slice(&payload);
        write_channel_data_header(&mut buf, channel, payload.len() as u16).expect("fits");
        let cd = ChannelData::parse(&buf).expect("parses");
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &payload[..]);
        prop_assert_eq!(stream_frame_len(&buf).expect("frames"), Some(4 + ((payload.len() + 3) & !3)));
    }
}

#[test]
fn malformed_headers_are_refused() {
    let mut ok = [0u8; 20];
    ok[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    assert!(Message::parse(&ok).is_ok());
    assert_eq!(Message::parse(&ok[..19]).unwrap_err(), ParseError::TooShort);
    let mut bad = ok;
    bad[4] = 0;
    assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::BadCookie);
    let mut bad = ok;
    bad[0] = 0x80;
    assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::NotStun);
    let mut bad = ok;
    bad[3] = 2;
    assert_eq!(
        Message::parse(&bad).unwrap_err(),
        ParseError::UnalignedLength
    );
    let mut bad = ok;
    bad[3] = 4;
    assert_eq!(
        Message::parse(&bad).unwrap_err(),
        ParseError::LengthMismatch
    );
    // An attribute claiming more bytes than the message holds.
    let mut overrun = [0u8; 24];
    overrun[..20].copy_from_slice(&ok);
    overrun[3] = 4;
    overrun[20..24].copy_from_slice(&[0x00, 0x06, 0x00, 0x40]);
    assert_eq!(
        Message::parse(&overrun).unwrap_err(),
        ParseError::AttributeOverrun
    );
}

#[test]
fn bad_attribute_values_are_errors_not_panics() {
    let mut buf = [0u8; 64];
    let mut w =
        MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &[1; 12]).expect("fits");
    w.add_raw(
        peercall_stun::attr::XOR_PEER_ADDRESS,
        &[&[0, 9, 0, 0, 1, 2, 3, 4]],
    )
    .expect("fits");
    w.add_raw(peercall_stun::attr::LIFETIME, &[&[0, 0, 1]])
        .expect("fits");
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).expect("framing is fine");
    assert_eq!(
        msg.decode_any(peercall_stun::attr::XOR_PEER_ADDRESS),
        Some(Err(ParseError::BadFamily))
    );
    assert!(matches!(
        msg.decode_any(peercall_stun::attr::LIFETIME),
        Some(Err(ParseError::BadAttribute(_)))
    ));
}
