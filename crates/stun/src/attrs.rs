//! Attribute type codes and typed attribute values.
//!
//! Every attribute has a small struct implementing [`DecodeAttr`] (typed lookup with
//! [`crate::Message::decode`]) and [`EncodeAttr`] (for [`crate::MessageWriter::add`]). The [`Attribute`] enum
//! covers all of them for code that walks a message generically. Values borrow from the message: nothing
//! here allocates.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{EncodeError, ParseError};
use crate::{MAGIC_COOKIE, TransactionId};

pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute type codes (IANA "STUN Attributes" registry).
pub mod attr {
    // RFC 8489
    /// Reflexive address in clear (RFC 3489 compatibility).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// User name of short- or long-term credentials.
    pub const USERNAME: u16 = 0x0006;
    /// HMAC-SHA1 over the message up to this attribute.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// Error class, number and reason phrase of an error response.
    pub const ERROR_CODE: u16 = 0x0009;
    /// Comprehension-required types a 420 response did not understand.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// Long-term credential realm; its presence in a response is a challenge.
    pub const REALM: u16 = 0x0014;
    /// Server challenge the client echoes in its next request.
    pub const NONCE: u16 = 0x0015;
    /// HMAC-SHA256 (truncatable to 16 bytes) over the message up to this attribute.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// The password algorithm a client chose.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// SHA-256 of username and realm, sent instead of USERNAME for anonymity.
    pub const USERHASH: u16 = 0x001E;
    /// Reflexive address XORed with the cookie and transaction id.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// Password algorithms a server offers, in order of preference.
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    /// TLS name of the ALTERNATE-SERVER.
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    /// Agent name and version, informational.
    pub const SOFTWARE: u16 = 0x8022;
    /// Server to try instead (with a 300 Try Alternate).
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// CRC-32 of the message XOR 0x5354554E; tells STUN apart from other protocols on a port.
    pub const FINGERPRINT: u16 = 0x8028;
    // RFC 8656
    /// Channel number of a ChannelBind, in [`crate::CHANNEL_RANGE`].
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// Allocation lifetime in seconds.
    pub const LIFETIME: u16 = 0x000D;
    /// A peer address of a TURN allocation, XORed.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// Relayed application data of a Send or Data indication.
    pub const DATA: u16 = 0x0013;
    /// The relayed address of an allocation, XORed.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// Family of the relayed address an Allocate asks for.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// Asks for an even relay port, optionally reserving the next one.
    pub const EVEN_PORT: u16 = 0x0018;
    /// Transport protocol of the allocation (UDP).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// Asks the server to set DF on relayed datagrams.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// Token naming a port reserved by EVEN-PORT.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// Asks for a second (IPv6) relayed address in the same allocation.
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    /// Why one family of a dual-stack allocation failed.
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// An ICMP error from a peer, relayed in a Data indication.
    pub const ICMP: u16 = 0x8004;
    // RFC 8445 (ICE)
    /// ICE priority of the candidate the check would create.
    pub const PRIORITY: u16 = 0x0024;
    /// ICE nomination by the controlling agent.
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// Tie-breaker of an agent in the controlled role.
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// Tie-breaker of an agent in the controlling role.
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Every type this codec understands, in registry order.
    pub const ALL: [u16; 33] = [
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
        ADDITIONAL_ADDRESS_FAMILY,
        ADDRESS_ERROR_CODE,
        PASSWORD_ALGORITHMS,
        ALTERNATE_DOMAIN,
        ICMP,
        SOFTWARE,
        ALTERNATE_SERVER,
        FINGERPRINT,
        ICE_CONTROLLED,
        ICE_CONTROLLING,
    ];

    /// Whether this codec understands `typ` (the `known` argument of
    /// [`crate::Message::unknown_comprehension_required`]).
    pub fn is_known(typ: u16) -> bool {
        ALL.contains(&typ)
    }

    /// Types 0x0000–0x7FFF must be understood by the receiver (RFC 8489 §14).
    pub fn is_comprehension_required(typ: u16) -> bool {
        typ < 0x8000
    }
}

/// Byte limits of text values. Decoding accepts what RFC 8489 allows a receiver to see (763 bytes for
/// 128 characters); encoding refuses what a conforming receiver might drop (over 509 bytes).
pub mod limits {
    /// USERNAME: "fewer than 509 bytes" in RFC 8489, 513 in RFC 5389; accept the older, larger bound.
    pub const USERNAME_MAX: usize = 512;
    /// REALM, NONCE, SOFTWARE and error reason phrases, as received.
    pub const TEXT_DECODE_MAX: usize = 763;
    /// REALM, NONCE, SOFTWARE and error reason phrases, as sent.
    pub const TEXT_ENCODE_MAX: usize = 509;
    /// ALTERNATE-DOMAIN is a DNS name.
    pub const DOMAIN_MAX: usize = 255;
}

/// Typed decoding of one attribute value.
pub trait DecodeAttr<'a>: Sized {
    /// The attribute type this value is found under.
    const TYPE: u16;
    /// Decodes a value (without padding); `tid` is the message's transaction id (the XOR mask of addresses).
    fn decode_value(value: &'a [u8], tid: &TransactionId) -> Result<Self, ParseError>;
}

/// Typed encoding of one attribute value.
pub trait EncodeAttr {
    /// The attribute type code to write.
    fn attr_type(&self) -> u16;
    /// The value's length without padding; refuses values a receiver would reject.
    fn value_len(&self) -> Result<usize, EncodeError>;
    /// Writes the value into `out`, which is exactly [`EncodeAttr::value_len`] bytes long.
    fn write_value(&self, out: &mut [u8], tid: &TransactionId);
}

/// Address family codes of address attributes and (ADDITIONAL-)REQUESTED-ADDRESS-FAMILY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (wire code 0x01).
    V4,
    /// IPv6 (wire code 0x02).
    V6,
}

impl Family {
    /// The wire code (0x01 or 0x02).
    pub fn code(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    /// The family of a wire code; [`ParseError::BadFamily`] for codes other than 0x01 and 0x02.
    pub fn from_code(code: u8) -> Result<Family, ParseError> {
        match code {
            0x01 => Ok(Family::V4),
            0x02 => Ok(Family::V6),
            _ => Err(ParseError::BadFamily),
        }
    }

    /// The family of an IP address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Length of an address attribute value of this family.
    pub const fn address_value_len(self) -> usize {
        match self {
            Family::V4 => 8,
            Family::V6 => 20,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers shared by the codecs.

fn bad(typ: u16) -> ParseError {
    ParseError::BadAttribute(typ)
}

fn exact<const N: usize>(typ: u16, value: &[u8]) -> Result<[u8; N], ParseError> {
    value.try_into().map_err(|_| bad(typ))
}

fn text(typ: u16, value: &[u8], max: usize) -> Result<&str, ParseError> {
    if value.len() > max {
        return Err(ParseError::TextTooLong(typ));
    }
    std::str::from_utf8(value).map_err(|_| ParseError::BadText(typ))
}

fn text_len(typ: u16, s: &str, max: usize) -> Result<usize, EncodeError> {
    if s.len() > max {
        Err(EncodeError::InvalidValue(typ))
    } else {
        Ok(s.len())
    }
}

fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    mask
}

/// Decodes a MAPPED-ADDRESS style value; `xor` selects the XOR-* variant (RFC 8489 §14.2).
fn decode_address(
    typ: u16,
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, ParseError> {
    if value.len() < 4 {
        return Err(bad(typ));
    }
    let family = Family::from_code(value[1])?;
    if value.len() != family.address_value_len() {
        return Err(bad(typ));
    }
    let mask = xor.map(xor_mask).unwrap_or([0; 16]);
    let port = u16::from_be_bytes([value[2] ^ mask[0], value[3] ^ mask[1]]);
    let ip = match family {
        Family::V4 => {
            let mut b = [0u8; 4];
            for (i, x) in b.iter_mut().enumerate() {
                *x = value[4 + i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        Family::V6 => {
            let mut b = [0u8; 16];
            for (i, x) in b.iter_mut().enumerate() {
                *x = value[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn address_len(addr: &SocketAddr) -> usize {
    Family::of(addr.ip()).address_value_len()
}

fn write_address(out: &mut [u8], addr: &SocketAddr, xor: Option<&TransactionId>) {
    let mask = xor.map(xor_mask).unwrap_or([0; 16]);
    out[0] = 0;
    out[1] = Family::of(addr.ip()).code();
    let port = addr.port().to_be_bytes();
    out[2] = port[0] ^ mask[0];
    out[3] = port[1] ^ mask[1];
    match addr.ip() {
        IpAddr::V4(ip) => {
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask[i];
            }
        }
        IpAddr::V6(ip) => {
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask[i];
            }
        }
    }
}

/// ERROR-CODE style value: 21 reserved bits, class (3 bits), number (8 bits), reason.
fn decode_error(typ: u16, value: &[u8]) -> Result<(u16, &str), ParseError> {
    if value.len() < 4 {
        return Err(bad(typ));
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(bad(typ));
    }
    Ok((
        class * 100 + number,
        text(typ, &value[4..], limits::TEXT_DECODE_MAX)?,
    ))
}

fn error_len(typ: u16, code: u16, reason: &str) -> Result<usize, EncodeError> {
    if !(300..=699).contains(&code) {
        return Err(EncodeError::BadErrorCode);
    }
    Ok(4 + text_len(typ, reason, limits::TEXT_ENCODE_MAX)?)
}

fn write_error(out: &mut [u8], first: u8, code: u16, reason: &str) {
    // error_len checked 300..=699, so both fit in a byte.
    out[..4].copy_from_slice(&[first, 0, (code / 100) as u8, (code % 100) as u8]);
    out[4..].copy_from_slice(reason.as_bytes());
}

// ---------------------------------------------------------------------------------------------------------
// One struct per attribute.

macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, $xor:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub SocketAddr);

        impl<'a> DecodeAttr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode_value(value: &'a [u8], tid: &TransactionId) -> Result<Self, ParseError> {
                decode_address(Self::TYPE, value, if $xor { Some(tid) } else { None }).map($name)
            }
        }

        impl EncodeAttr for $name {
            fn attr_type(&self) -> u16 {
                $typ
            }
            fn value_len(&self) -> Result<usize, EncodeError> {
                Ok(address_len(&self.0))
            }
            fn write_value(&self, out: &mut [u8], tid: &TransactionId) {
                write_address(out, &self.0, if $xor { Some(tid) } else { None })
            }
        }
    };
}

address_attr!(
    /// MAPPED-ADDRESS: the reflexive address, in clear (RFC 3489 clients).
    MappedAddress, attr::MAPPED_ADDRESS, false
);
address_attr!(
    /// XOR-MAPPED-ADDRESS: the reflexive address, XORed so NATs that rewrite addresses in payloads miss it.
    XorMappedAddress, attr::XOR_MAPPED_ADDRESS, true
);
address_attr!(
    /// ALTERNATE-SERVER: where a 300 Try Alternate points.
    AlternateServer, attr::ALTERNATE_SERVER, false
);
address_attr!(
    /// XOR-PEER-ADDRESS: a peer of a TURN allocation.
    XorPeerAddress, attr::XOR_PEER_ADDRESS, true
);
address_attr!(
    /// XOR-RELAYED-ADDRESS: the relayed transport address of an allocation.
    XorRelayedAddress, attr::XOR_RELAYED_ADDRESS, true
);

macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, $dmax:expr, $emax:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> DecodeAttr<'a> for $name<'a> {
            const TYPE: u16 = $typ;
            fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
                text(Self::TYPE, value, $dmax).map($name)
            }
        }

        impl EncodeAttr for $name<'_> {
            fn attr_type(&self) -> u16 {
                $typ
            }
            fn value_len(&self) -> Result<usize, EncodeError> {
                text_len($typ, self.0, $emax)
            }
            fn write_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0.as_bytes())
            }
        }
    };
}

text_attr!(
    /// USERNAME.
    Username, attr::USERNAME, limits::USERNAME_MAX, limits::USERNAME_MAX
);
text_attr!(
    /// REALM: the long-term credential realm.
    Realm, attr::REALM, limits::TEXT_DECODE_MAX, limits::TEXT_ENCODE_MAX
);
text_attr!(
    /// NONCE: the server's challenge.
    Nonce, attr::NONCE, limits::TEXT_DECODE_MAX, limits::TEXT_ENCODE_MAX
);
text_attr!(
    /// SOFTWARE: agent description, informational.
    Software, attr::SOFTWARE, limits::TEXT_DECODE_MAX, limits::TEXT_ENCODE_MAX
);
text_attr!(
    /// ALTERNATE-DOMAIN: the TLS name of an ALTERNATE-SERVER.
    AlternateDomain, attr::ALTERNATE_DOMAIN, limits::DOMAIN_MAX, limits::DOMAIN_MAX
);

macro_rules! int_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, $int:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub $int);

        impl<'a> DecodeAttr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
                Ok($name(<$int>::from_be_bytes(exact(Self::TYPE, value)?)))
            }
        }

        impl EncodeAttr for $name {
            fn attr_type(&self) -> u16 {
                $typ
            }
            fn value_len(&self) -> Result<usize, EncodeError> {
                Ok(std::mem::size_of::<$int>())
            }
            fn write_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&self.0.to_be_bytes())
            }
        }
    };
}

int_attr!(
    /// LIFETIME: seconds an allocation should live.
    Lifetime, attr::LIFETIME, u32
);
int_attr!(
    /// PRIORITY of an ICE candidate.
    Priority, attr::PRIORITY, u32
);
int_attr!(
    /// ICE-CONTROLLED tie-breaker.
    IceControlled, attr::ICE_CONTROLLED, u64
);
int_attr!(
    /// ICE-CONTROLLING tie-breaker.
    IceControlling, attr::ICE_CONTROLLING, u64
);
int_attr!(
    /// FINGERPRINT value (CRC-32 ^ 0x5354554E); written by [`crate::MessageWriter::add_fingerprint`].
    Fingerprint, attr::FINGERPRINT, u32
);

macro_rules! flag_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name;

        impl<'a> DecodeAttr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
                if value.is_empty() { Ok($name) } else { Err(bad(Self::TYPE)) }
            }
        }

        impl EncodeAttr for $name {
            fn attr_type(&self) -> u16 {
                $typ
            }
            fn value_len(&self) -> Result<usize, EncodeError> {
                Ok(0)
            }
            fn write_value(&self, _: &mut [u8], _: &TransactionId) {}
        }
    };
}

flag_attr!(
    /// DONT-FRAGMENT: set DF on relayed datagrams.
    DontFragment, attr::DONT_FRAGMENT
);
flag_attr!(
    /// USE-CANDIDATE: ICE nomination.
    UseCandidate, attr::USE_CANDIDATE
);

macro_rules! family_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub Family);

        impl<'a> DecodeAttr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
                let v: [u8; 4] = exact(Self::TYPE, value)?;
                Family::from_code(v[0]).map($name)
            }
        }

        impl EncodeAttr for $name {
            fn attr_type(&self) -> u16 {
                $typ
            }
            fn value_len(&self) -> Result<usize, EncodeError> {
                Ok(4)
            }
            fn write_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&[self.0.code(), 0, 0, 0])
            }
        }
    };
}

family_attr!(
    /// REQUESTED-ADDRESS-FAMILY: which family the relayed address should have.
    RequestedAddressFamily, attr::REQUESTED_ADDRESS_FAMILY
);
family_attr!(
    /// ADDITIONAL-ADDRESS-FAMILY: ask for an IPv6 relayed address besides the IPv4 one.
    AdditionalAddressFamily, attr::ADDITIONAL_ADDRESS_FAMILY
);

macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, $n:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name<'a>(pub &'a [u8; $n]);

        impl<'a> DecodeAttr<'a> for $name<'a> {
            const TYPE: u16 = $typ;
            fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
                value.try_into().map($name).map_err(|_| bad(Self::TYPE))
            }
        }

        impl EncodeAttr for $name<'_> {
            fn attr_type(&self) -> u16 {
                $typ
            }
            fn value_len(&self) -> Result<usize, EncodeError> {
                Ok($n)
            }
            fn write_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0)
            }
        }
    };
}

bytes_attr!(
    /// USERHASH: SHA-256(username ":" realm), see [`crate::userhash`].
    UserHash, attr::USERHASH, 32
);
bytes_attr!(
    /// MESSAGE-INTEGRITY value; written by [`crate::MessageWriter::add_message_integrity`].
    MessageIntegrity, attr::MESSAGE_INTEGRITY, 20
);

/// MESSAGE-INTEGRITY-SHA256 value: 16 to 32 bytes, a multiple of 4 (truncation is allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

fn sha256_len_ok(n: usize) -> bool {
    (16..=32).contains(&n) && n & 3 == 0
}

impl<'a> DecodeAttr<'a> for MessageIntegritySha256<'a> {
    const TYPE: u16 = attr::MESSAGE_INTEGRITY_SHA256;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        if sha256_len_ok(value.len()) {
            Ok(MessageIntegritySha256(value))
        } else {
            Err(bad(Self::TYPE))
        }
    }
}

impl EncodeAttr for MessageIntegritySha256<'_> {
    fn attr_type(&self) -> u16 {
        attr::MESSAGE_INTEGRITY_SHA256
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        if sha256_len_ok(self.0.len()) {
            Ok(self.0.len())
        } else {
            Err(EncodeError::InvalidValue(attr::MESSAGE_INTEGRITY_SHA256))
        }
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0)
    }
}

/// DATA: the payload of Send and Data indications, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Data<'a>(pub &'a [u8]);

impl<'a> DecodeAttr<'a> for Data<'a> {
    const TYPE: u16 = attr::DATA;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        Ok(Data(value))
    }
}

impl EncodeAttr for Data<'_> {
    fn attr_type(&self) -> u16 {
        attr::DATA
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(self.0.len())
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.0)
    }
}

/// ERROR-CODE: a 300–699 code and a reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode<'a> {
    /// Error code, 300–699 (see [`crate::error_code`]).
    pub code: u16,
    /// Reason phrase for people, UTF-8, at most [`limits::TEXT_ENCODE_MAX`] bytes when sent.
    pub reason: &'a str,
}

impl ErrorCode<'static> {
    /// `code` with the RFC's reason phrase, e.g. `ErrorCode::new(error_code::STALE_NONCE)`.
    pub fn new(code: u16) -> Self {
        ErrorCode {
            code,
            reason: crate::error_code::reason(code),
        }
    }
}

impl<'a> DecodeAttr<'a> for ErrorCode<'a> {
    const TYPE: u16 = attr::ERROR_CODE;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let (code, reason) = decode_error(Self::TYPE, value)?;
        Ok(ErrorCode { code, reason })
    }
}

impl EncodeAttr for ErrorCode<'_> {
    fn attr_type(&self) -> u16 {
        attr::ERROR_CODE
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        error_len(attr::ERROR_CODE, self.code, self.reason)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        write_error(out, 0, self.code, self.reason)
    }
}

/// ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of a dual allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressErrorCode<'a> {
    /// The address family whose allocation failed.
    pub family: Family,
    /// Error code, 300–699 (see [`crate::error_code`]).
    pub code: u16,
    /// Reason phrase for people, UTF-8.
    pub reason: &'a str,
}

impl<'a> DecodeAttr<'a> for AddressErrorCode<'a> {
    const TYPE: u16 = attr::ADDRESS_ERROR_CODE;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let (code, reason) = decode_error(Self::TYPE, value)?;
        Ok(AddressErrorCode {
            family: Family::from_code(value[0])?,
            code,
            reason,
        })
    }
}

impl EncodeAttr for AddressErrorCode<'_> {
    fn attr_type(&self) -> u16 {
        attr::ADDRESS_ERROR_CODE
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        error_len(attr::ADDRESS_ERROR_CODE, self.code, self.reason)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        write_error(out, self.family.code(), self.code, self.reason)
    }
}

/// CHANNEL-NUMBER (the 16-bit number plus 16 reserved bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelNumber(pub u16);

impl<'a> DecodeAttr<'a> for ChannelNumber {
    const TYPE: u16 = attr::CHANNEL_NUMBER;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let v: [u8; 4] = exact(Self::TYPE, value)?;
        Ok(ChannelNumber(u16::from_be_bytes([v[0], v[1]])))
    }
}

impl EncodeAttr for ChannelNumber {
    fn attr_type(&self) -> u16 {
        attr::CHANNEL_NUMBER
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        let n = self.0.to_be_bytes();
        out.copy_from_slice(&[n[0], n[1], 0, 0])
    }
}

/// EVEN-PORT: the R bit asks to reserve the next-higher port too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EvenPort(pub bool);

impl<'a> DecodeAttr<'a> for EvenPort {
    const TYPE: u16 = attr::EVEN_PORT;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let [v]: [u8; 1] = exact(Self::TYPE, value)?;
        Ok(EvenPort(v & 0x80 != 0))
    }
}

impl EncodeAttr for EvenPort {
    fn attr_type(&self) -> u16 {
        attr::EVEN_PORT
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out[0] = if self.0 { 0x80 } else { 0 };
    }
}

/// REQUESTED-TRANSPORT: IANA protocol number of the relayed transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// UDP, the only transport RFC 8656 relays.
    pub const UDP: RequestedTransport = RequestedTransport(17);
    /// TCP (RFC 6062 relays; refused by servers without it).
    pub const TCP: RequestedTransport = RequestedTransport(6);
}

impl<'a> DecodeAttr<'a> for RequestedTransport {
    const TYPE: u16 = attr::REQUESTED_TRANSPORT;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let v: [u8; 4] = exact(Self::TYPE, value)?;
        Ok(RequestedTransport(v[0]))
    }
}

impl EncodeAttr for RequestedTransport {
    fn attr_type(&self) -> u16 {
        attr::REQUESTED_TRANSPORT
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&[self.0, 0, 0, 0])
    }
}

/// RESERVATION-TOKEN: names a port reserved by EVEN-PORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservationToken(pub [u8; 8]);

impl<'a> DecodeAttr<'a> for ReservationToken {
    const TYPE: u16 = attr::RESERVATION_TOKEN;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        exact(Self::TYPE, value).map(ReservationToken)
    }
}

impl EncodeAttr for ReservationToken {
    fn attr_type(&self) -> u16 {
        attr::RESERVATION_TOKEN
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(8)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(&self.0)
    }
}

/// ICMP (RFC 8656 §18.13): an ICMP error relayed in a Data indication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// ICMP (or ICMPv6) type.
    pub typ: u8,
    /// ICMP code.
    pub code: u8,
    /// The error data word (e.g. the next-hop MTU of "fragmentation needed").
    pub data: u32,
}

impl<'a> DecodeAttr<'a> for Icmp {
    const TYPE: u16 = attr::ICMP;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let v: [u8; 8] = exact(Self::TYPE, value)?;
        Ok(Icmp {
            typ: v[2],
            code: v[3],
            data: u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
        })
    }
}

impl EncodeAttr for Icmp {
    fn attr_type(&self) -> u16 {
        attr::ICMP
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(8)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out[..4].copy_from_slice(&[0, 0, self.typ, self.code]);
        out[4..].copy_from_slice(&self.data.to_be_bytes());
    }
}

/// PASSWORD-ALGORITHM: the algorithm a client picked, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithm<'a> {
    /// Algorithm number (0x0001 MD5, 0x0002 SHA-256).
    pub algorithm: u16,
    /// Algorithm parameters, unpadded (empty for both defined algorithms).
    pub params: &'a [u8],
}

impl PasswordAlgorithm<'static> {
    /// Algorithm number 0x0001: MD5 key, HMAC-SHA1 integrity.
    pub const MD5: u16 = 0x0001;
    /// Algorithm number 0x0002: SHA-256 key, HMAC-SHA256 integrity.
    pub const SHA256: u16 = 0x0002;
}

/// Reads one (algorithm, length, params, padding) entry; returns it and the rest.
fn algorithm_entry(typ: u16, value: &[u8]) -> Result<(PasswordAlgorithm<'_>, &[u8]), ParseError> {
    if value.len() < 4 {
        return Err(bad(typ));
    }
    let plen = usize::from(u16::from_be_bytes([value[2], value[3]]));
    let params = value.get(4..4 + plen).ok_or(bad(typ))?;
    let rest = value.get(4 + crate::padded(plen)..).unwrap_or(&[]);
    Ok((
        PasswordAlgorithm {
            algorithm: u16::from_be_bytes([value[0], value[1]]),
            params,
        },
        rest,
    ))
}

fn algorithm_len(a: &PasswordAlgorithm<'_>) -> Result<usize, EncodeError> {
    if a.params.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooLong);
    }
    Ok(4 + crate::padded(a.params.len()))
}

fn write_algorithm(out: &mut [u8], a: &PasswordAlgorithm<'_>) {
    out[..2].copy_from_slice(&a.algorithm.to_be_bytes());
    // algorithm_len checked that the length fits 16 bits.
    out[2..4].copy_from_slice(&(a.params.len() as u16).to_be_bytes());
    out[4..4 + a.params.len()].copy_from_slice(a.params);
    out[4 + a.params.len()..].fill(0);
}

impl<'a> DecodeAttr<'a> for PasswordAlgorithm<'a> {
    const TYPE: u16 = attr::PASSWORD_ALGORITHM;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        let (a, rest) = algorithm_entry(Self::TYPE, value)?;
        // The value is exactly one entry (its params padded inside the value, RFC 8489 §14.12).
        if !rest.is_empty() || value.len() < 4 + a.params.len() {
            return Err(bad(Self::TYPE));
        }
        Ok(a)
    }
}

impl EncodeAttr for PasswordAlgorithm<'_> {
    fn attr_type(&self) -> u16 {
        attr::PASSWORD_ALGORITHM
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        algorithm_len(self)
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        write_algorithm(out, self)
    }
}

/// PASSWORD-ALGORITHMS: the server's list, either as received (wire bytes, validated) or as a slice to send.
#[derive(Clone, Copy)]
pub struct PasswordAlgorithms<'a>(AlgorithmList<'a>);

#[derive(Clone, Copy)]
enum AlgorithmList<'a> {
    Wire(&'a [u8]),
    List(&'a [PasswordAlgorithm<'a>]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// A list to send.
    pub const fn new(list: &'a [PasswordAlgorithm<'a>]) -> Self {
        PasswordAlgorithms(AlgorithmList::List(list))
    }

    /// Wraps wire bytes after checking their framing.
    pub fn from_wire(value: &'a [u8]) -> Result<Self, ParseError> {
        let mut rest = value;
        while !rest.is_empty() {
            rest = algorithm_entry(attr::PASSWORD_ALGORITHMS, rest)?.1;
        }
        Ok(PasswordAlgorithms(AlgorithmList::Wire(value)))
    }

    /// The offered algorithms in order, as [`PasswordAlgorithm`] values.
    pub fn iter(&self) -> PasswordAlgorithmsIter<'a> {
        match self.0 {
            AlgorithmList::Wire(rest) => PasswordAlgorithmsIter { rest, list: &[] },
            AlgorithmList::List(list) => PasswordAlgorithmsIter { rest: &[], list },
        }
    }

    /// Whether the list offers `algorithm` (e.g. [`PasswordAlgorithm::SHA256`]).
    pub fn contains(&self, algorithm: u16) -> bool {
        self.iter().any(|a| a.algorithm == algorithm)
    }
}

impl fmt::Debug for PasswordAlgorithms<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for PasswordAlgorithms<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PasswordAlgorithms<'_> {}

/// Iterator over [`PasswordAlgorithms`].
#[derive(Clone, Debug)]
pub struct PasswordAlgorithmsIter<'a> {
    rest: &'a [u8],
    list: &'a [PasswordAlgorithm<'a>],
}

impl<'a> Iterator for PasswordAlgorithmsIter<'a> {
    type Item = PasswordAlgorithm<'a>;
    fn next(&mut self) -> Option<PasswordAlgorithm<'a>> {
        if let Some((first, rest)) = self.list.split_first() {
            self.list = rest;
            return Some(*first);
        }
        // Wire bytes were validated by from_wire; a failure here just ends the walk.
        let (a, rest) = algorithm_entry(attr::PASSWORD_ALGORITHMS, self.rest).ok()?;
        self.rest = rest;
        Some(a)
    }
}

impl<'a> DecodeAttr<'a> for PasswordAlgorithms<'a> {
    const TYPE: u16 = attr::PASSWORD_ALGORITHMS;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        PasswordAlgorithms::from_wire(value)
    }
}

impl EncodeAttr for PasswordAlgorithms<'_> {
    fn attr_type(&self) -> u16 {
        attr::PASSWORD_ALGORITHMS
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        match self.0 {
            AlgorithmList::Wire(w) => Ok(w.len()),
            AlgorithmList::List(list) => list.iter().map(algorithm_len).sum(),
        }
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        match self.0 {
            AlgorithmList::Wire(w) => out.copy_from_slice(w),
            AlgorithmList::List(list) => {
                let mut at = 0;
                for a in list {
                    let n = algorithm_len(a).unwrap_or(0);
                    write_algorithm(&mut out[at..at + n], a);
                    at += n;
                }
            }
        }
    }
}

/// UNKNOWN-ATTRIBUTES: the types a 420 response lists, as received or as a slice to send.
#[derive(Clone, Copy)]
pub struct UnknownAttributes<'a>(TypeList<'a>);

#[derive(Clone, Copy)]
enum TypeList<'a> {
    Wire(&'a [u8]),
    List(&'a [u16]),
}

impl<'a> UnknownAttributes<'a> {
    /// A list to send.
    pub const fn new(types: &'a [u16]) -> Self {
        UnknownAttributes(TypeList::List(types))
    }

    /// The listed attribute types in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        let (wire, list): (&'a [u8], &'a [u16]) = match self.0 {
            TypeList::Wire(w) => (w, &[]),
            TypeList::List(l) => (&[], l),
        };
        wire.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .chain(list.iter().copied())
    }

    /// Number of listed types.
    pub fn len(&self) -> usize {
        match self.0 {
            TypeList::Wire(w) => w.len() / 2,
            TypeList::List(l) => l.len(),
        }
    }

    /// Whether no type is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for UnknownAttributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for UnknownAttributes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UnknownAttributes<'_> {}

impl<'a> DecodeAttr<'a> for UnknownAttributes<'a> {
    const TYPE: u16 = attr::UNKNOWN_ATTRIBUTES;
    fn decode_value(value: &'a [u8], _: &TransactionId) -> Result<Self, ParseError> {
        if value.len() & 1 != 0 {
            return Err(bad(Self::TYPE));
        }
        Ok(UnknownAttributes(TypeList::Wire(value)))
    }
}

impl EncodeAttr for UnknownAttributes<'_> {
    fn attr_type(&self) -> u16 {
        attr::UNKNOWN_ATTRIBUTES
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(2 * self.len())
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.iter()) {
            chunk.copy_from_slice(&t.to_be_bytes());
        }
    }
}

/// An attribute this codec has no struct for, kept as raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownAttr<'a> {
    /// Attribute type code.
    pub typ: u16,
    /// Raw value, unpadded.
    pub value: &'a [u8],
}

impl EncodeAttr for UnknownAttr<'_> {
    fn attr_type(&self) -> u16 {
        self.typ
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        Ok(self.value.len())
    }
    fn write_value(&self, out: &mut [u8], _: &TransactionId) {
        out.copy_from_slice(self.value)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The enum over all of them.

/// Any decoded attribute. Text and byte values borrow from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// [`MappedAddress`]: the reflexive address in clear.
    MappedAddress(SocketAddr),
    /// [`XorMappedAddress`]: the reflexive address, un-XORed.
    XorMappedAddress(SocketAddr),
    /// [`Username`].
    Username(&'a str),
    /// [`UserHash`]: SHA-256 of username and realm.
    UserHash(&'a [u8; 32]),
    /// [`MessageIntegrity`]: the HMAC-SHA1 as sent; check it with [`crate::Message::verify_integrity`].
    MessageIntegrity(&'a [u8; 20]),
    /// [`MessageIntegritySha256`]: the (possibly truncated, 16–32 bytes) HMAC-SHA256 as sent.
    MessageIntegritySha256(&'a [u8]),
    /// [`Fingerprint`]: the CRC-32 value as sent (XOR 0x5354554E applied).
    Fingerprint(u32),
    /// [`ErrorCode`]: code and reason phrase.
    ErrorCode {
        /// Error code, 300–699.
        code: u16,
        /// Reason phrase, UTF-8.
        reason: &'a str,
    },
    /// [`Realm`].
    Realm(&'a str),
    /// [`Nonce`].
    Nonce(&'a str),
    /// [`PasswordAlgorithms`]: the algorithms a server offers.
    PasswordAlgorithms(PasswordAlgorithms<'a>),
    /// [`PasswordAlgorithm`]: the algorithm a client picked.
    PasswordAlgorithm {
        /// Algorithm number (0x0001 MD5, 0x0002 SHA-256).
        algorithm: u16,
        /// Algorithm parameters, unpadded (empty for both defined algorithms).
        params: &'a [u8],
    },
    /// [`UnknownAttributes`]: the types a 420 response did not understand.
    UnknownAttributes(UnknownAttributes<'a>),
    /// [`Software`].
    Software(&'a str),
    /// [`AlternateServer`].
    AlternateServer(SocketAddr),
    /// [`AlternateDomain`].
    AlternateDomain(&'a str),
    /// [`ChannelNumber`]: the channel (the RFFU bytes dropped).
    ChannelNumber(u16),
    /// [`Lifetime`], in seconds.
    Lifetime(u32),
    /// [`XorPeerAddress`], un-XORed.
    XorPeerAddress(SocketAddr),
    /// [`Data`]: the relayed payload, borrowed from the datagram.
    Data(&'a [u8]),
    /// [`XorRelayedAddress`], un-XORed.
    XorRelayedAddress(SocketAddr),
    /// [`RequestedAddressFamily`].
    RequestedAddressFamily(Family),
    /// The R bit: reserve the next-higher port too.
    EvenPort(bool),
    /// IANA protocol number (17 = UDP).
    RequestedTransport(u8),
    /// [`DontFragment`] (no value).
    DontFragment,
    /// [`ReservationToken`]: the opaque 8-byte token.
    ReservationToken([u8; 8]),
    /// [`AdditionalAddressFamily`].
    AdditionalAddressFamily(Family),
    /// [`AddressErrorCode`]: why one family of a dual allocation failed.
    AddressErrorCode {
        /// The family that failed.
        family: Family,
        /// Error code, 300–699.
        code: u16,
        /// Reason phrase, UTF-8.
        reason: &'a str,
    },
    /// [`Icmp`]: an ICMP error relayed from a peer.
    Icmp {
        /// ICMP (or ICMPv6) type.
        typ: u8,
        /// ICMP code.
        code: u8,
        /// The error data word (e.g. the next-hop MTU of "fragmentation needed").
        data: u32,
    },
    /// [`Priority`]: ICE candidate priority.
    Priority(u32),
    /// [`UseCandidate`]: ICE nomination flag (no value).
    UseCandidate,
    /// [`IceControlled`]: the tie-breaker of an agent in the controlled role.
    IceControlled(u64),
    /// [`IceControlling`]: the tie-breaker of an agent in the controlling role.
    IceControlling(u64),
    /// A type this codec has no struct for (see [`UnknownAttr`]).
    Unknown {
        /// Attribute type code.
        typ: u16,
        /// Raw value, unpadded.
        value: &'a [u8],
    },
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute value (without padding). `tid` is the message's transaction id.
    pub fn decode(
        typ: u16,
        value: &'a [u8],
        tid: &TransactionId,
    ) -> Result<Attribute<'a>, ParseError> {
        fn d<'a, A: DecodeAttr<'a>>(value: &'a [u8], tid: &TransactionId) -> Result<A, ParseError> {
            A::decode_value(value, tid)
        }
        use attr::*;
        Ok(match typ {
            MAPPED_ADDRESS => Attribute::MappedAddress(d::<MappedAddress>(value, tid)?.0),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(d::<XorMappedAddress>(value, tid)?.0),
            USERNAME => Attribute::Username(d::<Username>(value, tid)?.0),
            USERHASH => Attribute::UserHash(d::<UserHash>(value, tid)?.0),
            MESSAGE_INTEGRITY => Attribute::MessageIntegrity(d::<MessageIntegrity>(value, tid)?.0),
            MESSAGE_INTEGRITY_SHA256 => {
                Attribute::MessageIntegritySha256(d::<MessageIntegritySha256>(value, tid)?.0)
            }
            FINGERPRINT => Attribute::Fingerprint(d::<Fingerprint>(value, tid)?.0),
            ERROR_CODE => {
                let e = d::<ErrorCode>(value, tid)?;
                Attribute::ErrorCode {
                    code: e.code,
                    reason: e.reason,
                }
            }
            REALM => Attribute::Realm(d::<Realm>(value, tid)?.0),
            NONCE => Attribute::Nonce(d::<Nonce>(value, tid)?.0),
            PASSWORD_ALGORITHMS => Attribute::PasswordAlgorithms(d(value, tid)?),
            PASSWORD_ALGORITHM => {
                let a = d::<PasswordAlgorithm>(value, tid)?;
                Attribute::PasswordAlgorithm {
                    algorithm: a.algorithm,
                    params: a.params,
                }
            }
            UNKNOWN_ATTRIBUTES => Attribute::UnknownAttributes(d(value, tid)?),
            SOFTWARE => Attribute::Software(d::<Software>(value, tid)?.0),
            ALTERNATE_SERVER => Attribute::AlternateServer(d::<AlternateServer>(value, tid)?.0),
            ALTERNATE_DOMAIN => Attribute::AlternateDomain(d::<AlternateDomain>(value, tid)?.0),
            CHANNEL_NUMBER => Attribute::ChannelNumber(d::<ChannelNumber>(value, tid)?.0),
            LIFETIME => Attribute::Lifetime(d::<Lifetime>(value, tid)?.0),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(d::<XorPeerAddress>(value, tid)?.0),
            DATA => Attribute::Data(d::<Data>(value, tid)?.0),
            XOR_RELAYED_ADDRESS => {
                Attribute::XorRelayedAddress(d::<XorRelayedAddress>(value, tid)?.0)
            }
            REQUESTED_ADDRESS_FAMILY => {
                Attribute::RequestedAddressFamily(d::<RequestedAddressFamily>(value, tid)?.0)
            }
            EVEN_PORT => Attribute::EvenPort(d::<EvenPort>(value, tid)?.0),
            REQUESTED_TRANSPORT => {
                Attribute::RequestedTransport(d::<RequestedTransport>(value, tid)?.0)
            }
            DONT_FRAGMENT => {
                d::<DontFragment>(value, tid)?;
                Attribute::DontFragment
            }
            RESERVATION_TOKEN => Attribute::ReservationToken(d::<ReservationToken>(value, tid)?.0),
            ADDITIONAL_ADDRESS_FAMILY => {
                Attribute::AdditionalAddressFamily(d::<AdditionalAddressFamily>(value, tid)?.0)
            }
            ADDRESS_ERROR_CODE => {
                let e = d::<AddressErrorCode>(value, tid)?;
                Attribute::AddressErrorCode {
                    family: e.family,
                    code: e.code,
                    reason: e.reason,
                }
            }
            ICMP => {
                let i = d::<Icmp>(value, tid)?;
                Attribute::Icmp {
                    typ: i.typ,
                    code: i.code,
                    data: i.data,
                }
            }
            PRIORITY => Attribute::Priority(d::<Priority>(value, tid)?.0),
            USE_CANDIDATE => {
                d::<UseCandidate>(value, tid)?;
                Attribute::UseCandidate
            }
            ICE_CONTROLLED => Attribute::IceControlled(d::<IceControlled>(value, tid)?.0),
            ICE_CONTROLLING => Attribute::IceControlling(d::<IceControlling>(value, tid)?.0),
            _ => Attribute::Unknown { typ, value },
        })
    }

    /// The type code of this attribute.
    pub fn typ(&self) -> u16 {
        self.with_encoder(|e| e.attr_type())
    }

    /// Runs `f` with the per-attribute struct this value corresponds to.
    fn with_encoder<R>(&self, f: impl FnOnce(&dyn EncodeAttr) -> R) -> R {
        match *self {
            Attribute::MappedAddress(a) => f(&MappedAddress(a)),
            Attribute::XorMappedAddress(a) => f(&XorMappedAddress(a)),
            Attribute::Username(s) => f(&Username(s)),
            Attribute::UserHash(h) => f(&UserHash(h)),
            Attribute::MessageIntegrity(m) => f(&MessageIntegrity(m)),
            Attribute::MessageIntegritySha256(m) => f(&MessageIntegritySha256(m)),
            Attribute::Fingerprint(v) => f(&Fingerprint(v)),
            Attribute::ErrorCode { code, reason } => f(&ErrorCode { code, reason }),
            Attribute::Realm(s) => f(&Realm(s)),
            Attribute::Nonce(s) => f(&Nonce(s)),
            Attribute::PasswordAlgorithms(l) => f(&l),
            Attribute::PasswordAlgorithm { algorithm, params } => {
                f(&PasswordAlgorithm { algorithm, params })
            }
            Attribute::UnknownAttributes(l) => f(&l),
            Attribute::Software(s) => f(&Software(s)),
            Attribute::AlternateServer(a) => f(&AlternateServer(a)),
            Attribute::AlternateDomain(s) => f(&AlternateDomain(s)),
            Attribute::ChannelNumber(n) => f(&ChannelNumber(n)),
            Attribute::Lifetime(v) => f(&Lifetime(v)),
            Attribute::XorPeerAddress(a) => f(&XorPeerAddress(a)),
            Attribute::Data(d) => f(&Data(d)),
            Attribute::XorRelayedAddress(a) => f(&XorRelayedAddress(a)),
            Attribute::RequestedAddressFamily(x) => f(&RequestedAddressFamily(x)),
            Attribute::EvenPort(r) => f(&EvenPort(r)),
            Attribute::RequestedTransport(p) => f(&RequestedTransport(p)),
            Attribute::DontFragment => f(&DontFragment),
            Attribute::ReservationToken(t) => f(&ReservationToken(t)),
            Attribute::AdditionalAddressFamily(x) => f(&AdditionalAddressFamily(x)),
            Attribute::AddressErrorCode {
                family,
                code,
                reason,
            } => f(&AddressErrorCode {
                family,
                code,
                reason,
            }),
            Attribute::Icmp { typ, code, data } => f(&Icmp { typ, code, data }),
            Attribute::Priority(v) => f(&Priority(v)),
            Attribute::UseCandidate => f(&UseCandidate),
            Attribute::IceControlled(v) => f(&IceControlled(v)),
            Attribute::IceControlling(v) => f(&IceControlling(v)),
            Attribute::Unknown { typ, value } => f(&UnknownAttr { typ, value }),
        }
    }
}

impl EncodeAttr for Attribute<'_> {
    fn attr_type(&self) -> u16 {
        self.typ()
    }
    fn value_len(&self) -> Result<usize, EncodeError> {
        self.with_encoder(|e| e.value_len())
    }
    fn write_value(&self, out: &mut [u8], tid: &TransactionId) {
        self.with_encoder(|e| e.write_value(out, tid))
    }
}
