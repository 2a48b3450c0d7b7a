//! The error types of the codec. They live apart from the parser and the writer so that the attribute
//! codecs, the message parser and the writer can all name them without importing one another.

/// Why bytes are not a well-formed STUN message, ChannelData frame or attribute value.
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
    #[error("more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("attribute {0:#06x} has an invalid value")]
    BadAttribute(u16),
    #[error("unknown address family")]
    BadFamily,
    #[error("attribute {0:#06x} is not UTF-8")]
    BadText(u16),
    #[error("attribute {0:#06x} is longer than allowed")]
    TextTooLong(u16),
    #[error("not a ChannelData message (channel number outside 0x4000-0x7FFE)")]
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
    #[error("the attribute has the wrong length or position")]
    Malformed,
    #[error("the value does not match")]
    Mismatch,
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("the output buffer is too small")]
    BufferTooSmall,
    #[error("an attribute value or the message is longer than 65535 bytes")]
    TooLong,
    #[error("the error code must be between 300 and 699")]
    BadErrorCode,
    #[error("attribute {0:#06x} has a value a receiver would reject")]
    InvalidValue(u16),
    #[error("attribute {0:#06x} cannot follow MESSAGE-INTEGRITY or FINGERPRINT")]
    AfterIntegrity(u16),
    #[error("channel number outside 0x4000-0x7FFE")]
    BadChannel,
}
