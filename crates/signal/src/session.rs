//! Per-connection gate, sans-IO: rate limit, size limit, parsing and the consecutive-error count.
//!
//! It lives in the connection's task, so malformed or excess traffic is answered without touching the shared
//! room state. Everything that passes is handed to [`crate::rooms::Rooms`].

use std::time::{Duration, Instant};

use crate::SignalConfig;
use crate::metrics::Metrics;
use crate::protocol::{ClientMessage, ErrorCode, ProtocolError, ServerMessage, parse_client};

/// Token bucket: `rate` tokens per second, up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate == 0` means unlimited.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// A full bucket of `per_minute` tokens, refilled at `per_minute` a minute. `0` means unlimited.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(per_minute),
            tokens: f64::from(per_minute),
            last: now,
        }
    }

    /// Whether the bucket would be full at `now` (an unlimited one always is).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.rate <= 0.0 || self.tokens + elapsed.as_secs_f64() * self.rate >= self.burst
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one received frame.
#[derive(Debug)]
pub enum Verdict {
    /// A valid message for the room core.
    Deliver(ClientMessage),
    /// Answer this connection only (an `error`, or `pong`).
    Reply(ServerMessage),
    /// Answer with this error, then close the connection for abuse (see [`crate::rooms::Rooms::kick`]).
    ReplyThenAbuse(ServerMessage),
}

/// The gate of one connection.
#[derive(Debug)]
pub struct Session {
    bucket: TokenBucket,
    max_bytes: usize,
    max_errors: u32,
    errors_in_row: u32,
}

impl Session {
    /// A fresh gate: a full token bucket (burst twice the per-second rate) and no errors counted.
    pub fn new(config: &SignalConfig, now: Instant) -> Self {
        let rate = config.max_messages_per_sec;
        Self {
            bucket: TokenBucket::new(rate, rate.saturating_mul(2), now),
            max_bytes: config.max_message_bytes,
            max_errors: config.max_consecutive_errors.max(1),
            errors_in_row: 0,
        }
    }

    /// A text frame arrived. Checks the rate and the length before parsing.
    pub fn on_text(&mut self, now: Instant, frame: &[u8], metrics: &Metrics) -> Verdict {
        if !self.bucket.take(now) {
            return self.refuse(
                ProtocolError::new(ErrorCode::RateLimited, "too many messages per second", None),
                metrics,
            );
        }
        if frame.len() > self.max_bytes {
            let msg = format!(
                "message of {} bytes is over the {}-byte limit",
                frame.len(),
                self.max_bytes
            );
            return self.refuse(ProtocolError::new(ErrorCode::TooLarge, msg, None), metrics);
        }
        match parse_client(frame) {
            Ok(msg) => {
                metrics.message(msg.type_index());
                if matches!(msg, ClientMessage::Ping) {
                    self.errors_in_row = 0;
                    Verdict::Reply(ServerMessage::Pong)
                } else {
                    Verdict::Deliver(msg)
                }
            }
            Err(e) => self.refuse(e, metrics),
        }
    }

    /// A binary frame arrived: always refused with `bad-json` (the protocol is text frames only).
    pub fn on_binary(&mut self, now: Instant, len: usize, metrics: &Metrics) -> Verdict {
        if !self.bucket.take(now) {
            return self.refuse(
                ProtocolError::new(ErrorCode::RateLimited, "too many messages per second", None),
                metrics,
            );
        }
        let e = if len > self.max_bytes {
            ProtocolError::new(
                ErrorCode::TooLarge,
                format!("binary frame of {len} bytes (and only text frames are accepted)"),
                None,
            )
        } else {
            ProtocolError::new(
                ErrorCode::BadJson,
                "binary frames are not accepted: send JSON text frames",
                None,
            )
        };
        self.refuse(e, metrics)
    }

    /// The room core handled a delivered message: `Err(code)` when it answered with an error. Returns `true`
    /// when this error is one too many and the connection must be closed for abuse.
    pub fn on_outcome(&mut self, outcome: Result<(), ErrorCode>) -> bool {
        match outcome {
            Ok(()) => {
                self.errors_in_row = 0;
                false
            }
            Err(_) => self.count_error(),
        }
    }

    fn refuse(&mut self, e: ProtocolError, metrics: &Metrics) -> Verdict {
        metrics.error(e.code);
        if self.count_error() {
            Verdict::ReplyThenAbuse(e.to_message())
        } else {
            Verdict::Reply(e.to_message())
        }
    }

    fn count_error(&mut self) -> bool {
        self.errors_in_row = self.errors_in_row.saturating_add(1);
        self.errors_in_row >= self.max_errors
    }

    /// Errors in a row so far.
    pub fn errors_in_row(&self) -> u32 {
        self.errors_in_row
    }
}

/// How long a full bucket of `rate`/s takes to refill one token (for tests and docs).
pub fn token_interval(rate: u32) -> Duration {
    if rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / f64::from(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: &Verdict) -> Option<ErrorCode> {
        match v {
            Verdict::Reply(m) | Verdict::ReplyThenAbuse(m) => m.error_code(),
            Verdict::Deliver(_) => None,
        }
    }

    #[test]
    fn bucket_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 100, t0);
        assert_eq!((0..150).filter(|_| b.take(t0)).count(), 100, "burst of 100");
        assert!(!b.take(t0));
        assert!(b.take(t0 + token_interval(50)), "one token after 20 ms");
        assert!(!b.take(t0 + token_interval(50)));
        // After a second, 50 more (not more than the burst).
        let t1 = t0 + Duration::from_secs(1) + token_interval(50);
        assert_eq!((0..150).filter(|_| b.take(t1)).count(), 50);
        // Long idle refills to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..500).filter(|_| b.take(t2)).count(), 100);
        // Time going backwards does not mint tokens or panic.
        assert!(!b.take(t0));
        let mut unlimited = TokenBucket::new(0, 0, t0);
        assert!((0..10_000).all(|_| unlimited.take(t0)));
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let cfg = SignalConfig {
            max_message_bytes: 32,
            ..SignalConfig::default()
        };
        let m = Metrics::default();
        let t = Instant::now();
        let mut s = Session::new(&cfg, t);
        // 33 bytes of garbage: too-large, not bad-json.
        assert_eq!(
            code(&s.on_text(t, &[b'x'; 33], &m)),
            Some(ErrorCode::TooLarge)
        );
        assert_eq!(
            code(&s.on_text(t, &[b'x'; 32], &m)),
            Some(ErrorCode::BadJson)
        );
        assert!(matches!(
            s.on_text(t, br#"{"type":"ping"}"#, &m),
            Verdict::Reply(ServerMessage::Pong)
        ));
        assert_eq!(code(&s.on_binary(t, 4, &m)), Some(ErrorCode::BadJson));
        assert_eq!(code(&s.on_binary(t, 40, &m)), Some(ErrorCode::TooLarge));
        assert_eq!(m.errors_of(ErrorCode::TooLarge), 2);
        assert_eq!(m.errors_of(ErrorCode::BadJson), 2);
        assert_eq!(m.messages_of("ping"), 1);
    }

    #[test]
    fn rate_limit_answers_rate_limited() {
        let cfg = SignalConfig {
            max_messages_per_sec: 5,
            max_consecutive_errors: 1000,
            ..SignalConfig::default()
        };
        let m = Metrics::default();
        let t = Instant::now();
        let mut s = Session::new(&cfg, t);
        let verdicts: Vec<_> = (0..15)
            .map(|_| s.on_text(t, br#"{"type":"ping"}"#, &m))
            .collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| matches!(v, Verdict::Reply(ServerMessage::Pong)))
                .count(),
            10
        );
        assert!(
            verdicts[10..]
                .iter()
                .all(|v| code(v) == Some(ErrorCode::RateLimited))
        );
        // 200 ms later: one more allowed.
        assert!(matches!(
            s.on_text(t + Duration::from_millis(200), br#"{"type":"ping"}"#, &m),
            Verdict::Reply(ServerMessage::Pong)
        ));
    }

    #[test]
    fn consecutive_errors_lead_to_abuse_and_successes_reset() {
        let cfg = SignalConfig {
            max_consecutive_errors: 3,
            ..SignalConfig::default()
        };
        let m = Metrics::default();
        let t = Instant::now();
        let mut s = Session::new(&cfg, t);
        assert!(matches!(s.on_text(t, b"x", &m), Verdict::Reply(_)));
        assert!(matches!(s.on_text(t, b"x", &m), Verdict::Reply(_)));
        assert!(matches!(
            s.on_text(t, br#"{"type":"ping"}"#, &m),
            Verdict::Reply(ServerMessage::Pong)
        ));
        assert_eq!(s.errors_in_row(), 0);
        assert!(matches!(s.on_text(t, b"x", &m), Verdict::Reply(_)));
        assert!(!s.on_outcome(Err(ErrorCode::UnknownPeer)));
        assert!(
            matches!(s.on_text(t, b"{}", &m), Verdict::ReplyThenAbuse(_)),
            "third error in a row"
        );
        assert!(!s.on_outcome(Ok(())));
        assert_eq!(s.errors_in_row(), 0);
    }

    #[test]
    fn delivers_valid_messages() {
        let m = Metrics::default();
        let t = Instant::now();
        let mut s = Session::new(&SignalConfig::default(), t);
        let v = s.on_text(t, br#"{"type":"offer","to":"p-1","sdp":"x"}"#, &m);
        assert!(matches!(v, Verdict::Deliver(ClientMessage::Forward(_))));
        assert_eq!(m.messages_of("offer"), 1);
    }
}
