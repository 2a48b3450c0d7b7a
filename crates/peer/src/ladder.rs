//! One video at several bitrates (several `--video` files): which encoding each peer gets, from the bandwidth
//! estimate its feedback gives (TWCC, or REMB from receivers that send it), switching only at a keyframe so
//! the receiver never sees a frame that refers to a picture of another encoding. Sans-IO: time and estimates
//! come in, the frame to send next goes out.
//!
//! The encodings should be of the same source, with keyframes at the same times (`ffmpeg -g N` with one N for
//! all): a switch then happens at the next keyframe of the target, at the same point of the clip. When their
//! keyframes never line up, a switch still happens after [`SWITCH_WAIT`], at the target's next keyframe.

use std::time::{Duration, Instant};

use crate::media::VideoFrame;

/// Bytes of headers per RTP packet on the wire (IPv4 20 + UDP 8 + RTP 12 + SRTP tag 10), counted in an
/// encoding's bitrate so that it compares with the estimate, which measures what goes on the wire.
pub const PACKET_OVERHEAD: u64 = 50;
/// VP8 payload bytes per RTP packet, about (str0m fills packets up to its MTU).
const PAYLOAD_PER_PACKET: u64 = 1100;
/// A higher encoding must fit the estimate this long before we switch up (estimates overshoot briefly; a
/// switch down is not delayed).
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// A switch waiting for keyframes that line up goes at the target's next keyframe after this.
pub const SWITCH_WAIT: Duration = Duration::from_secs(2);

/// Bits per second a stream of `sizes` (bytes of each frame or packet) over `total` takes on the wire.
pub fn wire_bitrate(sizes: impl Iterator<Item = usize>, total: Duration) -> u64 {
    let bytes: u64 = sizes
        .map(|s| {
            let s = s as u64;
            s + s.div_ceil(PAYLOAD_PER_PACKET).max(1) * PACKET_OVERHEAD
        })
        .sum();
    let micros = total.as_micros().max(1) as u64;
    bytes.saturating_mul(8_000_000) / micros
}

/// One encoding of the video.
#[derive(Debug)]
struct Encoding {
    frames: Vec<VideoFrame>,
    /// Start of each frame in the clip.
    starts: Vec<Duration>,
    length: Duration,
    bps: u64,
}

impl Encoding {
    fn new(frames: Vec<VideoFrame>) -> Encoding {
        let mut starts = Vec::with_capacity(frames.len());
        let mut t = Duration::ZERO;
        for f in &frames {
            starts.push(t);
            t += f.duration;
        }
        let bps = wire_bitrate(frames.iter().map(|f| f.data.len()), t);
        Encoding {
            frames,
            starts,
            length: t.max(Duration::from_millis(1)),
            bps,
        }
    }

    /// Clip time of frame `index` (taken modulo the length).
    fn time_of(&self, index: usize) -> Duration {
        self.starts
            .get(index % self.frames.len().max(1))
            .copied()
            .unwrap_or_default()
    }

    /// The keyframe starting at `t` (within half its duration), if there is one.
    fn keyframe_at(&self, t: Duration) -> Option<usize> {
        let t = Duration::from_nanos((t.as_nanos() % self.length.as_nanos()) as u64);
        self.frames.iter().enumerate().find_map(|(i, f)| {
            let start = self.starts.get(i).copied().unwrap_or_default();
            let half = f.duration / 2;
            (f.keyframe && start <= t + half && t < start + half.max(Duration::from_nanos(1)))
                .then_some(i)
        })
    }

    /// The first keyframe at or after `t` (wrapping to the clip's start, which is a keyframe).
    fn keyframe_from(&self, t: Duration) -> usize {
        let t = Duration::from_nanos((t.as_nanos() % self.length.as_nanos()) as u64);
        self.frames
            .iter()
            .enumerate()
            .find(|(i, f)| f.keyframe && self.starts.get(*i).is_some_and(|s| *s >= t))
            .map_or(0, |(i, _)| i)
    }

    /// The keyframe that starts the group of pictures playing at `t`.
    fn group_start(&self, t: Duration) -> usize {
        let t = Duration::from_nanos((t.as_nanos() % self.length.as_nanos()) as u64);
        let mut best = 0;
        for (i, f) in self.frames.iter().enumerate() {
            if self.starts.get(i).is_some_and(|s| *s > t) {
                break;
            }
            if f.keyframe {
                best = i;
            }
        }
        best
    }
}

/// The encodings of the video, lowest bitrate first.
#[derive(Debug, Default)]
pub struct Ladder {
    encodings: Vec<Encoding>,
}

impl Ladder {
    /// The encodings given (empty ones dropped), ordered by their bitrate on the wire.
    pub fn new(videos: Vec<Vec<VideoFrame>>) -> Ladder {
        let mut encodings: Vec<Encoding> = videos
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(Encoding::new)
            .collect();
        encodings.sort_by_key(|e| e.bps);
        Ladder { encodings }
    }

    /// How many encodings there are (0: no video is sent).
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    /// No video is sent.
    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Bits per second of encoding `i` on the wire.
    pub fn bps(&self, i: usize) -> u64 {
        self.encodings.get(i).map_or(0, |e| e.bps)
    }

    /// The frames of encoding `i`.
    pub fn frames(&self, i: usize) -> &[VideoFrame] {
        self.encodings.get(i).map_or(&[], |e| e.frames.as_slice())
    }

    /// The highest encoding within `budget` bits per second (the lowest when none is).
    pub fn fit(&self, budget: u64) -> usize {
        self.encodings
            .iter()
            .rposition(|e| e.bps <= budget)
            .unwrap_or(0)
    }
}

/// Which encoding one peer gets, and when it changes.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The encoding being sent.
    pub current: usize,
    /// The encoding the estimate asks for (a switch waits for a keyframe).
    pub target: usize,
    /// Since when the switch to `target` waits.
    pending_since: Option<Instant>,
    /// A higher encoding that fits, and since when it has.
    up: Option<(usize, Instant)>,
    /// The last estimate, bits per second.
    pub estimate: Option<u64>,
    /// Switches made.
    pub switches: u32,
}

impl Choice {
    /// The start: the highest encoding within `budget` (the estimator's starting value, less the audio).
    pub fn new(ladder: &Ladder, budget: u64) -> Choice {
        let first = ladder.fit(budget);
        Choice {
            current: first,
            target: first,
            pending_since: None,
            up: None,
            estimate: None,
            switches: 0,
        }
    }

    /// An estimate arrived: `budget` is what of it the video may take. Down at once (at the next keyframe), up
    /// only once a higher encoding has fit for [`UP_HOLD`].
    pub fn on_estimate(&mut self, ladder: &Ladder, now: Instant, estimate: u64, budget: u64) {
        self.estimate = Some(estimate);
        let fit = ladder.fit(budget);
        let want = if fit > self.current {
            // The lowest fit seen since the estimate first allowed more: where we may go once it has held.
            let (level, since) = match self.up {
                Some((level, since)) => (level.min(fit), since),
                None => (fit, now),
            };
            self.up = Some((level, since));
            if now >= since + UP_HOLD {
                level
            } else {
                self.current
            }
        } else {
            self.up = None;
            fit
        };
        if want != self.target {
            self.target = want;
            self.pending_since = (want != self.current).then_some(now);
        }
    }

    /// Before frame `index` (of the current encoding; counting on across loops) is sent: if a switch is due,
    /// make it and return the index in the new encoding to send instead.
    pub fn before_frame(&mut self, ladder: &Ladder, now: Instant, index: usize) -> usize {
        if self.target == self.current || self.target >= ladder.len() {
            return index;
        }
        let (Some(from), Some(to)) = (
            ladder.encodings.get(self.current),
            ladder.encodings.get(self.target),
        ) else {
            return index;
        };
        let t = from.time_of(index);
        let next = match to.keyframe_at(t) {
            Some(j) => j,
            None if self
                .pending_since
                .is_some_and(|since| now >= since + SWITCH_WAIT) =>
            {
                to.keyframe_from(t)
            }
            None => return index,
        };
        self.switch();
        next
    }

    /// The receiver asked for a keyframe: the index (in the encoding now current) of the keyframe that starts the
    /// group playing at frame `index`. A pending switch is made now, since a keyframe goes out anyway.
    pub fn keyframe_requested(&mut self, ladder: &Ladder, index: usize) -> usize {
        let Some(from) = ladder.encodings.get(self.current) else {
            return index;
        };
        let t = from.time_of(index);
        if self.target != self.current && self.target < ladder.len() {
            self.switch();
            return ladder
                .encodings
                .get(self.current)
                .map_or(0, |to| to.group_start(t));
        }
        // Same encoding: keep the loop count, so that the frame index only moves back within this loop.
        let len = from.frames.len().max(1);
        index - index % len + from.group_start(t)
    }

    fn switch(&mut self) {
        self.current = self.target;
        self.pending_since = None;
        self.up = None;
        self.switches += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` frames of `bytes` each at 15 fps, a keyframe every `gop`.
    fn encoding(n: usize, bytes: usize, gop: usize) -> Vec<VideoFrame> {
        (0..n)
            .map(|i| VideoFrame {
                data: vec![if i % gop == 0 { 0 } else { 1 }; bytes],
                duration: Duration::from_micros(66_667),
                keyframe: i % gop == 0,
            })
            .collect()
    }

    #[test]
    fn bitrates_count_the_wire_and_order_the_ladder() {
        // 1000 bytes at 15 fps: (1000 + 50) * 8 * 15 = 126 kbit/s.
        let ladder = Ladder::new(vec![
            encoding(60, 5000, 15),
            Vec::new(),
            encoding(60, 1000, 15),
        ]);
        assert_eq!(ladder.len(), 2);
        let low = ladder.bps(0);
        assert!((125_000..=127_000).contains(&low), "{low}");
        assert!(ladder.bps(1) > 600_000);
        assert_eq!(ladder.frames(0)[1].data.len(), 1000);
        assert_eq!(ladder.fit(0), 0);
        assert_eq!(ladder.fit(low), 0);
        assert_eq!(ladder.fit(u64::MAX), 1);
    }

    #[test]
    fn switches_down_at_the_next_aligned_keyframe_and_up_after_holding() {
        let ladder = Ladder::new(vec![
            encoding(60, 500, 15),
            encoding(60, 2000, 15),
            encoding(60, 6000, 15),
        ]);
        let (b0, b1, b2) = (ladder.bps(0), ladder.bps(1), ladder.bps(2));
        let t0 = Instant::now();
        let mut c = Choice::new(&ladder, u64::MAX);
        assert_eq!(c.current, 2);
        // The estimate falls below the top: the switch waits for the keyframe at frame 15.
        c.on_estimate(&ladder, t0, b1 + 10, b1 + 10);
        assert_eq!((c.current, c.target), (2, 1));
        for i in 3..15 {
            assert_eq!(c.before_frame(&ladder, t0, i), i, "frame {i} stays");
            assert_eq!(c.current, 2);
        }
        assert_eq!(c.before_frame(&ladder, t0, 15), 15);
        assert_eq!(c.current, 1);
        assert_eq!(c.switches, 1);
        // Back up: only once the top fits for UP_HOLD.
        c.on_estimate(&ladder, t0, b2 * 2, b2 * 2);
        assert_eq!(c.target, 1, "not at once");
        c.on_estimate(&ladder, t0 + UP_HOLD / 2, b2 * 2, b2 * 2);
        assert_eq!(c.target, 1);
        c.on_estimate(&ladder, t0 + UP_HOLD, b2 * 2, b2 * 2);
        assert_eq!(c.target, 2);
        // Looping: frame 60 + 30 is a keyframe of the top encoding too (same times).
        assert_eq!(c.before_frame(&ladder, t0 + UP_HOLD, 61), 61);
        assert_eq!(c.before_frame(&ladder, t0 + UP_HOLD, 90), 30);
        assert_eq!(c.current, 2);
        // A dip that does not last cancels the way up.
        c.on_estimate(&ladder, t0, b0, b0);
        assert_eq!(c.target, 0);
        c.on_estimate(&ladder, t0, b2 * 2, b2 * 2);
        assert_eq!(c.target, 2, "back to what is being sent: nothing to switch");
        assert_eq!(c.estimate, Some(b2 * 2));
    }

    #[test]
    fn unaligned_keyframes_switch_after_the_wait_and_pli_switches_at_once() {
        // Keyframes every 15 frames in one, every 20 (offset by 10) in the other: they line up rarely.
        let mut odd = encoding(60, 6000, 60);
        for (i, f) in odd.iter_mut().enumerate() {
            f.keyframe = i == 0 || i % 20 == 10;
        }
        let ladder = Ladder::new(vec![encoding(60, 500, 15), odd]);
        let t0 = Instant::now();
        let mut c = Choice::new(&ladder, u64::MAX);
        assert_eq!(c.current, 1);
        c.on_estimate(&ladder, t0, 1, 1);
        assert_eq!(c.target, 0);
        // Frame 10 of the top starts where the low one has no keyframe: wait.
        assert_eq!(c.before_frame(&ladder, t0, 11), 11);
        // After the wait: the low encoding's next keyframe (frame 15 for time of frame 12).
        assert_eq!(c.before_frame(&ladder, t0 + SWITCH_WAIT, 12), 15);
        assert_eq!(c.current, 0);
        // A keyframe request with a switch pending: switch now, at the start of the group playing.
        c.on_estimate(&ladder, t0, u64::MAX, u64::MAX);
        c.on_estimate(&ladder, t0 + UP_HOLD, u64::MAX, u64::MAX);
        assert_eq!(c.target, 1);
        assert_eq!(c.keyframe_requested(&ladder, 25), 10);
        assert_eq!(c.current, 1);
        // No switch pending: the same encoding's group start, the loop count kept.
        assert_eq!(c.keyframe_requested(&ladder, 60 + 35), 60 + 30);
    }
}
