//! Sans-IO, zero-copy STUN (RFC 8489) and TURN (RFC 8656) wire codec.
//!
//! [`Message::parse`] validates a message in place over `&[u8]` once (header, attribute framing, where the
//! integrity attributes sit), so lookups afterwards cannot go out of bounds and follow the RFC's ordering
//! rules. Values come out typed and borrowed: `msg.decode::<Data>()` is a sub-slice of the datagram, which
//! is what lets a relay forward payloads without copying. [`MessageWriter`] encodes into a caller-owned
//! buffer; [`write_data_indication_in_place`] and [`frame_channel_data_in_place`] wrap a payload that was
//! received straight into its final position. Nothing here allocates, reads a clock or does I/O.
//!
//! ```
//! use peercall_stun::{Class, Message, MessageWriter, Method, Username, XorMappedAddress};
//!
//! let mut req = [0u8; 64];
//! let mut w = MessageWriter::new(&mut req, Class::Request, Method::BINDING, &[7; 12]).unwrap();
//! w.add(&Username("alice")).unwrap();
//! w.add_message_integrity(b"password").unwrap();
//! let n = w.finish();
//!
//! let msg = Message::parse(&req[..n]).unwrap();
//! assert_eq!(msg.decode::<Username>(), Some(Ok(Username("alice"))));
//! msg.verify_integrity(b"password").unwrap();
//!
//! let mut out = [0u8; 64];
//! let mut w = MessageWriter::response(&mut out, &msg, Class::Success).unwrap();
//! w.add(&XorMappedAddress("192.0.2.1:3478".parse().unwrap())).unwrap();
//! w.add_fingerprint().unwrap();
//! let n = w.finish();
//! assert_eq!(Message::parse(&out[..n]).unwrap().transaction_id(), &[7; 12]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attrs;
mod channel;
mod error;
mod message;
mod writer;

pub use attrs::{
    AdditionalAddressFamily, AddressErrorCode, AlternateDomain, AlternateServer, Attribute,
    ChannelNumber, Data, DecodeAttr, DontFragment, EncodeAttr, ErrorCode, EvenPort, Family,
    Fingerprint, IceControlled, IceControlling, Icmp, Lifetime, MappedAddress, MessageIntegrity,
    MessageIntegritySha256, Nonce, PasswordAlgorithm, PasswordAlgorithms, PasswordAlgorithmsIter,
    Priority, Realm, RequestedAddressFamily, RequestedTransport, ReservationToken, Software,
    UnknownAttr, UnknownAttributes, UseCandidate, UserHash, Username, XorMappedAddress,
    XorPeerAddress, XorRelayedAddress, attr, limits,
};
pub use channel::{
    CHANNEL_RANGE, ChannelData, PacketKind, channel_data_padded_len, classify,
    frame_channel_data_in_place, stream_frame_len, write_channel_data, write_channel_data_header,
};
pub use error::{EncodeError, IntegrityError, ParseError};
pub use message::{AttributeIter, Message, ParseLimits, RawAttribute};
pub use writer::{
    MessageWriter, data_indication_payload_offset, write_data_indication,
    write_data_indication_in_place,
};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

/// The fixed value in every RFC 5389+ header, also the XOR mask of address attributes.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// Message class, from the two class bits of the type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Expects a success or error response with the same transaction id.
    Request,
    /// Fire and forget: no response (TURN Send and Data).
    Indication,
    /// A success response to a request.
    Success,
    /// An error response, carrying ERROR-CODE.
    Error,
}

/// Message method (12 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// Binding (RFC 8489): asks for the reflexive address; also the ICE connectivity check.
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656 §7): creates a TURN relay allocation.
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656 §8): extends or (LIFETIME 0) deletes an allocation.
    pub const REFRESH: Method = Method(0x004);
    /// Send indication (RFC 8656 §11): client data for a peer.
    pub const SEND: Method = Method(0x006);
    /// Data indication (RFC 8656 §11): peer data for the client.
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656 §9): lets peers at given IPs reach the relay for 5 minutes.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656 §12): binds a channel number to a peer for 10 minutes.
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// A short name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Method::BINDING => "binding",
            Method::ALLOCATE => "allocate",
            Method::REFRESH => "refresh",
            Method::SEND => "send",
            Method::DATA => "data",
            Method::CREATE_PERMISSION => "create_permission",
            Method::CHANNEL_BIND => "channel_bind",
            _ => "other",
        }
    }
}

/// Message type field from class and method (RFC 8489 §5: the class bits sit at positions 4 and 8).
pub fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0FFF;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// `len` rounded up to the 4-byte boundary that attribute values and TCP ChannelData frames are padded to.
pub(crate) fn padded(len: usize) -> usize {
    (len + 3) & !3
}

pub(crate) fn split_type(t: u16) -> (Class, Method) {
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    (class, Method(method))
}

/// ERROR-CODE numbers of RFC 8489 §14.8 and RFC 8656 §19, and their recommended reason phrases.
pub mod error_code {
    /// Use the server in ALTERNATE-SERVER instead.
    pub const TRY_ALTERNATE: u16 = 300;
    /// Malformed request; the client should not retry it unchanged.
    pub const BAD_REQUEST: u16 = 400;
    /// Missing or wrong credentials: the challenge carrying REALM and NONCE.
    pub const UNAUTHENTICATED: u16 = 401;
    /// Authenticated but not allowed (e.g. a peer address the server refuses to relay to).
    pub const FORBIDDEN: u16 = 403;
    /// Mobility (RFC 8016) refused.
    pub const MOBILITY_FORBIDDEN: u16 = 405;
    /// A comprehension-required attribute was not understood; listed in UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// Allocate on a 5-tuple that has an allocation, or another request on one that has none.
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// The NONCE expired: retry with the new one in this response.
    pub const STALE_NONCE: u16 = 438;
    /// The requested relay address family is not offered.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// A request on an allocation with other credentials than the ones that created it.
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// REQUESTED-TRANSPORT other than UDP.
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    /// A peer address of another family than the relayed address.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// This user holds as many allocations as allowed.
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// A temporary failure on the server: retry later.
    pub const SERVER_ERROR: u16 = 500;
    /// No relay ports (or other capacity) left: try another server.
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// The RFC's reason phrase for `code` ("Error" for codes it does not name).
    pub fn reason(code: u16) -> &'static str {
        match code {
            TRY_ALTERNATE => "Try Alternate",
            BAD_REQUEST => "Bad Request",
            UNAUTHENTICATED => "Unauthenticated",
            FORBIDDEN => "Forbidden",
            MOBILITY_FORBIDDEN => "Mobility Forbidden",
            UNKNOWN_ATTRIBUTE => "Unknown Attribute",
            ALLOCATION_MISMATCH => "Allocation Mismatch",
            STALE_NONCE => "Stale Nonce",
            ADDRESS_FAMILY_NOT_SUPPORTED => "Address Family not Supported",
            WRONG_CREDENTIALS => "Wrong Credentials",
            UNSUPPORTED_TRANSPORT_PROTOCOL => "Unsupported Transport Protocol",
            PEER_ADDRESS_FAMILY_MISMATCH => "Peer Address Family Mismatch",
            ALLOCATION_QUOTA_REACHED => "Allocation Quota Reached",
            SERVER_ERROR => "Server Error",
            INSUFFICIENT_CAPACITY => "Insufficient Capacity",
            _ => "Error",
        }
    }
}

/// The long-term credential key of RFC 8489 §9.2.2: MD5(username ":" realm ":" password).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The SHA-256 long-term key (PASSWORD-ALGORITHM 0x0002).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    use sha2::Sha256;
    let mut h = <Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, username.as_bytes());
    sha2::Digest::update(&mut h, b":");
    sha2::Digest::update(&mut h, realm.as_bytes());
    sha2::Digest::update(&mut h, b":");
    sha2::Digest::update(&mut h, password.as_bytes());
    sha2::Digest::finalize(h).into()
}

/// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    use sha2::Sha256;
    let mut h = <Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, username.as_bytes());
    sha2::Digest::update(&mut h, b":");
    sha2::Digest::update(&mut h, realm.as_bytes());
    sha2::Digest::finalize(h).into()
}

pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Runs every parser, decoder and verifier of this crate over arbitrary bytes, and re-encodes what decodes
/// to check that it decodes back to the same value. The fuzz target and a proptest call it; it panics only
/// on a codec bug.
pub fn fuzz_entry(data: &[u8]) {
    let _ = classify(data);
    if let Ok(Some(n)) = stream_frame_len(data) {
        assert!(n >= 4, "a frame is at least a ChannelData header");
    }
    let mut out = [0u8; 1024];
    if let Ok(cd) = ChannelData::parse(data) {
        // Re-framing the payload gives the same frame back.
        if let Ok(n) = write_channel_data(&mut out, cd.channel, cd.data, false) {
            assert_eq!(
                ChannelData::parse(&out[..n]),
                Ok(cd),
                "ChannelData re-framed"
            );
        }
    }
    // The payload writers accept any bytes and produce parseable frames carrying them.
    let peer = std::net::SocketAddr::from(([192, 0, 2, 1], 9));
    if let Ok(n) = write_data_indication(&mut out, &[0; 12], peer, data) {
        let msg = Message::parse(&out[..n]).expect("what the writer wrote parses");
        assert_eq!(msg.decode::<Data>(), Some(Ok(Data(data))));
    }
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let tid = *msg.transaction_id();
    // Every typed lookup.
    fn typed<'a, A: DecodeAttr<'a>>(msg: &Message<'a>) {
        let _ = msg.decode::<A>();
    }
    typed::<MappedAddress>(&msg);
    typed::<XorMappedAddress>(&msg);
    typed::<Username>(&msg);
    typed::<UserHash>(&msg);
    typed::<MessageIntegrity>(&msg);
    typed::<MessageIntegritySha256>(&msg);
    typed::<Fingerprint>(&msg);
    typed::<ErrorCode>(&msg);
    typed::<Realm>(&msg);
    typed::<Nonce>(&msg);
    typed::<PasswordAlgorithms>(&msg);
    typed::<PasswordAlgorithm>(&msg);
    typed::<UnknownAttributes>(&msg);
    typed::<Software>(&msg);
    typed::<AlternateServer>(&msg);
    typed::<AlternateDomain>(&msg);
    typed::<ChannelNumber>(&msg);
    typed::<Lifetime>(&msg);
    typed::<XorPeerAddress>(&msg);
    typed::<Data>(&msg);
    typed::<XorRelayedAddress>(&msg);
    typed::<RequestedAddressFamily>(&msg);
    typed::<EvenPort>(&msg);
    typed::<RequestedTransport>(&msg);
    typed::<DontFragment>(&msg);
    typed::<ReservationToken>(&msg);
    typed::<AdditionalAddressFamily>(&msg);
    typed::<AddressErrorCode>(&msg);
    typed::<Icmp>(&msg);
    typed::<Priority>(&msg);
    typed::<UseCandidate>(&msg);
    typed::<IceControlled>(&msg);
    typed::<IceControlling>(&msg);
    for typ in attr::ALL {
        let _ = msg.decode_any(typ);
    }
    // Every attribute, re-encoded alone, decodes to the same value.
    for raw in msg.wire_attributes() {
        let Ok(a) = Attribute::decode(raw.typ, raw.value, &tid) else {
            continue;
        };
        let mut w = MessageWriter::new(&mut out, msg.class(), msg.method(), &tid)
            .expect("1024 bytes hold a header");
        if w.add(&a).is_err() {
            continue; // too large for `out`, or beyond what we send (e.g. 600-byte REALM)
        }
        let n = w.finish();
        let again = Message::parse(&out[..n]).expect("what the writer wrote parses");
        assert_eq!(
            again.decode_any(raw.typ),
            Some(Ok(a)),
            "re-encoded attribute {:#06x}",
            raw.typ
        );
    }
    let _ = msg.verify_integrity(b"key");
    let _ = msg.verify_integrity_sha256(b"key");
    let _ = msg.verify_fingerprint();
    let _ = msg.has_fingerprint();
    let mut unknown = [0u16; 8];
    let n = msg.unknown_comprehension_required(attr::is_known, &mut unknown);
    assert!(n <= unknown.len());
}
