//! Bad input gives a precise error, never a panic; the writer refuses what a receiver would reject.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use peercall_stun::*;

const TID: TransactionId = [9; 12];

fn header(len: u16) -> Vec<u8> {
    let mut b = vec![0u8; 20];
    b[0..2].copy_from_slice(&message_type(Class::Request, Method::BINDING).to_be_bytes());
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b[8..20].copy_from_slice(&TID);
    b
}

/// A message whose attributes are given as raw (type, value) pairs, padded with zeros.
fn with_attrs(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = header(0);
    for (typ, value) in attrs {
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&(value.len() as u16).to_be_bytes());
        b.extend_from_slice(value);
        b.resize(b.len().next_multiple_of(4), 0);
    }
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

fn decode_err<'a, A: DecodeAttr<'a> + std::fmt::Debug>(msg: &Message<'a>) -> ParseError {
    match msg.decode::<A>() {
        Some(Err(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn truncated_header() {
    let ok = header(0);
    assert!(Message::parse(&ok).is_ok());
    for n in 0..20 {
        assert_eq!(
            Message::parse(&ok[..n]).unwrap_err(),
            ParseError::TooShort,
            "{n} bytes"
        );
    }
}

#[test]
fn bad_header_fields() {
    let ok = header(0);
    let mut bad = ok.clone();
    bad[7] ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::BadCookie);
    for top in [0x40, 0x80, 0xC0] {
        let mut bad = ok.clone();
        bad[0] |= top;
        assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::NotStun);
    }
    for len in [1u16, 2, 3, 5, 0xFFFF] {
        let mut bad = header(len);
        bad.resize(20 + usize::from(len), 0);
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            ParseError::UnalignedLength,
            "length {len}"
        );
    }
    // Length field says more, or less, than what arrived.
    let mut bad = header(4);
    assert_eq!(
        Message::parse(&bad).unwrap_err(),
        ParseError::LengthMismatch
    );
    bad.extend_from_slice(&[0; 8]);
    assert_eq!(
        Message::parse(&bad).unwrap_err(),
        ParseError::LengthMismatch
    );
}

#[test]
fn attribute_overrunning_the_message() {
    // Value length past the end.
    let mut b = with_attrs(&[(attr::USERNAME, b"abcd")]);
    b[22..24].copy_from_slice(&8u16.to_be_bytes());
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::AttributeOverrun
    );
    // Padding past the end: a 5-byte value needs 8 bytes but only 5 were sent (length still aligned: 4+4).
    let mut b = header(8);
    b.extend_from_slice(&[0x00, 0x06, 0x00, 0x05, b'a', b'b', b'c', b'd']);
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::AttributeOverrun
    );
    // Room for only half an attribute header cannot happen with aligned lengths, but a zero-length
    // attribute at the very end is fine.
    let b = with_attrs(&[(attr::DONT_FRAGMENT, b"")]);
    assert_eq!(
        Message::parse(&b).expect("valid").decode::<DontFragment>(),
        Some(Ok(DontFragment))
    );
}

#[test]
fn attribute_count_is_limited_and_configurable() {
    let many: Vec<(u16, &[u8])> = (0..65).map(|_| (0x8030u16, &b""[..])).collect();
    let b = with_attrs(&many);
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::TooManyAttributes(64)
    );
    let msg = Message::parse_with(&b, &ParseLimits { max_attributes: 65 }).expect("allowed");
    assert_eq!(msg.wire_attributes().count(), 65);
    assert!(Message::parse(&with_attrs(&many[..64])).is_ok());
    assert!(Message::parse_with(&header(0), &ParseLimits { max_attributes: 0 }).is_ok());
}

#[test]
fn bad_address_values() {
    let cases: [(&[u8], ParseError); 6] = [
        (&[0, 3, 0, 1, 1, 2, 3, 4], ParseError::BadFamily),
        (&[0, 0, 0, 1, 1, 2, 3, 4], ParseError::BadFamily),
        (
            &[0, 1, 0, 1],
            ParseError::BadAttribute(attr::XOR_PEER_ADDRESS),
        ),
        (
            &[0, 1, 0, 1, 1, 2, 3],
            ParseError::BadAttribute(attr::XOR_PEER_ADDRESS),
        ),
        (
            &[
                0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ],
            ParseError::BadAttribute(attr::XOR_PEER_ADDRESS),
        ),
        (
            &[0, 2, 0, 1, 1, 2, 3, 4],
            ParseError::BadAttribute(attr::XOR_PEER_ADDRESS),
        ),
    ];
    for (value, err) in cases {
        let b = with_attrs(&[(attr::XOR_PEER_ADDRESS, value)]);
        let msg = Message::parse(&b).expect("framing is fine");
        assert_eq!(decode_err::<XorPeerAddress>(&msg), err, "{value:?}");
        assert_eq!(msg.decode_any(attr::XOR_PEER_ADDRESS), Some(Err(err)));
    }
    let b = with_attrs(&[(attr::MAPPED_ADDRESS, &[0, 1])]);
    let msg = Message::parse(&b).expect("framing is fine");
    assert_eq!(
        decode_err::<MappedAddress>(&msg),
        ParseError::BadAttribute(attr::MAPPED_ADDRESS)
    );
}

#[test]
fn bad_text_values() {
    let b = with_attrs(&[
        (attr::USERNAME, &[0xff, 0xfe]),
        (attr::REALM, &[b'a'; 764]),
        (attr::NONCE, &[b'n'; 763]),
    ]);
    let msg = Message::parse(&b).expect("framing is fine");
    assert_eq!(
        decode_err::<Username>(&msg),
        ParseError::BadText(attr::USERNAME)
    );
    assert_eq!(
        decode_err::<Realm>(&msg),
        ParseError::TextTooLong(attr::REALM)
    );
    assert_eq!(
        msg.decode::<Nonce>()
            .expect("present")
            .expect("763 bytes is the limit")
            .0
            .len(),
        763
    );
    let b = with_attrs(&[(attr::USERNAME, &[b'u'; 513])]);
    let msg = Message::parse(&b).expect("framing is fine");
    assert_eq!(
        decode_err::<Username>(&msg),
        ParseError::TextTooLong(attr::USERNAME)
    );
}

#[test]
fn bad_error_codes() {
    for value in [
        &[0u8, 0, 2, 0][..],
        &[0, 0, 7, 0],
        &[0, 0, 4, 100],
        &[0, 0, 4],
    ] {
        let b = with_attrs(&[(attr::ERROR_CODE, value)]);
        let msg = Message::parse(&b).expect("framing is fine");
        assert_eq!(
            decode_err::<ErrorCode>(&msg),
            ParseError::BadAttribute(attr::ERROR_CODE),
            "{value:?}"
        );
    }
    let b = with_attrs(&[(attr::ERROR_CODE, &[0, 0, 4, 1, b'U', b'n'])]);
    let msg = Message::parse(&b).expect("valid");
    assert_eq!(
        msg.decode::<ErrorCode>(),
        Some(Ok(ErrorCode {
            code: 401,
            reason: "Un"
        }))
    );
    let b = with_attrs(&[(attr::ADDRESS_ERROR_CODE, &[3, 0, 4, 40])]);
    let msg = Message::parse(&b).expect("valid framing");
    assert_eq!(decode_err::<AddressErrorCode>(&msg), ParseError::BadFamily);
}

/// Each fixed-size attribute refuses a value of the wrong length.
#[test]
fn wrong_sized_values() {
    let long = [0u8; 40];
    let cases: &[(u16, &[usize])] = &[
        (attr::LIFETIME, &[0, 3, 5, 8]),
        (attr::PRIORITY, &[0, 2, 8]),
        (attr::CHANNEL_NUMBER, &[0, 2, 8]),
        (attr::EVEN_PORT, &[0, 4]),
        (attr::REQUESTED_TRANSPORT, &[1, 8]),
        (attr::REQUESTED_ADDRESS_FAMILY, &[1, 8]),
        (attr::ADDITIONAL_ADDRESS_FAMILY, &[0, 2]),
        (attr::DONT_FRAGMENT, &[1, 4]),
        (attr::USE_CANDIDATE, &[4]),
        (attr::RESERVATION_TOKEN, &[4, 7, 9]),
        (attr::ICMP, &[4, 12]),
        (attr::ICE_CONTROLLED, &[4, 12]),
        (attr::ICE_CONTROLLING, &[0, 16]),
        (attr::USERHASH, &[0, 31, 33]),
        (attr::MESSAGE_INTEGRITY, &[0, 19, 32]),
        (attr::MESSAGE_INTEGRITY_SHA256, &[0, 12, 18, 36]),
        (attr::FINGERPRINT, &[0, 8]),
        (attr::UNKNOWN_ATTRIBUTES, &[1, 3]),
        (attr::PASSWORD_ALGORITHM, &[0, 2]),
    ];
    for &(typ, lens) in cases {
        for &n in lens {
            let mut value = long[..n].to_vec();
            let is_family =
                typ == attr::REQUESTED_ADDRESS_FAMILY || typ == attr::ADDITIONAL_ADDRESS_FAMILY;
            if let (true, Some(b)) = (is_family, value.first_mut()) {
                *b = 1;
            }
            let b = with_attrs(&[(typ, &value)]);
            let msg = Message::parse(&b).expect("framing is fine");
            assert_eq!(
                Attribute::decode(typ, &value, &TID),
                Err(ParseError::BadAttribute(typ)),
                "type {typ:#06x} with {n} bytes"
            );
            // The typed path agrees (MESSAGE-INTEGRITY/FINGERPRINT are looked up at their cached offset).
            assert_eq!(
                msg.decode_any(typ),
                Some(Err(ParseError::BadAttribute(typ))),
                "{typ:#06x}/{n}"
            );
        }
    }
}

#[test]
fn password_algorithm_lists() {
    // Second entry claims 8 bytes of params but only 4 follow.
    let v = [0, 1, 0, 0, 0, 2, 0, 8, 1, 2, 3, 4];
    let b = with_attrs(&[(attr::PASSWORD_ALGORITHMS, &v)]);
    let msg = Message::parse(&b).expect("framing is fine");
    assert_eq!(
        decode_err::<PasswordAlgorithms>(&msg),
        ParseError::BadAttribute(attr::PASSWORD_ALGORITHMS)
    );
    let v = [0, 1, 0, 0, 0, 2, 0, 0];
    let b = with_attrs(&[(attr::PASSWORD_ALGORITHMS, &v)]);
    let msg = Message::parse(&b).expect("valid");
    let list = msg
        .decode::<PasswordAlgorithms>()
        .expect("present")
        .expect("valid");
    assert!(list.contains(PasswordAlgorithm::MD5) && list.contains(PasswordAlgorithm::SHA256));
    assert!(!list.contains(3));
    assert_eq!(list.iter().count(), 2);
}

#[test]
fn integrity_errors() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &TID).expect("fits");
    w.add(&Username("alice")).expect("fits");
    w.add_message_integrity(b"secret").expect("fits");
    w.add_fingerprint().expect("fits");
    let n = w.finish();
    let good = buf[..n].to_vec();
    let msg = Message::parse(&good).expect("valid");
    assert_eq!(msg.verify_integrity(b"secret"), Ok(()));
    assert_eq!(
        msg.verify_integrity(b"Secret"),
        Err(IntegrityError::Mismatch)
    );
    assert_eq!(msg.verify_integrity(b""), Err(IntegrityError::Mismatch));
    assert_eq!(
        msg.verify_integrity_sha256(b"secret"),
        Err(IntegrityError::Missing)
    );
    assert_eq!(msg.verify_fingerprint(), Ok(()));

    // Tampered username: both checks fail.
    let mut bad = good.clone();
    bad[24] = b'A';
    let msg = Message::parse(&bad).expect("framing is fine");
    assert_eq!(
        msg.verify_integrity(b"secret"),
        Err(IntegrityError::Mismatch)
    );
    assert_eq!(msg.verify_fingerprint(), Err(IntegrityError::Mismatch));

    // A 16-byte MESSAGE-INTEGRITY is malformed, not a mismatch.
    let b = with_attrs(&[(attr::MESSAGE_INTEGRITY, &[0; 16])]);
    assert_eq!(
        Message::parse(&b).expect("framing").verify_integrity(b"k"),
        Err(IntegrityError::Malformed)
    );
    let b = with_attrs(&[(attr::MESSAGE_INTEGRITY_SHA256, &[0; 12])]);
    assert_eq!(
        Message::parse(&b)
            .expect("framing")
            .verify_integrity_sha256(b"k"),
        Err(IntegrityError::Malformed)
    );
    let b = with_attrs(&[(attr::FINGERPRINT, &[0; 8])]);
    assert_eq!(
        Message::parse(&b).expect("framing").verify_fingerprint(),
        Err(IntegrityError::Malformed)
    );
}

#[test]
fn ordering_rules_of_trailing_attributes() {
    // FINGERPRINT that is not last: not trusted, and what follows it does not count.
    let b = with_attrs(&[(attr::FINGERPRINT, &[0; 4]), (attr::USERNAME, b"late")]);
    let msg = Message::parse(&b).expect("framing is fine");
    assert!(msg.has_fingerprint());
    assert_eq!(msg.verify_fingerprint(), Err(IntegrityError::Malformed));
    assert_eq!(msg.decode::<Username>(), None);

    // MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is ignored (RFC 8489 §14.6).
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, &TID).expect("fits");
    w.add_message_integrity_sha256(b"k").expect("fits");
    assert_eq!(
        w.add_message_integrity(b"k"),
        Err(EncodeError::AfterIntegrity(attr::MESSAGE_INTEGRITY))
    );
    let n = w.finish();
    let mut b = buf[..n].to_vec();
    b.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    b.extend_from_slice(&[0; 20]);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let msg = Message::parse(&b).expect("framing is fine");
    assert_eq!(msg.get(attr::MESSAGE_INTEGRITY), None);
    assert_eq!(msg.verify_integrity(b"k"), Err(IntegrityError::Missing));

    // Unknown comprehension-required attributes after MESSAGE-INTEGRITY do not cause a 420.
    let b = with_attrs(&[
        (0x0003, b""),
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
        (0x0004, b""),
    ]);
    let msg = Message::parse(&b).expect("framing is fine");
    let mut out = [0u16; 4];
    let n = msg.unknown_comprehension_required(attr::is_known, &mut out);
    assert_eq!(&out[..n], &[0x0003]);
}

#[test]
fn unknown_comprehension_required_dedups_and_bounds() {
    let b = with_attrs(&[
        (0x0003, b""),
        (0x8030, b""),
        (0x0003, b""),
        (0x0005, b""),
        (0x7FFF, b""),
        (0x0002, b""),
    ]);
    let msg = Message::parse(&b).expect("valid");
    let mut out = [0u16; 8];
    let n = msg.unknown_comprehension_required(attr::is_known, &mut out);
    assert_eq!(&out[..n], &[0x0003, 0x0005, 0x7FFF, 0x0002]);
    let mut small = [0u16; 2];
    assert_eq!(
        msg.unknown_comprehension_required(attr::is_known, &mut small),
        2
    );
    assert_eq!(small, [0x0003, 0x0005]);
    let n = msg.unknown_comprehension_required(|_| true, &mut out);
    assert_eq!(n, 0);
}

#[test]
fn writer_refusals() {
    let mut tiny = [0u8; 19];
    assert_eq!(
        MessageWriter::new(&mut tiny, Class::Request, Method::BINDING, &TID).unwrap_err(),
        EncodeError::BufferTooSmall
    );
    let mut buf = [0u8; 40];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, &TID).expect("fits");
    assert_eq!(w.add(&Data(&[0; 17])), Err(EncodeError::BufferTooSmall));
    assert_eq!(
        w.len(),
        20,
        "a refused attribute leaves the message unchanged"
    );
    assert_eq!(
        w.add(&ErrorCode {
            code: 299,
            reason: ""
        }),
        Err(EncodeError::BadErrorCode)
    );
    assert_eq!(
        w.add(&ErrorCode {
            code: 700,
            reason: ""
        }),
        Err(EncodeError::BadErrorCode)
    );
    let long = "r".repeat(510);
    assert_eq!(
        w.add(&Realm(&long)),
        Err(EncodeError::InvalidValue(attr::REALM))
    );
    assert_eq!(
        w.add(&MessageIntegritySha256(&[0; 12])),
        Err(EncodeError::InvalidValue(attr::MESSAGE_INTEGRITY_SHA256))
    );
    w.add(&Lifetime(600)).expect("fits");
    assert_eq!(
        w.add_message_integrity(b"k"),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(w.add_fingerprint(), Ok(()));
    assert_eq!(
        w.add(&Lifetime(1)),
        Err(EncodeError::AfterIntegrity(attr::LIFETIME))
    );
    assert_eq!(
        w.add_fingerprint(),
        Err(EncodeError::AfterIntegrity(attr::FINGERPRINT))
    );
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).expect("still a valid message");
    assert_eq!(msg.decode::<Lifetime>(), Some(Ok(Lifetime(600))));
    assert_eq!(msg.verify_fingerprint(), Ok(()));

    let mut big = vec![0u8; 70_000];
    let mut w = MessageWriter::new(&mut big, Class::Indication, Method::SEND, &TID).expect("fits");
    assert_eq!(w.add(&Data(&vec![0; 65_536])), Err(EncodeError::TooLong));
    w.add(&Data(&vec![0; 65_000])).expect("fits");
    assert_eq!(
        w.add(&Data(&[0; 600])),
        Err(EncodeError::TooLong),
        "the message length is 16 bits"
    );
    assert_eq!(
        w.add_with_len(attr::DATA, 600).unwrap_err(),
        EncodeError::TooLong
    );

    // After MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow.
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, &TID).expect("fits");
    w.add_message_integrity(b"k").expect("fits");
    assert_eq!(
        w.add(&Username("x")),
        Err(EncodeError::AfterIntegrity(attr::USERNAME))
    );
    assert_eq!(
        w.add_message_integrity(b"k"),
        Err(EncodeError::AfterIntegrity(attr::MESSAGE_INTEGRITY))
    );
    w.add_message_integrity_sha256(b"k").expect("allowed");
    w.add_fingerprint().expect("allowed");
}

#[test]
fn response_echoes_request_and_buffer_is_reusable() {
    let mut req_buf = [0u8; 64];
    let mut w =
        MessageWriter::new(&mut req_buf, Class::Request, Method::ALLOCATE, &TID).expect("fits");
    w.add(&RequestedTransport::UDP).expect("fits");
    let n = w.finish();
    let req = Message::parse(&req_buf[..n]).expect("valid");
    let mut out = [0u8; 128];
    for code in [401u16, 438] {
        let mut w = MessageWriter::response(&mut out, &req, Class::Error).expect("fits");
        w.add(&ErrorCode {
            code,
            reason: "again",
        })
        .expect("fits");
        let m = w.finish();
        let resp = Message::parse(&out[..m]).expect("valid");
        assert_eq!(resp.transaction_id(), req.transaction_id());
        assert_eq!(resp.method(), Method::ALLOCATE);
        assert_eq!(resp.class(), Class::Error);
        assert_eq!(
            resp.decode::<ErrorCode>(),
            Some(Ok(ErrorCode {
                code,
                reason: "again"
            }))
        );
    }
    // Answering in place over the request's own buffer: copy the id, then write.
    let tid = *req.transaction_id();
    let mut w =
        MessageWriter::new(&mut req_buf, Class::Success, Method::ALLOCATE, &tid).expect("fits");
    w.add(&Lifetime(600)).expect("fits");
    let m = w.finish();
    let resp = Message::parse(&req_buf[..m]).expect("valid");
    assert_eq!(resp.transaction_id(), &TID);
    assert_eq!(
        resp.decode::<RequestedTransport>(),
        None,
        "the request's bytes were overwritten"
    );
}

#[test]
fn channel_data_errors() {
    assert_eq!(
        ChannelData::parse(&[0x40, 0x00, 0x00]).unwrap_err(),
        ParseError::TooShort
    );
    assert_eq!(
        ChannelData::parse(&[0x3F, 0xFF, 0x00, 0x00]).unwrap_err(),
        ParseError::NotChannelData
    );
    assert_eq!(
        ChannelData::parse(&[0x7F, 0xFF, 0x00, 0x00]).unwrap_err(),
        ParseError::NotChannelData
    );
    assert_eq!(
        ChannelData::parse(&[0x40, 0x00, 0x00, 0x02, 1]).unwrap_err(),
        ParseError::ChannelDataOverrun
    );
    let cd = ChannelData::parse(&[0x4F, 0xFF, 0x00, 0x01, 7, 0, 0, 0]).expect("padding is allowed");
    assert_eq!((cd.channel, cd.data), (0x4FFF, &[7u8][..]));
    let empty = ChannelData::parse(&[0x40, 0x01, 0x00, 0x00]).expect("empty payload is valid");
    assert!(empty.data.is_empty());

    let mut buf = [0u8; 8];
    assert_eq!(
        write_channel_data_header(&mut buf, 0x3FFF, 0),
        Err(EncodeError::BadChannel)
    );
    assert_eq!(
        write_channel_data_header(&mut buf, 0x7FFF, 0),
        Err(EncodeError::BadChannel)
    );
    assert_eq!(
        write_channel_data_header(&mut buf[..3], 0x4000, 0),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        frame_channel_data_in_place(&mut buf, 0x4000, 5, true),
        Err(EncodeError::BufferTooSmall)
    );
    buf[4..].copy_from_slice(&[1, 2, 3, 0xFF]);
    assert_eq!(
        frame_channel_data_in_place(&mut buf, 0x4000, 3, true),
        Ok(8)
    );
    assert_eq!(buf, [0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0]);
    assert_eq!(
        frame_channel_data_in_place(&mut buf, 0x4001, 3, false),
        Ok(7)
    );
    assert_eq!(
        write_channel_data(&mut buf, 0x4000, &[0; 5], false),
        Err(EncodeError::BufferTooSmall)
    );
    let mut huge = vec![0u8; 70_000];
    assert_eq!(
        frame_channel_data_in_place(&mut huge, 0x4000, 65_536, false),
        Err(EncodeError::TooLong)
    );
}

#[test]
fn classify_and_stream_framing() {
    assert_eq!(classify(&[]), PacketKind::Other);
    for b in 0..=3u8 {
        assert_eq!(classify(&[b]), PacketKind::Stun);
    }
    // RFC 5766's channel range (0x4000-0x7FFE), which coturn's clients use, is accepted.
    for b in 0x40..=0x7Fu8 {
        assert_eq!(classify(&[b]), PacketKind::ChannelData);
    }
    for b in [4u8, 0x14, 0x17, 0x3F, 0x80, 0xFF] {
        assert_eq!(classify(&[b]), PacketKind::Other, "{b:#x}");
    }

    let stun = header(8);
    assert_eq!(stream_frame_len(&[]), Ok(None));
    assert_eq!(stream_frame_len(&stun[..7]), Ok(None));
    assert_eq!(stream_frame_len(&stun[..8]), Ok(Some(28)));
    let mut bad = stun.clone();
    bad[4] = 0;
    assert_eq!(stream_frame_len(&bad), Err(ParseError::BadCookie));
    assert_eq!(
        stream_frame_len(&header(6)),
        Err(ParseError::UnalignedLength)
    );
    assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00]), Ok(None));
    assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
    assert_eq!(
        stream_frame_len(&[0x40, 0x00, 0xFF, 0xFF]),
        Ok(Some(4 + 65_536))
    );
    assert_eq!(
        stream_frame_len(&[0x16, 0x03, 0x01]),
        Err(ParseError::NotStun),
        "a TLS record is refused"
    );
    assert_eq!(channel_data_padded_len(0), 4);
    assert_eq!(channel_data_padded_len(1), 8);
    assert_eq!(channel_data_padded_len(4), 8);
    assert_eq!(channel_data_padded_len(5), 12);
}

#[test]
fn data_indication_offsets_and_limits() {
    assert_eq!(data_indication_payload_offset(Family::V4), 36);
    assert_eq!(data_indication_payload_offset(Family::V6), 48);
    let peer = "192.0.2.9:4000".parse().expect("addr");
    let mut buf = [0u8; 40];
    assert_eq!(
        write_data_indication(&mut buf, &TID, peer, &[1; 5]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        write_data_indication_in_place(&mut buf, &TID, peer, 5),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        write_data_indication_in_place(&mut buf, &TID, peer, 4),
        Ok(40)
    );
}

#[test]
fn method_and_class_encoding_matches_rfc() {
    // RFC 8489 §5 / §6: Binding request 0x0001, indication 0x0011, success 0x0101, error 0x0111.
    assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
    assert_eq!(message_type(Class::Indication, Method::BINDING), 0x0011);
    assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
    assert_eq!(message_type(Class::Error, Method::BINDING), 0x0111);
    // RFC 8656: Allocate 0x003, Send indication 0x0016, Data indication 0x0017.
    assert_eq!(message_type(Class::Request, Method::ALLOCATE), 0x0003);
    assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
    assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
    assert_eq!(message_type(Class::Success, Method::CHANNEL_BIND), 0x0109);
    assert_eq!(
        message_type(Class::Error, Method::CREATE_PERMISSION),
        0x0118
    );
    assert_eq!(message_type(Class::Request, Method(0x0FFF)), 0x3EEF);
}

#[test]
fn every_known_type_has_a_decoder() {
    for typ in attr::ALL {
        assert!(attr::is_known(typ));
        let decoded = Attribute::decode(typ, &[0; 64], &TID);
        assert!(
            !matches!(decoded, Ok(Attribute::Unknown { .. })),
            "{typ:#06x} falls through to Unknown"
        );
    }
    assert!(!attr::is_known(0x0003));
    assert!(!attr::is_known(0x8030));
}

#[test]
fn standard_error_reasons() {
    assert_eq!(
        ErrorCode::new(error_code::STALE_NONCE),
        ErrorCode {
            code: 438,
            reason: "Stale Nonce"
        }
    );
    assert_eq!(
        error_code::reason(error_code::UNKNOWN_ATTRIBUTE),
        "Unknown Attribute"
    );
    assert_eq!(error_code::reason(499), "Error");
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, Class::Error, Method::REFRESH, &TID).expect("fits");
    w.add(&ErrorCode::new(error_code::ALLOCATION_MISMATCH))
        .expect("fits");
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).expect("valid");
    assert_eq!(
        msg.decode::<ErrorCode>(),
        Some(Ok(ErrorCode {
            code: 437,
            reason: "Allocation Mismatch"
        }))
    );
}
