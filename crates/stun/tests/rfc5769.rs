//! The sample messages of RFC 5769 and RFC 8489 Appendix B.1 (as corrected by verified erratum 6268) must
//! parse and verify exactly, and where their padding is zeros our writer must reproduce them byte for byte.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;

use peercall_stun::{
    Class, IceControlled, IntegrityError, Message, MessageWriter, Method, Nonce, PasswordAlgorithm,
    Priority, Realm, Software, UserHash, Username, XorMappedAddress, attr, long_term_key_md5,
    long_term_key_sha256, userhash,
};

fn bytes(hex_text: &str) -> Vec<u8> {
    let clean: String = hex_text.split_whitespace().collect();
    hex::decode(clean).expect("test vector is valid hex")
}

/// RFC 5769 §2.1: sample request with short-term credentials (padding bytes are spaces).
const REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// RFC 5769 §2.2: sample IPv4 response.
const RESPONSE_V4: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769 §2.3: sample IPv6 response.
const RESPONSE_V6: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// RFC 5769 §2.4: sample request with long-term credentials.
const LONG_TERM: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

/// RFC 8489 Appendix B.1 with erratum 6268 applied (the published bytes do not verify): USERHASH, NONCE,
/// REALM, PASSWORD-ALGORITHM (SHA-256) and MESSAGE-INTEGRITY-SHA256.
const RFC8489_B1: &str = "
    00 01 00 90 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 1e 00 20 4a 3c f3 8f ef 69 92 bd a9 52 c6 78 04 17 da 0f 24 81 94 15 56 9e 60 b2 05 c4 6e 41 40 7f 17 04
    00 15 00 29 6f 62 4d 61 74 4a 6f 73 32 41 41 41 43 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39
                46 53 54 76 79 36 34 73 41 00 00 00
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 1d 00 04 00 02 00 00
    00 1c 00 20 b5 c7 bf 00 5b 6c 52 a2 1c 51 c5 e8 92 f8 19 24 13 62 96 cb 92 7c 43 14 93 09 27 8c c6 51 8e 65";

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const USERNAME_2_4: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";

#[test]
fn sample_request_parses_and_verifies() {
    let buf = bytes(REQUEST);
    let msg = Message::parse(&buf).expect("parses");
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), &buf[8..20]);
    assert_eq!(
        msg.decode::<Software>(),
        Some(Ok(Software("STUN test client")))
    );
    assert_eq!(msg.decode::<Username>(), Some(Ok(Username("evtj:h6vY"))));
    assert_eq!(msg.decode::<Priority>(), Some(Ok(Priority(0x6e0001ff))));
    assert_eq!(
        msg.decode::<IceControlled>(),
        Some(Ok(IceControlled(0x932ff9b151263b36)))
    );
    assert_eq!(msg.wire_attributes().count(), 6);
    msg.verify_integrity(SHORT_TERM_PASSWORD)
        .expect("MESSAGE-INTEGRITY matches");
    msg.verify_fingerprint().expect("FINGERPRINT matches");
    assert_eq!(
        msg.verify_integrity(b"wrong password"),
        Err(IntegrityError::Mismatch)
    );
    assert_eq!(
        msg.verify_integrity_sha256(SHORT_TERM_PASSWORD),
        Err(IntegrityError::Missing)
    );
}

#[test]
fn sample_request_detects_any_flipped_bit_in_covered_bytes() {
    let good = bytes(REQUEST);
    // Every byte MESSAGE-INTEGRITY covers (all before it, header length excepted), flipped one at a time.
    let mi_offset = good.len() - 8 - 24;
    for i in (0..mi_offset).filter(|i| !(2..4).contains(i)) {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let Ok(msg) = Message::parse(&bad) else {
            continue;
        };
        assert!(
            msg.verify_integrity(SHORT_TERM_PASSWORD).is_err(),
            "flip at byte {i} went unnoticed"
        );
        assert!(msg.verify_fingerprint().is_err(), "flip at byte {i}");
    }
}

#[test]
fn sample_ipv4_response() {
    let buf = bytes(RESPONSE_V4);
    let msg = Message::parse(&buf).expect("parses");
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.method(), Method::BINDING);
    let expected: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
    assert_eq!(
        msg.decode::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(expected)))
    );
    assert_eq!(msg.decode::<Software>(), Some(Ok(Software("test vector"))));
    msg.verify_integrity(SHORT_TERM_PASSWORD)
        .expect("MESSAGE-INTEGRITY matches");
    msg.verify_fingerprint().expect("FINGERPRINT matches");
}

#[test]
fn sample_ipv6_response() {
    let buf = bytes(RESPONSE_V6);
    let msg = Message::parse(&buf).expect("parses");
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("addr");
    assert_eq!(
        msg.decode::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(expected)))
    );
    msg.verify_integrity(SHORT_TERM_PASSWORD)
        .expect("MESSAGE-INTEGRITY matches");
    msg.verify_fingerprint().expect("FINGERPRINT matches");
}

#[test]
fn sample_long_term_request() {
    let buf = bytes(LONG_TERM);
    let msg = Message::parse(&buf).expect("parses");
    assert_eq!(msg.decode::<Username>(), Some(Ok(Username(USERNAME_2_4))));
    assert_eq!(msg.decode::<Realm>(), Some(Ok(Realm("example.org"))));
    assert_eq!(
        msg.decode::<Nonce>(),
        Some(Ok(Nonce("f//499k954d6OL34oL9FSTvy64sA")))
    );
    let key = long_term_key_md5(USERNAME_2_4, "example.org", "TheMatrIX");
    msg.verify_integrity(&key)
        .expect("MESSAGE-INTEGRITY matches");
    let wrong = long_term_key_md5(USERNAME_2_4, "example.org", "thematrix");
    assert_eq!(msg.verify_integrity(&wrong), Err(IntegrityError::Mismatch));
    assert!(!msg.has_fingerprint());
    assert_eq!(msg.verify_fingerprint(), Err(IntegrityError::Missing));
}

/// Its padding is zeros, so our writer must produce exactly these bytes.
#[test]
fn writer_reproduces_sample_long_term_request() {
    let expected = bytes(LONG_TERM);
    let tid: [u8; 12] = expected[8..20].try_into().expect("12 bytes");
    let key = long_term_key_md5(USERNAME_2_4, "example.org", "TheMatrIX");
    let mut buf = [0xAAu8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, &tid).expect("fits");
    w.add(&Username(USERNAME_2_4)).expect("fits");
    w.add(&Nonce("f//499k954d6OL34oL9FSTvy64sA")).expect("fits");
    w.add(&Realm("example.org")).expect("fits");
    w.add_message_integrity(&key).expect("fits");
    let n = w.finish();
    assert_eq!(hex::encode(&buf[..n]), hex::encode(&expected));
}

#[test]
fn rfc8489_b1_sha256_sample_parses_and_verifies() {
    let buf = bytes(RFC8489_B1);
    let msg = Message::parse(&buf).expect("parses");
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    let hash = userhash(USERNAME_2_4, "example.org");
    assert_eq!(msg.decode::<UserHash>(), Some(Ok(UserHash(&hash))));
    assert_eq!(
        msg.decode::<Nonce>(),
        Some(Ok(Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")))
    );
    assert_eq!(msg.decode::<Realm>(), Some(Ok(Realm("example.org"))));
    assert_eq!(
        msg.decode::<PasswordAlgorithm>(),
        Some(Ok(PasswordAlgorithm {
            algorithm: PasswordAlgorithm::SHA256,
            params: &[]
        }))
    );
    assert_eq!(msg.decode::<Username>(), None);
    let key = long_term_key_sha256(USERNAME_2_4, "example.org", "TheMatrIX");
    msg.verify_integrity_sha256(&key)
        .expect("MESSAGE-INTEGRITY-SHA256 matches");
    assert_eq!(
        msg.verify_integrity_sha256(&key[..31]),
        Err(IntegrityError::Mismatch)
    );
    assert_eq!(msg.verify_integrity(&key), Err(IntegrityError::Missing));
    assert!(msg.get(attr::MESSAGE_INTEGRITY_SHA256).is_some());
}

#[test]
fn writer_reproduces_rfc8489_b1_sample() {
    let expected = bytes(RFC8489_B1);
    let tid: [u8; 12] = expected[8..20].try_into().expect("12 bytes");
    let hash = userhash(USERNAME_2_4, "example.org");
    let key = long_term_key_sha256(USERNAME_2_4, "example.org", "TheMatrIX");
    let mut buf = [0x55u8; 256];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, &tid).expect("fits");
    w.add(&UserHash(&hash)).expect("fits");
    w.add(&Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"))
        .expect("fits");
    w.add(&Realm("example.org")).expect("fits");
    w.add(&PasswordAlgorithm {
        algorithm: PasswordAlgorithm::SHA256,
        params: &[],
    })
    .expect("fits");
    w.add_message_integrity_sha256(&key).expect("fits");
    let n = w.finish();
    assert_eq!(hex::encode(&buf[..n]), hex::encode(&expected));
}

/// A truncated MESSAGE-INTEGRITY-SHA256 (16..=28 bytes, RFC 8489 §14.6) verifies on its prefix.
#[test]
fn truncated_sha256_integrity_verifies() {
    let full = bytes(RFC8489_B1);
    let key = long_term_key_sha256(USERNAME_2_4, "example.org", "TheMatrIX");
    // Rebuild the message with the HMAC truncated to 16 bytes: header length and MAC change.
    let body_end = full.len() - 36;
    let mut t = full[..body_end].to_vec();
    let len = (t.len() + 4 + 16 - 20) as u16;
    t[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
        m.update(&t);
        m.finalize().into_bytes()
    };
    t.extend_from_slice(&[0x00, 0x1c, 0x00, 0x10]);
    t.extend_from_slice(&mac[..16]);
    let msg = Message::parse(&t).expect("parses");
    msg.verify_integrity_sha256(&key)
        .expect("truncated MAC verifies");
    let mut bad = t.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let msg = Message::parse(&bad).expect("parses");
    assert_eq!(
        msg.verify_integrity_sha256(&key),
        Err(IntegrityError::Mismatch)
    );
}
