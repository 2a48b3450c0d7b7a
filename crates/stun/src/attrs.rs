//! Typed attribute values: decoding from a value slice and encoding into a writer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::message::ParseError;
use crate::{MAGIC_COOKIE, TransactionId};

pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute type codes.
pub mod attr {
    // RFC 8489
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    // RFC 8656
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const ICMP: u16 = 0x8004;
    // RFC 8445 (ICE)
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Every type this codec understands (for 420 Unknown Attribute checks).
    pub fn is_known(typ: u16) -> bool {
        matches!(
            typ,
            MAPPED_ADDRESS
                | USERNAME
                | MESSAGE_INTEGRITY
                | ERROR_CODE
                | UNKNOWN_ATTRIBUTES
                | REALM
                | NONCE
                | MESSAGE_INTEGRITY_SHA256
                | PASSWORD_ALGORITHM
                | USERHASH
                | XOR_MAPPED_ADDRESS
                | PASSWORD_ALGORITHMS
                | ALTERNATE_DOMAIN
                | SOFTWARE
                | ALTERNATE_SERVER
                | FINGERPRINT
                | CHANNEL_NUMBER
                | LIFETIME
                | XOR_PEER_ADDRESS
                | DATA
                | XOR_RELAYED_ADDRESS
                | REQUESTED_ADDRESS_FAMILY
                | EVEN_PORT
                | REQUESTED_TRANSPORT
                | DONT_FRAGMENT
                | RESERVATION_TOKEN
                | ADDITIONAL_ADDRESS_FAMILY
                | ADDRESS_ERROR_CODE
                | ICMP
                | PRIORITY
                | USE_CANDIDATE
                | ICE_CONTROLLED
                | ICE_CONTROLLING
        )
    }
}

/// Address family codes of address attributes and REQUESTED-ADDRESS-FAMILY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn code(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    fn from_code(code: u8) -> Result<Family, ParseError> {
        match code {
            0x01 => Ok(Family::V4),
            0x02 => Ok(Family::V6),
            _ => Err(ParseError::BadFamily),
        }
    }

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A decoded attribute. Text and byte values borrow from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    Username(&'a str),
    UserHash(&'a [u8; 32]),
    /// Only written by [`crate::MessageWriter::add_message_integrity`]; decoded for completeness.
    MessageIntegrity(&'a [u8; 20]),
    MessageIntegritySha256(&'a [u8]),
    Fingerprint(u32),
    ErrorCode { code: u16, reason: &'a str },
    Realm(&'a str),
    Nonce(&'a str),
    /// Raw list of (algorithm u16, params length u16, params) entries.
    PasswordAlgorithms(&'a [u8]),
    PasswordAlgorithm { algorithm: u16, params: &'a [u8] },
    /// Raw list of big-endian u16 attribute types.
    UnknownAttributes(&'a [u8]),
    Software(&'a str),
    AlternateServer(SocketAddr),
    AlternateDomain(&'a str),
    ChannelNumber(u16),
    Lifetime(u32),
    XorPeerAddress(SocketAddr),
    Data(&'a [u8]),
    XorRelayedAddress(SocketAddr),
    RequestedAddressFamily(Family),
    /// The R bit: reserve the next-higher port too.
    EvenPort(bool),
    /// IANA protocol number (17 = UDP).
    RequestedTransport(u8),
    DontFragment,
    ReservationToken([u8; 8]),
    AdditionalAddressFamily(Family),
    AddressErrorCode { family: Family, code: u16, reason: &'a str },
    Icmp { typ: u8, code: u8, data: u32 },
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    Unknown { typ: u16, value: &'a [u8] },
}

fn text(value: &[u8], max: usize) -> Result<&str, ParseError> {
    if value.len() > max {
        return Err(ParseError::BadText);
    }
    std::str::from_utf8(value).map_err(|_| ParseError::BadText)
}

fn u32_of(typ: u16, value: &[u8]) -> Result<u32, ParseError> {
    let b: [u8; 4] = value.try_into().map_err(|_| ParseError::BadAttribute(typ))?;
    Ok(u32::from_be_bytes(b))
}

fn u64_of(typ: u16, value: &[u8]) -> Result<u64, ParseError> {
    let b: [u8; 8] = value.try_into().map_err(|_| ParseError::BadAttribute(typ))?;
    Ok(u64::from_be_bytes(b))
}

fn family_of(typ: u16, value: &[u8]) -> Result<Family, ParseError> {
    if value.len() != 4 {
        return Err(ParseError::BadAttribute(typ));
    }
    Family::from_code(value[0])
}

fn error_code_of(typ: u16, value: &[u8]) -> Result<(u16, &str), ParseError> {
    if value.len() < 4 {
        return Err(ParseError::BadAttribute(typ));
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(ParseError::BadAttribute(typ));
    }
    Ok((class * 100 + number, text(&value[4..], 763)?))
}

/// Decodes MAPPED-ADDRESS style values; `xor` is the XOR mask for the XOR-* variants.
fn address_of(typ: u16, value: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, ParseError> {
    if value.len() < 4 {
        return Err(ParseError::BadAttribute(typ));
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (Family::from_code(value[1])?, value.len()) {
        (Family::V4, 8) => {
            let mut b: [u8; 4] = value[4..8].try_into().expect("length checked: 8");
            if xor.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        (Family::V6, 20) => {
            let mut b: [u8; 16] = value[4..20].try_into().expect("length checked: 20");
            if let Some(tid) = xor {
                for (x, c) in b.iter_mut().zip(cookie.iter().chain(tid.iter())) {
                    *x ^= c;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(ParseError::BadAttribute(typ)),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Writes an address value into `out` (8 or 20 bytes); returns the length.
pub(crate) fn write_address(out: &mut [u8; 20], addr: SocketAddr, xor: Option<&TransactionId>) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[0] = 0;
    out[1] = Family::of(addr.ip()).code();
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            if xor.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            out[4..8].copy_from_slice(&b);
            8
        }
        IpAddr::V6(v6) => {
            let mut b = v6.octets();
            if let Some(tid) = xor {
                for (x, c) in b.iter_mut().zip(cookie.iter().chain(tid.iter())) {
                    *x ^= c;
                }
            }
            out[4..20].copy_from_slice(&b);
            20
        }
    }
}

impl<'a> Attribute<'a> {
    /// Decodes one attribute value. `tid` is the message's transaction id (for XOR addresses).
    pub fn decode(typ: u16, value: &'a [u8], tid: &TransactionId) -> Result<Attribute<'a>, ParseError> {
        use attr::*;
        let exact = |n: usize| if value.len() == n { Ok(()) } else { Err(ParseError::BadAttribute(typ)) };
        Ok(match typ {
            MAPPED_ADDRESS => Attribute::MappedAddress(address_of(typ, value, None)?),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(address_of(typ, value, Some(tid))?),
            ALTERNATE_SERVER => Attribute::AlternateServer(address_of(typ, value, None)?),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(address_of(typ, value, Some(tid))?),
            XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(address_of(typ, value, Some(tid))?),
            USERNAME => Attribute::Username(text(value, 512)?),
            USERHASH => {
                Attribute::UserHash(value.try_into().map_err(|_| ParseError::BadAttribute(typ))?)
            }
            MESSAGE_INTEGRITY => {
                Attribute::MessageIntegrity(value.try_into().map_err(|_| ParseError::BadAttribute(typ))?)
            }
            MESSAGE_INTEGRITY_SHA256 => {
                if value.len() < 16 || value.len() > 32 || value.len() % 4 != 0 {
                    return Err(ParseError::BadAttribute(typ));
                }
                Attribute::MessageIntegritySha256(value)
            }
            FINGERPRINT => Attribute::Fingerprint(u32_of(typ, value)?),
            ERROR_CODE => {
                let (code, reason) = error_code_of(typ, value)?;
                Attribute::ErrorCode { code, reason }
            }
            REALM => Attribute::Realm(text(value, 763)?),
            NONCE => Attribute::Nonce(text(value, 763)?),
            SOFTWARE => Attribute::Software(text(value, 763)?),
            ALTERNATE_DOMAIN => Attribute::AlternateDomain(text(value, 255)?),
            PASSWORD_ALGORITHMS => {
                // Walk the list once so users can trust its framing.
                let mut rest = value;
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(ParseError::BadAttribute(typ));
                    }
                    let plen = crate::message::padded(usize::from(u16::from_be_bytes([rest[2], rest[3]])));
                    rest = rest.get(4 + plen..).ok_or(ParseError::BadAttribute(typ))?;
                }
                Attribute::PasswordAlgorithms(value)
            }
            PASSWORD_ALGORITHM => {
                if value.len() < 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                let plen = usize::from(u16::from_be_bytes([value[2], value[3]]));
                let params = value.get(4..4 + plen).ok_or(ParseError::BadAttribute(typ))?;
                Attribute::PasswordAlgorithm { algorithm: u16::from_be_bytes([value[0], value[1]]), params }
            }
            UNKNOWN_ATTRIBUTES => {
                if value.len() % 2 != 0 {
                    return Err(ParseError::BadAttribute(typ));
                }
                Attribute::UnknownAttributes(value)
            }
            CHANNEL_NUMBER => {
                exact(4)?;
                Attribute::ChannelNumber(u16::from_be_bytes([value[0], value[1]]))
            }
            LIFETIME => Attribute::Lifetime(u32_of(typ, value)?),
            DATA => Attribute::Data(value),
            REQUESTED_ADDRESS_FAMILY => Attribute::RequestedAddressFamily(family_of(typ, value)?),
            ADDITIONAL_ADDRESS_FAMILY => Attribute::AdditionalAddressFamily(family_of(typ, value)?),
            EVEN_PORT => {
                exact(1)?;
                Attribute::EvenPort(value[0] & 0x80 != 0)
            }
            REQUESTED_TRANSPORT => {
                exact(4)?;
                Attribute::RequestedTransport(value[0])
            }
            DONT_FRAGMENT => {
                exact(0)?;
                Attribute::DontFragment
            }
            RESERVATION_TOKEN => {
                Attribute::ReservationToken(value.try_into().map_err(|_| ParseError::BadAttribute(typ))?)
            }
            ADDRESS_ERROR_CODE => {
                if value.len() < 4 {
                    return Err(ParseError::BadAttribute(typ));
                }
                let family = Family::from_code(value[0])?;
                let (code, reason) = error_code_of(typ, value)?;
                Attribute::AddressErrorCode { family, code, reason }
            }
            ICMP => {
                exact(8)?;
                Attribute::Icmp {
                    typ: value[2],
                    code: value[3],
                    data: u32::from_be_bytes([value[4], value[5], value[6], value[7]]),
                }
            }
            PRIORITY => Attribute::Priority(u32_of(typ, value)?),
            USE_CANDIDATE => {
                exact(0)?;
                Attribute::UseCandidate
            }
            ICE_CONTROLLED => Attribute::IceControlled(u64_of(typ, value)?),
            ICE_CONTROLLING => Attribute::IceControlling(u64_of(typ, value)?),
            _ => Attribute::Unknown { typ, value },
        })
    }

    /// The type code of this attribute.
    pub fn typ(&self) -> u16 {
        use attr::*;
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::UserHash(_) => USERHASH,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::ErrorCode { .. } => ERROR_CODE,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Attribute::PasswordAlgorithm { .. } => PASSWORD_ALGORITHM,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => SOFTWARE,
            Attribute::AlternateServer(_) => ALTERNATE_SERVER,
            Attribute::AlternateDomain(_) => ALTERNATE_DOMAIN,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::Data(_) => DATA,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode { .. } => ADDRESS_ERROR_CODE,
            Attribute::Icmp { .. } => ICMP,
            Attribute::Priority(_) => PRIORITY,
            Attribute::UseCandidate => USE_CANDIDATE,
            Attribute::IceControlled(_) => ICE_CONTROLLED,
            Attribute::IceControlling(_) => ICE_CONTROLLING,
            Attribute::Unknown { typ, .. } => *typ,
        }
    }
}
