//! Zero-copy parsing and verification of STUN messages.

use subtle_free::ct_eq;

use crate::attrs::{Attribute, attr};
use crate::{Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, hmac_sha1, hmac_sha256, split_type};

/// Why bytes are not a well-formed STUN message (or attribute).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("the two most significant bits are not zero")]
    NotStun,
    #[error("wrong magic cookie")]
    BadCookie,
    #[error("message length is not a multiple of 4")]
    UnalignedLength,
    #[error("message length does not match the bytes received")]
    LengthMismatch,
    #[error("an attribute runs past the end of the message")]
    AttributeOverrun,
    #[error("attribute {0:#06x} has an invalid value")]
    BadAttribute(u16),
    #[error("unknown address family")]
    BadFamily,
    #[error("text attribute is not UTF-8 or too long")]
    BadText,
    #[error("not a ChannelData message")]
    NotChannelData,
    #[error("ChannelData length runs past the end")]
    ChannelDataOverrun,
}

/// Why a MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT check failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntegrityError {
    #[error("the attribute is missing")]
    Missing,
    #[error("the attribute has the wrong length")]
    Malformed,
    #[error("the value does not match")]
    Mismatch,
}

/// One attribute as it sits in the message: type, value (without padding) and the offset of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub typ: u16,
    pub value: &'a [u8],
    pub offset: usize,
}

/// A validated STUN message borrowed from the receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    class: Class,
    method: Method,
}

impl<'a> Message<'a> {
    /// Checks the header and walks every attribute once, so later lookups cannot go out of bounds.
    /// `buf` must hold exactly one message (trailing bytes are refused: use [`crate::stream_frame_len`] on
    /// streams).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        if buf[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadCookie);
        }
        if len % 4 != 0 {
            return Err(ParseError::UnalignedLength);
        }
        if buf.len() != HEADER_LEN + len {
            return Err(ParseError::LengthMismatch);
        }
        let mut offset = HEADER_LEN;
        while offset < buf.len() {
            if offset + 4 > buf.len() {
                return Err(ParseError::AttributeOverrun);
            }
            let alen = usize::from(u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]));
            let end = offset + 4 + padded(alen);
            if end > buf.len() {
                return Err(ParseError::AttributeOverrun);
            }
            offset = end;
        }
        let (class, method) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
        Ok(Message { buf, class, method })
    }

    pub fn class(&self) -> Class {
        self.class
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn transaction_id(&self) -> &'a TransactionId {
        self.buf[8..20].try_into().expect("parse checked the 20-byte header")
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Every attribute in order, including those after MESSAGE-INTEGRITY.
    pub fn attributes(&self) -> AttributeIter<'a> {
        AttributeIter { buf: self.buf, offset: HEADER_LEN }
    }

    /// The first attribute of this type that is covered by the integrity check: attributes after
    /// MESSAGE-INTEGRITY are ignored (RFC 8489 §14.5), except the integrity and fingerprint attributes.
    pub fn get(&self, typ: u16) -> Option<RawAttribute<'a>> {
        let mut after_integrity = false;
        for a in self.attributes() {
            if a.typ == typ && (!after_integrity || is_trailer(typ)) {
                return Some(a);
            }
            if a.typ == attr::MESSAGE_INTEGRITY || a.typ == attr::MESSAGE_INTEGRITY_SHA256 {
                after_integrity = true;
            }
        }
        None
    }

    /// Typed lookup: `None` when absent, `Some(Err)` when present but malformed.
    pub fn decode(&self, typ: u16) -> Option<Result<Attribute<'a>, ParseError>> {
        self.get(typ).map(|a| Attribute::decode(a.typ, a.value, self.transaction_id()))
    }

    /// Writes the comprehension-required attribute types (0x0000–0x7FFF) that `known` rejects into `out`,
    /// for a 420 answer's UNKNOWN-ATTRIBUTES; returns how many were written (at most `out.len()`).
    pub fn unknown_comprehension_required(&self, known: impl Fn(u16) -> bool, out: &mut [u16]) -> usize {
        let mut n = 0;
        for a in self.attributes() {
            if a.typ < 0x8000 && !known(a.typ) && n < out.len() && !out[..n].contains(&a.typ) {
                out[n] = a.typ;
                n += 1;
            }
        }
        n
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let a = self.get(attr::MESSAGE_INTEGRITY).ok_or(IntegrityError::Missing)?;
        if a.value.len() != 20 {
            return Err(IntegrityError::Malformed);
        }
        let (head, len, rest) = self.integrity_parts(a.offset, 24);
        let mac = hmac_sha1(key, &[head, &len, rest]);
        if ct_eq(&mac, a.value) { Ok(()) } else { Err(IntegrityError::Mismatch) }
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key` (full 32-byte value, or a truncation of at least 16 bytes).
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let a = self.get(attr::MESSAGE_INTEGRITY_SHA256).ok_or(IntegrityError::Missing)?;
        if a.value.len() < 16 || a.value.len() > 32 || a.value.len() % 4 != 0 {
            return Err(IntegrityError::Malformed);
        }
        let (head, len, rest) = self.integrity_parts(a.offset, 4 + a.value.len());
        let mac = hmac_sha256(key, &[head, &len, rest]);
        if ct_eq(&mac[..a.value.len()], a.value) { Ok(()) } else { Err(IntegrityError::Mismatch) }
    }

    pub fn has_fingerprint(&self) -> bool {
        self.attributes().any(|a| a.typ == attr::FINGERPRINT)
    }

    /// Checks FINGERPRINT, which must be the last attribute.
    pub fn verify_fingerprint(&self) -> Result<(), IntegrityError> {
        let a = self.attributes().last().filter(|a| a.typ == attr::FINGERPRINT).ok_or(IntegrityError::Missing)?;
        let value: [u8; 4] = a.value.try_into().map_err(|_| IntegrityError::Malformed)?;
        let crc = crc32fast::hash(&self.buf[..a.offset]) ^ crate::attrs::FINGERPRINT_XOR;
        if crc.to_be_bytes() == value { Ok(()) } else { Err(IntegrityError::Mismatch) }
    }

    /// The bytes an integrity attribute at `offset` covers, split around the header length field, and the
    /// length value to use instead: the message as if it ended right after that attribute (`attr_size` bytes).
    fn integrity_parts(&self, offset: usize, attr_size: usize) -> (&'a [u8], [u8; 2], &'a [u8]) {
        // offset + attr_size <= buf.len() <= 20 + 65535 was checked by parse, so this fits in u16.
        let len = u16::try_from(offset + attr_size - HEADER_LEN).unwrap_or(u16::MAX);
        (&self.buf[0..2], len.to_be_bytes(), &self.buf[4..offset])
    }
}

fn is_trailer(typ: u16) -> bool {
    typ == attr::MESSAGE_INTEGRITY_SHA256 || typ == attr::FINGERPRINT
}

pub(crate) fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Iterator over the attributes of a parsed message.
#[derive(Clone, Debug)]
pub struct AttributeIter<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        let header = self.buf.get(self.offset..self.offset + 4)?;
        let typ = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = self.buf.get(self.offset + 4..self.offset + 4 + len)?;
        let item = RawAttribute { typ, value, offset: self.offset };
        self.offset += 4 + padded(len);
        Some(item)
    }
}

mod subtle_free {
    /// Constant-time comparison of equal-length MACs (length itself is public).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}
