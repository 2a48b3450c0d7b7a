//! `--record DIR`: each remote participant's video as IVF (VP8) and audio as Ogg/Opus, named by participant
//! and the time the recording started. Fed with the engine's [`crate::Event::Media`]; timestamps come from the
//! RTP time, so gaps (loss, an ICE restart) keep their length. Video frames after a loss are held back until the
//! next keyframe, so the file always decodes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::PeerError;
use crate::engine::Kind;
use crate::media::{IvfWriter, OggWriter, vp8_keyframe_size};

struct Track {
    path: PathBuf,
    file: BufWriter<File>,
    ivf: Option<IvfWriter>,
    ogg: Option<OggWriter>,
    /// Waiting for a keyframe after a gap.
    broken: bool,
}

/// Writes recordings under one directory.
pub struct Recorder {
    dir: PathBuf,
    stamp: String,
    tracks: HashMap<(String, bool), Track>,
}

/// A file name part from a display name: letters, digits, `-` and `_` kept, the rest `_`, at most 40.
pub fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(40)
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "peer".to_string() } else { s }
}

/// What one finished recording holds.
#[derive(Debug, Clone)]
pub struct RecordedFile {
    /// Where the file was written.
    pub path: PathBuf,
    /// Video (IVF) or audio (Ogg/Opus).
    pub kind: Kind,
    /// Video frames or audio packets in it.
    pub frames: u64,
    /// Its duration in seconds, from the RTP timestamps.
    pub seconds: f64,
}

impl Recorder {
    /// `stamp` is the time to name files by (the caller's clock), e.g. `20260101T120000Z`.
    pub fn new(dir: &Path, stamp: &str) -> Result<Recorder, PeerError> {
        std::fs::create_dir_all(dir)?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            stamp: stamp.to_string(),
            tracks: HashMap::new(),
        })
    }

    /// One frame or packet from `peer` (`name` its display name).
    pub fn write(
        &mut self,
        peer: &str,
        name: &str,
        kind: Kind,
        rtp: u64,
        data: &[u8],
        contiguous: bool,
    ) -> Result<(), PeerError> {
        let video = kind == Kind::Video;
        let key = (peer.to_string(), video);
        if !self.tracks.contains_key(&key) {
            if video && vp8_keyframe_size(data).is_none() {
                return Ok(()); // a file starts with a keyframe
            }
            let ext = if video { "ivf" } else { "ogg" };
            let path = self.dir.join(format!(
                "{}-{}-{}.{ext}",
                safe_name(name),
                safe_name(peer),
                self.stamp
            ));
            let mut file = BufWriter::new(File::create(&path)?);
            let (ivf, ogg) = if video {
                file.write_all(&IvfWriter::header((0, 0), 0))?;
                (Some(IvfWriter::default()), None)
            } else {
                let mut ogg = OggWriter::new(0x7065_6572 ^ self.tracks.len() as u32);
                file.write_all(&ogg.headers(2))?;
                (None, Some(ogg))
            };
            self.tracks.insert(
                key.clone(),
                Track {
                    path,
                    file,
                    ivf,
                    ogg,
                    broken: false,
                },
            );
        }
        let Some(track) = self.tracks.get_mut(&key) else {
            return Ok(());
        };
        if let Some(ivf) = track.ivf.as_mut() {
            let keyframe = vp8_keyframe_size(data).is_some();
            if !contiguous && !keyframe {
                track.broken = true;
            }
            if keyframe {
                track.broken = false;
            }
            if !track.broken {
                let bytes = ivf.frame(rtp, data);
                track.file.write_all(&bytes)?;
            }
        } else if let Some(ogg) = track.ogg.as_mut() {
            let bytes = ogg.packet(rtp, data);
            track.file.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Closes every file (IVF headers get their picture size and frame count); returns what was written.
    pub fn finish(self) -> Result<Vec<RecordedFile>, PeerError> {
        let mut out = Vec::new();
        for (_, mut t) in self.tracks {
            if let Some(ivf) = &t.ivf {
                t.file.seek(SeekFrom::Start(0))?;
                t.file
                    .write_all(&IvfWriter::header(ivf.size(), ivf.header_length()))?;
            }
            t.file.flush()?;
            out.push(match (&t.ivf, &t.ogg) {
                (Some(ivf), _) => RecordedFile {
                    path: t.path.clone(),
                    kind: Kind::Video,
                    frames: ivf.frames,
                    seconds: 0.0,
                },
                (_, Some(ogg)) => RecordedFile {
                    path: t.path.clone(),
                    kind: Kind::Audio,
                    frames: ogg.packets,
                    seconds: ogg.seconds(),
                },
                _ => continue,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Flushes buffered bytes (so the files are readable while the call goes on).
    pub fn flush(&mut self) -> Result<(), PeerError> {
        for t in self.tracks.values_mut() {
            t.file.flush()?;
        }
        Ok(())
    }
}
