//! Zero-copy parsing and verification of STUN messages.

use crate::attrs::{Attribute, DecodeAttr, FINGERPRINT_XOR, attr};
use crate::error::{IntegrityError, ParseError};
use crate::{
    Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, hmac_sha1, hmac_sha256, padded,
    split_type,
};

/// Limits applied by [`Message::parse_with`]. Attribute lookups are linear, so the count bounds the work a
/// hostile message can cause per lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Most attributes a message may carry; more fail with [`crate::ParseError::TooManyAttributes`].
    pub max_attributes: usize,
}

impl ParseLimits {
    /// Real STUN/TURN/ICE messages carry about a dozen attributes.
    pub const DEFAULT: ParseLimits = ParseLimits { max_attributes: 64 };
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits::DEFAULT
    }
}

/// One attribute as it sits in the message: type, value (without padding) and the offset of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type code (see [`crate::attr`]).
    pub typ: u16,
    /// The value as sent, without the padding to 4 bytes.
    pub value: &'a [u8],
    /// Byte offset of the attribute header from the start of the message.
    pub offset: usize,
}

/// A validated STUN message borrowed from the receive buffer.
///
/// Parsing records where the integrity attributes sit, so lookups and verification apply the ordering
/// rules of RFC 8489 §14.5–14.7 without rescanning: attributes after MESSAGE-INTEGRITY are ignored except
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, those after MESSAGE-INTEGRITY-SHA256 except FINGERPRINT, and
/// nothing after FINGERPRINT counts.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    class: Class,
    method: Method,
    /// Attributes in `HEADER_LEN..covered_end` are the ones that count (before any integrity attribute).
    covered_end: usize,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
    /// Whether FINGERPRINT is the very last attribute.
    fingerprint_last: bool,
}

impl<'a> Message<'a> {
    /// Checks the header and walks every attribute once, so later lookups cannot go out of bounds.
    /// `buf` must hold exactly one message (trailing bytes are refused: use [`crate::stream_frame_len`] on
    /// streams).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_with(buf, &ParseLimits::DEFAULT)
    }

    /// [`Message::parse`] with explicit limits.
    pub fn parse_with(buf: &'a [u8], limits: &ParseLimits) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        if buf[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadCookie);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len & 3 != 0 {
            return Err(ParseError::UnalignedLength);
        }
        if buf.len() != HEADER_LEN + len {
            return Err(ParseError::LengthMismatch);
        }
        let (class, method) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut msg = Message {
            buf,
            class,
            method,
            covered_end: buf.len(),
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
            fingerprint_last: false,
        };
        let mut offset = HEADER_LEN;
        let mut count = 0;
        while offset < buf.len() {
            count += 1;
            if count > limits.max_attributes {
                return Err(ParseError::TooManyAttributes(limits.max_attributes));
            }
            let head = buf
                .get(offset..offset + 4)
                .ok_or(ParseError::AttributeOverrun)?;
            let typ = u16::from_be_bytes([head[0], head[1]]);
            let alen = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let end = offset + 4 + padded(alen);
            if end > buf.len() {
                return Err(ParseError::AttributeOverrun);
            }
            let at = Some(offset);
            if msg.fingerprint.is_none() {
                match typ {
                    attr::MESSAGE_INTEGRITY
                        if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                    {
                        msg.integrity = at;
                        msg.covered_end = msg.covered_end.min(offset);
                    }
                    attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                        msg.integrity_sha256 = at;
                        msg.covered_end = msg.covered_end.min(offset);
                    }
                    attr::FINGERPRINT => {
                        msg.fingerprint = at;
                        msg.fingerprint_last = end == buf.len();
                        msg.covered_end = msg.covered_end.min(offset);
                    }
                    _ => {}
                }
            }
            offset = end;
        }
        Ok(msg)
    }

    /// The class from the message type field.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The method from the message type field (any 12-bit value, not only the known ones).
    pub fn method(&self) -> Method {
        self.method
    }

    /// The 96-bit transaction id that a response must echo.
    pub fn transaction_id(&self) -> &'a TransactionId {
        self.buf[8..20]
            .try_into()
            .expect("parse checked the 20-byte header")
    }

    /// The whole message, as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Every attribute on the wire, in order, including those after MESSAGE-INTEGRITY(-SHA256) that RFC 8489
    /// §14.5 says to ignore. For diagnostics and tests only: protocol logic uses [`Message::attributes`].
    pub fn wire_attributes(&self) -> AttributeIter<'a> {
        AttributeIter {
            buf: self.buf,
            offset: HEADER_LEN,
            end: self.buf.len(),
        }
    }

    /// The attributes that count, in order: those before the first integrity or fingerprint attribute.
    /// Everything after MESSAGE-INTEGRITY(-SHA256) except FINGERPRINT is ignored (RFC 8489 §14.5), for every
    /// method, here once: a caller iterating attributes cannot see one appended after the MAC.
    pub fn attributes(&self) -> AttributeIter<'a> {
        AttributeIter {
            buf: self.buf,
            offset: HEADER_LEN,
            end: self.covered_end,
        }
    }

    fn at(&self, offset: Option<usize>) -> Option<RawAttribute<'a>> {
        let offset = offset?;
        AttributeIter {
            buf: self.buf,
            offset,
            end: self.buf.len(),
        }
        .next()
    }

    /// The first attribute of this type that counts under the integrity rules (see [`Message`]).
    pub fn get(&self, typ: u16) -> Option<RawAttribute<'a>> {
        match typ {
            attr::MESSAGE_INTEGRITY => self.at(self.integrity),
            attr::MESSAGE_INTEGRITY_SHA256 => self.at(self.integrity_sha256),
            attr::FINGERPRINT => self.at(self.fingerprint),
            _ => self.attributes().find(|a| a.typ == typ),
        }
    }

    /// Typed lookup, e.g. `msg.decode::<Username>()`: `None` when absent, `Some(Err)` when malformed.
    pub fn decode<A: DecodeAttr<'a>>(&self) -> Option<Result<A, ParseError>> {
        self.get(A::TYPE)
            .map(|a| A::decode_value(a.value, self.transaction_id()))
    }

    /// Lookup by type code into the [`Attribute`] enum.
    pub fn decode_any(&self, typ: u16) -> Option<Result<Attribute<'a>, ParseError>> {
        self.get(typ)
            .map(|a| Attribute::decode(a.typ, a.value, self.transaction_id()))
    }

    /// Writes the comprehension-required types (0x0000–0x7FFF) that `known` rejects into `out`, without
    /// duplicates, for a 420 response's UNKNOWN-ATTRIBUTES; returns how many were written (at most
    /// `out.len()`). Only attributes that count are considered.
    pub fn unknown_comprehension_required(
        &self,
        known: impl Fn(u16) -> bool,
        out: &mut [u16],
    ) -> usize {
        let mut n = 0;
        for a in self.attributes() {
            if n == out.len() {
                break;
            }
            if attr::is_comprehension_required(a.typ) && !known(a.typ) && !out[..n].contains(&a.typ)
            {
                out[n] = a.typ;
                n += 1;
            }
        }
        n
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key` in constant time. Short-term credentials use the
    /// password as key; long-term ones [`crate::long_term_key_md5`].
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let a = self
            .get(attr::MESSAGE_INTEGRITY)
            .ok_or(IntegrityError::Missing)?;
        if a.value.len() != 20 {
            return Err(IntegrityError::Malformed);
        }
        let (head, len, rest) = self.integrity_input(a.offset, 24);
        let mac = hmac_sha1(key, &[head, &len, rest]);
        if ct_eq(&mac, a.value) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key` (full 32-byte value, or a truncation to 16–28 bytes).
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let a = self
            .get(attr::MESSAGE_INTEGRITY_SHA256)
            .ok_or(IntegrityError::Missing)?;
        let n = a.value.len();
        if !(16..=32).contains(&n) || n & 3 != 0 {
            return Err(IntegrityError::Malformed);
        }
        let (head, len, rest) = self.integrity_input(a.offset, 4 + n);
        let mac = hmac_sha256(key, &[head, &len, rest]);
        if ct_eq(&mac[..n], a.value) {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// Whether the message carries FINGERPRINT (a response should then carry one too).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// Checks FINGERPRINT, which must be the last attribute.
    pub fn verify_fingerprint(&self) -> Result<(), IntegrityError> {
        let a = self.get(attr::FINGERPRINT).ok_or(IntegrityError::Missing)?;
        if !self.fingerprint_last {
            return Err(IntegrityError::Malformed);
        }
        let value: [u8; 4] = a.value.try_into().map_err(|_| IntegrityError::Malformed)?;
        let crc = crc32fast::hash(&self.buf[..a.offset]) ^ FINGERPRINT_XOR;
        if crc.to_be_bytes() == value {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }

    /// The HMAC input for an integrity attribute at `offset` of `attr_size` bytes: the message up to it, with
    /// the header length as if the message ended right after the attribute (RFC 8489 §14.5).
    fn integrity_input(&self, offset: usize, attr_size: usize) -> (&'a [u8], [u8; 2], &'a [u8]) {
        // offset + attr_size <= buf.len() <= 20 + 65535 (checked by parse), so the length fits 16 bits.
        let len = u16::try_from(offset + attr_size - HEADER_LEN).unwrap_or(u16::MAX);
        (&self.buf[0..2], len.to_be_bytes(), &self.buf[4..offset])
    }
}

/// Iterator over the attributes of a parsed message.
#[derive(Clone, Debug)]
pub struct AttributeIter<'a> {
    buf: &'a [u8],
    offset: usize,
    end: usize,
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        if self.offset >= self.end {
            return None;
        }
        let header = self.buf.get(self.offset..self.offset + 4)?;
        let typ = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = self.buf.get(self.offset + 4..self.offset + 4 + len)?;
        let item = RawAttribute {
            typ,
            value,
            offset: self.offset,
        };
        self.offset += 4 + padded(len);
        Some(item)
    }
}

/// Constant-time comparison of MACs (their length is public).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}
