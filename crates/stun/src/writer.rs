//! Encoding STUN messages into caller-owned buffers.

use std::net::SocketAddr;

use crate::attrs::{
    Data, EncodeAttr, FINGERPRINT_XOR, Family, PasswordAlgorithm, XorPeerAddress, attr,
};
use crate::error::EncodeError;
use crate::message::Message;
use crate::{
    Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, hmac_sha1, hmac_sha256, message_type,
    padded,
};

/// How far the message has progressed through its trailing attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Open,
    Integrity,
    IntegritySha256,
    Fingerprint,
}

/// Writes one message into `buf`. Attributes are appended in call order and the header length is kept
/// current, so the bytes are a valid message after every call. It refuses attributes that a receiver would
/// ignore because they follow MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    stage: Stage,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of `class` and `method` with transaction id `tid`: writes the 20-byte header into
    /// `buf`, which bounds the whole message. Fails with [`EncodeError::BufferTooSmall`] when `buf` is shorter
    /// than a header.
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        tid: &TransactionId,
    ) -> Result<Self, EncodeError> {
        let head = buf
            .get_mut(..HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        head[0..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        head[2..4].copy_from_slice(&[0, 0]);
        head[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        head[8..20].copy_from_slice(tid);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            stage: Stage::Open,
        })
    }

    /// A response to `request`: same method and transaction id. `buf` must not be the request's buffer
    /// (copy the transaction id first and use [`MessageWriter::new`] to answer in place).
    pub fn response(
        buf: &'b mut [u8],
        request: &Message<'_>,
        class: Class,
    ) -> Result<Self, EncodeError> {
        Self::new(buf, class, request.method(), request.transaction_id())
    }

    /// The transaction id written in the header.
    pub fn transaction_id(&self) -> TransactionId {
        self.buf[8..20]
            .try_into()
            .expect("new() wrote the 20-byte header")
    }

    fn check_order(&self, typ: u16) -> Result<(), EncodeError> {
        let allowed = match self.stage {
            Stage::Open => true,
            Stage::Integrity => typ == attr::MESSAGE_INTEGRITY_SHA256 || typ == attr::FINGERPRINT,
            Stage::IntegritySha256 => typ == attr::FINGERPRINT,
            Stage::Fingerprint => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(EncodeError::AfterIntegrity(typ))
        }
    }

    fn note(&mut self, typ: u16) {
        self.stage = match typ {
            attr::MESSAGE_INTEGRITY => Stage::Integrity,
            attr::MESSAGE_INTEGRITY_SHA256 => Stage::IntegritySha256,
            attr::FINGERPRINT => Stage::Fingerprint,
            _ => self.stage,
        };
    }

    /// Reserves room for an attribute with a `vlen`-byte value; returns the value's range in `buf`.
    fn begin(&mut self, typ: u16, vlen: usize) -> Result<std::ops::Range<usize>, EncodeError> {
        self.check_order(typ)?;
        let vlen16 = u16::try_from(vlen).map_err(|_| EncodeError::TooLong)?;
        let end = self.len + 4 + padded(vlen);
        if end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(EncodeError::TooLong);
        }
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&typ.to_be_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&vlen16.to_be_bytes());
        self.buf[at + 4 + vlen..end].fill(0);
        self.len = end;
        self.set_length(end - HEADER_LEN);
        self.note(typ);
        Ok(at + 4..at + 4 + vlen)
    }

    fn set_length(&mut self, len: usize) {
        // Callers checked len <= 65535.
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a typed attribute: an [`crate::Attribute`] or any per-attribute struct.
    pub fn add<A: EncodeAttr + ?Sized>(&mut self, attr: &A) -> Result<(), EncodeError> {
        let vlen = attr.value_len()?;
        let tid = self.transaction_id();
        let range = self.begin(attr.attr_type(), vlen)?;
        attr.write_value(&mut self.buf[range], &tid);
        Ok(())
    }

    /// Appends an attribute whose value is the concatenation of `parts` (padded with zeros).
    pub fn add_raw(&mut self, typ: u16, parts: &[&[u8]]) -> Result<(), EncodeError> {
        let vlen = parts.iter().map(|p| p.len()).sum();
        let range = self.begin(typ, vlen)?;
        let mut at = range.start;
        for p in parts {
            self.buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Ok(())
    }

    /// Appends an attribute whose value the caller fills in: returns the (unpadded) value bytes. Lets a
    /// payload be read or copied straight into place.
    pub fn add_with_len(&mut self, typ: u16, vlen: usize) -> Result<&mut [u8], EncodeError> {
        let range = self.begin(typ, vlen)?;
        Ok(&mut self.buf[range])
    }

    /// Appends PASSWORD-ALGORITHMS listing `algorithms`.
    pub fn add_password_algorithms(
        &mut self,
        algorithms: &[PasswordAlgorithm<'_>],
    ) -> Result<(), EncodeError> {
        self.add(&crate::attrs::PasswordAlgorithms::new(algorithms))
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 over the message so far, with the header length already
    /// counting this attribute (RFC 8489 §14.5).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.check_order(attr::MESSAGE_INTEGRITY)?;
        self.fits(24)?;
        self.set_length(self.len + 24 - HEADER_LEN);
        let mac = hmac_sha1(key, &[&self.buf[..self.len]]);
        self.add_raw(attr::MESSAGE_INTEGRITY, &[&mac])
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.check_order(attr::MESSAGE_INTEGRITY_SHA256)?;
        self.fits(36)?;
        self.set_length(self.len + 36 - HEADER_LEN);
        let mac = hmac_sha256(key, &[&self.buf[..self.len]]);
        self.add_raw(attr::MESSAGE_INTEGRITY_SHA256, &[&mac])
    }

    /// Appends FINGERPRINT (CRC-32 of the message so far XOR 0x5354554E); nothing may follow it.
    pub fn add_fingerprint(&mut self) -> Result<(), EncodeError> {
        self.check_order(attr::FINGERPRINT)?;
        self.fits(8)?;
        self.set_length(self.len + 8 - HEADER_LEN);
        let crc = crc32fast::hash(&self.buf[..self.len]) ^ FINGERPRINT_XOR;
        self.add_raw(attr::FINGERPRINT, &[&crc.to_be_bytes()])
    }

    /// Checks that an attribute of `n` bytes fits, before the header length is changed for it.
    fn fits(&self, n: usize) -> Result<(), EncodeError> {
        if self.len + n > self.buf.len() {
            Err(EncodeError::BufferTooSmall)
        } else if self.len + n - HEADER_LEN > usize::from(u16::MAX) {
            Err(EncodeError::TooLong)
        } else {
            Ok(())
        }
    }

    /// Bytes written so far (header included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no attribute has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// The message as written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Ends the message; returns its total length. The buffer is free for reuse afterwards.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// Where the payload of a Data indication starts for a peer of `family`: header, XOR-PEER-ADDRESS and the
/// DATA attribute header come first.
pub const fn data_indication_payload_offset(family: Family) -> usize {
    HEADER_LEN + 4 + family.address_value_len() + 4
}

/// Writes a Data indication (XOR-PEER-ADDRESS, DATA) carrying a copy of `payload`; returns its length.
pub fn write_data_indication(
    buf: &mut [u8],
    tid: &TransactionId,
    peer: SocketAddr,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    let mut w = MessageWriter::new(buf, Class::Indication, Method::DATA, tid)?;
    w.add(&XorPeerAddress(peer))?;
    w.add(&Data(payload))?;
    Ok(w.finish())
}

/// Turns `payload_len` bytes already sitting at [`data_indication_payload_offset`] of `buf` into a Data
/// indication by writing everything around them (headers in front, padding after); returns its length.
/// A driver can receive a peer datagram straight into place, so relaying costs no copy.
pub fn write_data_indication_in_place(
    buf: &mut [u8],
    tid: &TransactionId,
    peer: SocketAddr,
    payload_len: usize,
) -> Result<usize, EncodeError> {
    let offset = data_indication_payload_offset(Family::of(peer.ip()));
    let mut w = MessageWriter::new(buf, Class::Indication, Method::DATA, tid)?;
    w.add(&XorPeerAddress(peer))?;
    // begin() writes only the DATA header and the padding after the value, not the value itself.
    w.add_with_len(attr::DATA, payload_len)?;
    let n = w.finish();
    debug_assert_eq!(n, offset + padded(payload_len));
    Ok(n)
}
