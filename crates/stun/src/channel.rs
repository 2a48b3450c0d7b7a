//! ChannelData framing (RFC 8656 §12) and demultiplexing of what arrives on a TURN port.

use crate::message::ParseError;
use crate::writer::EncodeError;
use crate::{HEADER_LEN, MAGIC_COOKIE};

/// What a packet on a STUN/TURN port is, from its first byte (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    ChannelData,
    Other,
}

pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(0..=3) => PacketKind::Stun,
        Some(0x40..=0x4F) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// A ChannelData message borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message; padding after the data (TCP) is allowed and ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < 4 {
            return Err(ParseError::TooShort);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !(0x4000..=0x4FFF).contains(&channel) {
            return Err(ParseError::NotChannelData);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf.get(4..4 + len).ok_or(ParseError::ChannelDataOverrun)?;
        Ok(ChannelData { channel, data })
    }
}

/// Writes the 4-byte ChannelData header at the start of `buf`, so a payload already sitting at `buf[4..]`
/// (received there directly) becomes a frame without a copy.
pub fn write_channel_data_header(buf: &mut [u8], channel: u16, len: u16) -> Result<(), EncodeError> {
    let head = buf.get_mut(..4).ok_or(EncodeError::BufferTooSmall)?;
    head[0..2].copy_from_slice(&channel.to_be_bytes());
    head[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Size of a ChannelData frame with this payload over TCP/TLS, where frames are padded to 4 bytes.
pub fn channel_data_padded_len(payload_len: usize) -> usize {
    4 + ((payload_len + 3) & !3)
}

/// Framing over a byte stream (TCP/TLS): the size of the frame at the start of `buf`, or `None` when more
/// bytes are needed to tell. Errors when the bytes can be neither STUN nor ChannelData.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    match classify(buf) {
        PacketKind::Stun => {
            if buf.len() < 8 {
                return Ok(None);
            }
            if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
                return Err(ParseError::BadCookie);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len % 4 != 0 {
                return Err(ParseError::UnalignedLength);
            }
            Ok(Some(HEADER_LEN + len))
        }
        PacketKind::ChannelData => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            Ok(Some(channel_data_padded_len(len)))
        }
        PacketKind::Other if buf.is_empty() => Ok(None),
        PacketKind::Other => Err(ParseError::NotStun),
    }
}
