//! Media files without a codec library: reading VP8 IVF and Ogg/Opus into frames and packets (what the native
//! peer sends), writing IVF and Ogg/Opus from what arrives (what `--record` keeps). Pure functions over bytes.

use std::time::Duration;

use crate::PeerError;

/// One VP8 frame of a clip: its bytes, how long it shows, whether it is a keyframe.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// The VP8 frame as it sits in the IVF file.
    pub data: Vec<u8>,
    /// How long it shows before the next frame.
    pub duration: Duration,
    /// Decodable on its own (sent first, and again on a keyframe request).
    pub keyframe: bool,
}

/// One Opus packet of a clip and its duration in 48 kHz samples.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    /// The Opus packet.
    pub data: Vec<u8>,
    /// Its duration in 48 kHz samples (960 for 20 ms).
    pub samples: u32,
}

/// What the native peer sends: VP8 frames and Opus packets, looped (either may be empty: not sent).
#[derive(Debug, Clone, Default)]
pub struct Clip {
    /// VP8 frames in display order.
    pub video: Vec<VideoFrame>,
    /// Opus packets in order.
    pub audio: Vec<AudioPacket>,
    /// The same video at other bitrates (further `--video` files). With any, the engine estimates each peer's
    /// bandwidth and sends the highest encoding that fits, switching at keyframes ([`crate::ladder`]).
    pub video_alternatives: Vec<Vec<VideoFrame>>,
}

/// The embedded test clip (made by `crates/peer/media/make-clip.sh` from ffmpeg's test sources).
pub const TEST_CLIP_IVF: &[u8] = include_bytes!("../media/clip.ivf");
/// The audio of the embedded test clip, Ogg/Opus (the video is [`TEST_CLIP_IVF`]).
pub const TEST_CLIP_OGG: &[u8] = include_bytes!("../media/clip.ogg");

impl Clip {
    /// The embedded test clip: a moving pattern with a frame counter and a tone.
    pub fn test_clip() -> Result<Clip, PeerError> {
        Ok(Clip {
            video: read_ivf(TEST_CLIP_IVF)?,
            audio: read_ogg_opus(TEST_CLIP_OGG)?,
            video_alternatives: Vec::new(),
        })
    }
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64le(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn bad(what: &str) -> PeerError {
    PeerError::BadMedia(what.to_string())
}

/// Reads a VP8 IVF file into frames. Errors: not IVF, not VP8, no frames, truncated.
pub fn read_ivf(b: &[u8]) -> Result<Vec<VideoFrame>, PeerError> {
    if b.get(0..4) != Some(b"DKIF") {
        return Err(bad("not an IVF file (no DKIF signature)"));
    }
    let fourcc = b.get(8..12).ok_or_else(|| bad("IVF header is truncated"))?;
    if fourcc != b"VP80" {
        return Err(bad(&format!(
            "the IVF file is {}, not VP8 (VP80)",
            String::from_utf8_lossy(fourcc)
        )));
    }
    let header_len = usize::from(u16le(b, 6).ok_or_else(|| bad("IVF header is truncated"))?);
    let rate = u32le(b, 16).ok_or_else(|| bad("IVF header is truncated"))?;
    let scale = u32le(b, 20).ok_or_else(|| bad("IVF header is truncated"))?;
    if rate == 0 || scale == 0 {
        return Err(bad("IVF time base is zero"));
    }
    let mut at = header_len.max(32);
    let mut raw: Vec<(u64, Vec<u8>)> = Vec::new();
    while at + 12 <= b.len() {
        let size = u32le(b, at).map(|s| s as usize).unwrap_or(0);
        let pts = u64le(b, at + 4).unwrap_or(0);
        let data = b
            .get(at + 12..at + 12 + size)
            .ok_or_else(|| bad("IVF frame is truncated"))?;
        if !data.is_empty() {
            raw.push((pts, data.to_vec()));
        }
        at += 12 + size;
    }
    if raw.is_empty() {
        return Err(bad("the IVF file has no frames"));
    }
    let tick = Duration::from_secs_f64(f64::from(scale) / f64::from(rate));
    let mut frames = Vec::with_capacity(raw.len());
    for i in 0..raw.len() {
        let ticks = match raw.get(i + 1) {
            Some((next, _)) if *next > raw[i].0 => next - raw[i].0,
            _ => 1,
        };
        let duration = tick
            .saturating_mul(u32::try_from(ticks).unwrap_or(1))
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
        let data = std::mem::take(&mut raw[i].1);
        let keyframe = data.first().is_some_and(|b| b & 1 == 0);
        frames.push(VideoFrame {
            data,
            duration,
            keyframe,
        });
    }
    if !frames[0].keyframe {
        return Err(bad("the IVF file does not start with a keyframe"));
    }
    Ok(frames)
}

/// Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1); None when malformed.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = per_frame * frames;
    (samples > 0 && samples <= 5760).then_some(samples)
}

/// Reads an Ogg/Opus file into Opus packets (OpusHead and OpusTags skipped).
pub fn read_ogg_opus(b: &[u8]) -> Result<Vec<AudioPacket>, PeerError> {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut at = 0;
    if b.get(0..4) != Some(b"OggS") {
        return Err(bad("not an Ogg file (no OggS signature)"));
    }
    while at + 27 <= b.len() {
        if b.get(at..at + 4) != Some(b"OggS") {
            return Err(bad("Ogg page is damaged"));
        }
        let nsegs = usize::from(b[at + 26]);
        let table = b
            .get(at + 27..at + 27 + nsegs)
            .ok_or_else(|| bad("Ogg page is truncated"))?;
        let mut data_at = at + 27 + nsegs;
        for &lace in table {
            let seg = b
                .get(data_at..data_at + usize::from(lace))
                .ok_or_else(|| bad("Ogg page is truncated"))?;
            partial.extend_from_slice(seg);
            data_at += usize::from(lace);
            if lace < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        at = data_at;
    }
    let mut iter = packets.into_iter();
    match iter.next() {
        Some(head) if head.starts_with(b"OpusHead") => {}
        _ => return Err(bad("the Ogg file is not Opus (no OpusHead)")),
    }
    let mut out = Vec::new();
    for p in iter {
        if p.starts_with(b"OpusTags") || p.is_empty() {
            continue;
        }
        let samples = opus_packet_samples(&p).ok_or_else(|| bad("bad Opus packet"))?;
        out.push(AudioPacket { data: p, samples });
    }
    if out.is_empty() {
        return Err(bad("the Ogg file has no Opus packets"));
    }
    Ok(out)
}

/// Width and height of a VP8 keyframe (RFC 6386 §9.1), if this is one.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.first()? & 1 != 0 || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some((u16le(frame, 6)? & 0x3fff, u16le(frame, 8)? & 0x3fff))
}

/// Writes a VP8 IVF file frame by frame, time base 1/90000 (RTP time of the frame, relative to the first).
#[derive(Debug, Default)]
pub struct IvfWriter {
    first: Option<u64>,
    last_pts: Option<u64>,
    /// Frames written so far.
    pub frames: u64,
    size: Option<(u16, u16)>,
}

impl IvfWriter {
    /// The 32-byte file header. `size` is the picture size (0x0 when not yet known; players take it from the
    /// first keyframe).
    pub fn header(size: (u16, u16), frames: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(b"DKIF");
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&32u16.to_le_bytes());
        h.extend_from_slice(b"VP80");
        h.extend_from_slice(&size.0.to_le_bytes());
        h.extend_from_slice(&size.1.to_le_bytes());
        h.extend_from_slice(&90_000u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&frames.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h
    }

    /// The bytes to append for one frame at 90 kHz RTP time `rtp`; empty until the first keyframe (a decoder
    /// cannot start without one). Frames that go back in time are dropped.
    pub fn frame(&mut self, rtp: u64, data: &[u8]) -> Vec<u8> {
        if self.first.is_none() {
            match vp8_keyframe_size(data) {
                Some(size) => {
                    self.size = Some(size);
                    self.first = Some(rtp);
                }
                None => return Vec::new(),
            }
        }
        let pts = rtp.saturating_sub(self.first.unwrap_or(rtp));
        if self.last_pts.is_some_and(|last| pts <= last) {
            return Vec::new();
        }
        self.last_pts = Some(pts);
        self.frames += 1;
        let mut out = Vec::with_capacity(12 + data.len());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&pts.to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    /// The length to put in the header's frame-count field: the duration in time-base units, which is how
    /// ffmpeg reads that field (in libvpx's own files, one tick per frame, the two are the same).
    pub fn header_length(&self) -> u32 {
        let pts = self.last_pts.unwrap_or(0);
        let avg = if self.frames > 1 {
            pts / (self.frames - 1)
        } else {
            0
        };
        u32::try_from(pts + avg).unwrap_or(u32::MAX)
    }

    /// The picture size seen in the first keyframe.
    pub fn size(&self) -> (u16, u16) {
        self.size.unwrap_or((0, 0))
    }
}

fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Writes an Ogg/Opus stream, one packet per page; granule positions follow the RTP time (48 kHz), so gaps
/// from packet loss keep their length.
#[derive(Debug)]
pub struct OggWriter {
    serial: u32,
    seq: u32,
    first: Option<u64>,
    last_granule: u64,
    /// Opus packets written so far.
    pub packets: u64,
}

const PRE_SKIP: u16 = 312;

impl OggWriter {
    /// A writer for one logical Ogg stream; `serial` tells streams apart within a file.
    pub fn new(serial: u32) -> OggWriter {
        OggWriter {
            serial,
            seq: 0,
            first: None,
            last_granule: 0,
            packets: 0,
        }
    }

    fn page(&mut self, header_type: u8, granule: u64, packet: &[u8]) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut left = packet.len();
        loop {
            let l = left.min(255);
            lacing.push(l as u8);
            left -= l;
            if l < 255 {
                break;
            }
        }
        let mut p = Vec::with_capacity(27 + lacing.len() + packet.len());
        p.extend_from_slice(b"OggS");
        p.push(0);
        p.push(header_type);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&self.serial.to_le_bytes());
        p.extend_from_slice(&self.seq.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(lacing.len() as u8);
        p.extend_from_slice(&lacing);
        p.extend_from_slice(packet);
        let crc = ogg_crc(&p);
        p[22..26].copy_from_slice(&crc.to_le_bytes());
        self.seq += 1;
        p
    }

    /// OpusHead and OpusTags pages: the start of the file.
    pub fn headers(&mut self, channels: u8) -> Vec<u8> {
        let mut head = Vec::from(&b"OpusHead"[..]);
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        let mut tags = Vec::from(&b"OpusTags"[..]);
        let vendor = b"peercall";
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        let mut out = self.page(2, 0, &head);
        out.extend(self.page(0, 0, &tags));
        out
    }

    /// The page for one Opus packet at 48 kHz RTP time `rtp`; packets that go back in time are dropped.
    pub fn packet(&mut self, rtp: u64, data: &[u8]) -> Vec<u8> {
        let first = *self.first.get_or_insert(rtp);
        let samples = u64::from(opus_packet_samples(data).unwrap_or(960));
        let granule = rtp.saturating_sub(first) + samples + u64::from(PRE_SKIP);
        if granule <= self.last_granule || data.is_empty() {
            return Vec::new();
        }
        self.last_granule = granule;
        self.packets += 1;
        self.page(0, granule, data)
    }

    /// Seconds of audio written so far.
    pub fn seconds(&self) -> f64 {
        self.last_granule.saturating_sub(u64::from(PRE_SKIP)) as f64 / 48_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_clip_parses() {
        let clip = Clip::test_clip().unwrap();
        assert!(clip.video.len() >= 10);
        assert!(clip.video[0].keyframe);
        assert!(clip.audio.len() >= 10);
        assert!(vp8_keyframe_size(&clip.video[0].data).is_some());
    }

    #[test]
    fn ivf_round_trip_and_refusals() {
        let clip = Clip::test_clip().unwrap();
        let mut w = IvfWriter::default();
        let mut file = Vec::new();
        for (i, f) in clip.video.iter().enumerate() {
            file.extend(w.frame(i as u64 * 6000, &f.data));
        }
        let mut out = IvfWriter::header(w.size(), w.frames as u32);
        out.extend(file);
        let back = read_ivf(&out).unwrap();
        assert_eq!(back.len(), clip.video.len());
        let mut vp9 = out.clone();
        vp9[8..12].copy_from_slice(b"VP90");
        assert!(read_ivf(&vp9).unwrap_err().to_string().contains("not VP8"));
        assert!(read_ivf(b"hello").is_err());
        assert!(read_ivf(&out[..40]).is_err());
    }

    #[test]
    fn ogg_round_trip() {
        let clip = Clip::test_clip().unwrap();
        let mut w = OggWriter::new(7);
        let mut file = w.headers(2);
        let mut rtp = 1000u64;
        for p in &clip.audio {
            file.extend(w.packet(rtp, &p.data));
            rtp += u64::from(p.samples);
        }
        let back = read_ogg_opus(&file).unwrap();
        assert_eq!(back.len(), clip.audio.len());
        assert!(read_ogg_opus(b"OggS").is_err());
        assert!(read_ogg_opus(b"nope").is_err());
    }
}
