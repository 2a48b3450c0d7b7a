//! Encoding STUN messages into caller-owned buffers.

use crate::attrs::{Attribute, FINGERPRINT_XOR, Family, attr, write_address};
use crate::{Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, hmac_sha1, hmac_sha256, message_type};

/// Why a message could not be written.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("the output buffer is too small")]
    BufferTooSmall,
    #[error("an attribute value is longer than 65535 bytes or the message than 65535")]
    TooLong,
    #[error("the error code must be between 300 and 699")]
    BadErrorCode,
}

/// Writes one message into `buf`. Attributes are appended in call order; the header length is kept current.
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> MessageWriter<'b> {
    pub fn new(buf: &'b mut [u8], class: Class, method: Method, tid: &TransactionId) -> Result<Self, EncodeError> {
        if buf.len() < HEADER_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        buf[0..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(tid);
        Ok(MessageWriter { buf, len: HEADER_LEN })
    }

    fn tid(&self) -> TransactionId {
        self.buf[8..20].try_into().expect("the header was written in new()")
    }

    /// Appends a raw attribute (value padded with zeros to 4 bytes).
    pub fn add_raw(&mut self, typ: u16, parts: &[&[u8]]) -> Result<(), EncodeError> {
        let vlen: usize = parts.iter().map(|p| p.len()).sum();
        let vlen16 = u16::try_from(vlen).map_err(|_| EncodeError::TooLong)?;
        let total = 4 + ((vlen + 3) & !3);
        let end = self.len + total;
        if end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(EncodeError::TooLong);
        }
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        let b = &mut self.buf[self.len..end];
        b[0..2].copy_from_slice(&typ.to_be_bytes());
        b[2..4].copy_from_slice(&vlen16.to_be_bytes());
        let mut at = 4;
        for p in parts {
            b[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        b[at..].fill(0);
        self.len = end;
        self.set_length(self.len - HEADER_LEN);
        Ok(())
    }

    fn set_length(&mut self, len: usize) {
        // Bounded by add_raw's TooLong check.
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a typed attribute.
    pub fn add(&mut self, a: &Attribute<'_>) -> Result<(), EncodeError> {
        let typ = a.typ();
        let mut scratch = [0u8; 20];
        match *a {
            Attribute::MappedAddress(addr) | Attribute::AlternateServer(addr) => {
                let n = write_address(&mut scratch, addr, None);
                self.add_raw(typ, &[&scratch[..n]])
            }
            Attribute::XorMappedAddress(addr) | Attribute::XorPeerAddress(addr) | Attribute::XorRelayedAddress(addr) => {
                let tid = self.tid();
                let n = write_address(&mut scratch, addr, Some(&tid));
                self.add_raw(typ, &[&scratch[..n]])
            }
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s)
            | Attribute::AlternateDomain(s) => self.add_raw(typ, &[s.as_bytes()]),
            Attribute::UserHash(h) => self.add_raw(typ, &[h]),
            Attribute::MessageIntegrity(m) => self.add_raw(typ, &[m]),
            Attribute::MessageIntegritySha256(m) => self.add_raw(typ, &[m]),
            Attribute::Fingerprint(v) => self.add_raw(typ, &[&v.to_be_bytes()]),
            Attribute::ErrorCode { code, reason } => {
                let head = error_head(code)?;
                self.add_raw(typ, &[&head, reason.as_bytes()])
            }
            Attribute::AddressErrorCode { family, code, reason } => {
                let mut head = error_head(code)?;
                head[0] = family_code(family);
                self.add_raw(typ, &[&head, reason.as_bytes()])
            }
            Attribute::PasswordAlgorithms(raw) | Attribute::UnknownAttributes(raw) | Attribute::Data(raw) => {
                self.add_raw(typ, &[raw])
            }
            Attribute::PasswordAlgorithm { algorithm, params } => {
                let plen = u16::try_from(params.len()).map_err(|_| EncodeError::TooLong)?;
                let mut head = [0u8; 4];
                head[0..2].copy_from_slice(&algorithm.to_be_bytes());
                head[2..4].copy_from_slice(&plen.to_be_bytes());
                let pad = [0u8; 3];
                self.add_raw(typ, &[&head, params, &pad[..(4 - params.len() % 4) % 4]])
            }
            Attribute::ChannelNumber(n) => {
                let v = n.to_be_bytes();
                self.add_raw(typ, &[&[v[0], v[1], 0, 0]])
            }
            Attribute::Lifetime(v) | Attribute::Priority(v) => self.add_raw(typ, &[&v.to_be_bytes()]),
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                self.add_raw(typ, &[&[family_code(f), 0, 0, 0]])
            }
            Attribute::EvenPort(r) => self.add_raw(typ, &[&[if r { 0x80 } else { 0 }]]),
            Attribute::RequestedTransport(p) => self.add_raw(typ, &[&[p, 0, 0, 0]]),
            Attribute::DontFragment | Attribute::UseCandidate => self.add_raw(typ, &[]),
            Attribute::ReservationToken(t) => self.add_raw(typ, &[&t]),
            Attribute::Icmp { typ: t, code, data } => {
                let d = data.to_be_bytes();
                self.add_raw(typ, &[&[0, 0, t, code], &d])
            }
            Attribute::IceControlled(v) | Attribute::IceControlling(v) => self.add_raw(typ, &[&v.to_be_bytes()]),
            Attribute::Unknown { value, .. } => self.add_raw(typ, &[value]),
        }
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 over everything so far, length counting the attribute).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.reserve(24)?;
        self.set_length(self.len + 24 - HEADER_LEN);
        let mac = hmac_sha1(key, &[&self.buf[..self.len]]);
        self.add_raw(attr::MESSAGE_INTEGRITY, &[&mac])
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.reserve(36)?;
        self.set_length(self.len + 36 - HEADER_LEN);
        let mac = hmac_sha256(key, &[&self.buf[..self.len]]);
        self.add_raw(attr::MESSAGE_INTEGRITY_SHA256, &[&mac])
    }

    /// Appends FINGERPRINT; it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), EncodeError> {
        self.reserve(8)?;
        self.set_length(self.len + 8 - HEADER_LEN);
        let crc = crc32fast::hash(&self.buf[..self.len]) ^ FINGERPRINT_XOR;
        self.add_raw(attr::FINGERPRINT, &[&crc.to_be_bytes()])
    }

    fn reserve(&self, n: usize) -> Result<(), EncodeError> {
        if self.len + n > self.buf.len() { Err(EncodeError::BufferTooSmall) } else { Ok(()) }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Ends the message; returns its total length.
    pub fn finish(self) -> usize {
        self.len
    }
}

fn family_code(f: Family) -> u8 {
    match f {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

fn error_head(code: u16) -> Result<[u8; 4], EncodeError> {
    if !(300..700).contains(&code) {
        return Err(EncodeError::BadErrorCode);
    }
    Ok([0, 0, (code / 100) as u8, (code % 100) as u8])
}
