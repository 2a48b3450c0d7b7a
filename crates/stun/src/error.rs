//! The error types of the codec. They live apart from the parser and the writer so that the attribute
//! codecs, the message parser and the writer can all name them without importing one another.

/// Why bytes are not a well-formed STUN message, ChannelData frame or attribute value.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    #[error("shorter than a STUN header")]
    /// Fewer than the 20 bytes of a header (or the 4 of a ChannelData header).
    TooShort,
    #[error("the two most significant bits are not zero")]
    /// The first two bits are not `00`: another protocol sharing the port (see [`crate::classify`]).
    NotStun,
    #[error("wrong magic cookie")]
    /// The header lacks [`crate::MAGIC_COOKIE`]: an RFC 3489 peer or not STUN at all.
    BadCookie,
    #[error("message length is not a multiple of 4")]
    /// The header length is not a multiple of 4, which RFC 8489 §5 requires.
    UnalignedLength,
    #[error("message length does not match the bytes received")]
    /// The header length plus 20 is not the number of bytes given (truncated, or trailing bytes).
    LengthMismatch,
    #[error("an attribute runs past the end of the message")]
    /// An attribute's length runs past the message length.
    AttributeOverrun,
    #[error("more than {0} attributes")]
    /// More attributes than [`crate::ParseLimits::max_attributes`] (the limit is the value).
    TooManyAttributes(usize),
    #[error("attribute {0:#06x} has an invalid value")]
    /// The attribute of this type has a value of the wrong length or content.
    BadAttribute(u16),
    #[error("unknown address family")]
    /// An address family byte other than 0x01 (IPv4) or 0x02 (IPv6).
    BadFamily,
    #[error("attribute {0:#06x} is not UTF-8")]
    /// The text attribute of this type is not valid UTF-8.
    BadText(u16),
    #[error("attribute {0:#06x} is longer than allowed")]
    /// The text attribute of this type exceeds its receive bound in [`crate::limits`].
    TextTooLong(u16),
    #[error("not a ChannelData message (channel number outside 0x4000-0x7FFE)")]
    /// A ChannelData header whose channel number is outside [`crate::CHANNEL_RANGE`].
    NotChannelData,
    #[error("ChannelData length runs past the end")]
    /// The ChannelData header's length runs past the bytes given.
    ChannelDataOverrun,
}

/// Why a MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT check failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntegrityError {
    #[error("the attribute is missing")]
    /// The message carries no such attribute (within the part that counts).
    Missing,
    #[error("the attribute has the wrong length or position")]
    /// The attribute has the wrong length, or sits where RFC 8489 does not allow it (FINGERPRINT not last).
    Malformed,
    #[error("the value does not match")]
    /// The HMAC or CRC does not match: wrong key, or the message was altered.
    Mismatch,
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("the output buffer is too small")]
    /// The caller-owned output buffer cannot hold the header or the next attribute.
    BufferTooSmall,
    #[error("an attribute value or the message is longer than 65535 bytes")]
    /// A value or the whole message would not fit the 16-bit length fields.
    TooLong,
    #[error("the error code must be between 300 and 699")]
    /// An ERROR-CODE outside 300–699, the range the wire format can carry.
    BadErrorCode,
    #[error("attribute {0:#06x} has a value a receiver would reject")]
    /// The attribute of this type is over its send bound in [`crate::limits`] or otherwise invalid.
    InvalidValue(u16),
    #[error("attribute {0:#06x} cannot follow MESSAGE-INTEGRITY or FINGERPRINT")]
    /// This attribute type was added after MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT, where receivers
    /// ignore it.
    AfterIntegrity(u16),
    #[error("channel number outside 0x4000-0x7FFE")]
    /// A channel number outside [`crate::CHANNEL_RANGE`].
    BadChannel,
}
