//! ChannelData framing (RFC 8656 §12) and demultiplexing of what arrives on a TURN port.

use crate::error::{EncodeError, ParseError};
use crate::{HEADER_LEN, MAGIC_COOKIE};

/// What a packet on a STUN/TURN port is, from its first byte (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// A STUN message (first byte 0–3): parse it with [`crate::Message::parse`].
    Stun,
    /// A TURN ChannelData frame (first byte 64–127): parse it with [`ChannelData::parse`].
    ChannelData,
    /// Anything else (DTLS, RTP, noise): not for the STUN/TURN codec.
    Other,
}

/// Demultiplexes by the first byte: 0–3 STUN, 64–127 ChannelData (RFC 7983 assigns 64–79 to RFC 8656
/// channels; RFC 5766 clients such as coturn's may use channels up to 0x7FFE).
pub fn classify(buf: &[u8]) -> PacketKind {
    match buf.first() {
        Some(0..=3) => PacketKind::Stun,
        // RFC 8656 narrowed channels to 0x4000-0x4FFF; RFC 5766 clients (coturn's own among them) still use
        // 0x4000-0x7FFE, so the wider range is accepted.
        Some(0x40..=0x7F) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// A ChannelData message borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number, in [`CHANNEL_RANGE`] (checked by [`ChannelData::parse`]).
    pub channel: u16,
    /// The application data, without the 4-byte header or TCP padding.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message; bytes after the data (padding over TCP, or over UDP where RFC 8656
    /// §12.5 allows it) are ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < 4 {
            return Err(ParseError::TooShort);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !CHANNEL_RANGE.contains(&channel) {
            return Err(ParseError::NotChannelData);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf.get(4..4 + len).ok_or(ParseError::ChannelDataOverrun)?;
        Ok(ChannelData { channel, data })
    }
}

/// The channel numbers accepted: RFC 8656 §12 allows 0x4000–0x4FFF, but RFC 5766 clients (coturn's among
/// them) still bind up to 0x7FFE, so the older, wider range is kept for interop.
pub const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;

/// Writes the 4-byte ChannelData header at the start of `buf`, so a payload already sitting at `buf[4..]`
/// (received there directly) becomes a frame without a copy.
pub fn write_channel_data_header(
    buf: &mut [u8],
    channel: u16,
    len: u16,
) -> Result<(), EncodeError> {
    if !CHANNEL_RANGE.contains(&channel) {
        return Err(EncodeError::BadChannel);
    }
    let head = buf.get_mut(..4).ok_or(EncodeError::BufferTooSmall)?;
    head[0..2].copy_from_slice(&channel.to_be_bytes());
    head[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Completes a ChannelData frame around `payload_len` bytes already at `buf[4..]`: writes the header and,
/// when `pad` (TCP/TLS), zeroes the padding to 4 bytes. Returns the frame length to send.
pub fn frame_channel_data_in_place(
    buf: &mut [u8],
    channel: u16,
    payload_len: usize,
    pad: bool,
) -> Result<usize, EncodeError> {
    let len = u16::try_from(payload_len).map_err(|_| EncodeError::TooLong)?;
    let n = if pad {
        channel_data_padded_len(payload_len)
    } else {
        4 + payload_len
    };
    let frame = buf.get_mut(..n).ok_or(EncodeError::BufferTooSmall)?;
    write_channel_data_header(frame, channel, len)?;
    frame[4 + payload_len..].fill(0);
    Ok(n)
}

/// Writes a ChannelData frame carrying a copy of `payload`; returns the frame length.
pub fn write_channel_data(
    buf: &mut [u8],
    channel: u16,
    payload: &[u8],
    pad: bool,
) -> Result<usize, EncodeError> {
    let room = buf
        .get_mut(4..4 + payload.len())
        .ok_or(EncodeError::BufferTooSmall)?;
    room.copy_from_slice(payload);
    frame_channel_data_in_place(buf, channel, payload.len(), pad)
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
            if len & 3 != 0 {
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
