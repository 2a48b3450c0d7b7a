//! The call engine: signaling protocol v1 (docs/protocol.md), one str0m [`Rtc`] per remote peer, perfect
//! negotiation as the browser client does it (web/js/peer.js), the looped clip out, the media in. Sans-IO: the
//! caller feeds signaling text, datagrams and the time, and drains [`Output`]s; nothing here reads a clock, opens
//! a socket or sleeps.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output as RtcOutput, Rtc};

use crate::PeerError;
use crate::gather::{Gatherer, IceServer, LocalKind};
use crate::ladder::{Choice, Ladder};
use crate::media::Clip;

/// "disconnected" this long → ICE restart (as the browser).
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(3);
/// Not connected this long after negotiating → ICE restart.
pub const CONNECT_WATCHDOG: Duration = Duration::from_secs(15);
/// Nothing heard from a connected peer this long → treated as "disconnected" (str0m's own ICE state takes
/// 15 s or more to say so; browsers say it after about 5 s).
pub const SILENCE: Duration = Duration::from_secs(5);
/// A restart that did not help is retried after this (times the restart count, at most 3).
pub const RESTART_RETRY: Duration = Duration::from_secs(10);
/// How long an id we have not seen waits for an orphaned connection to claim it (as the browser's roster).
pub const ORPHAN_WAIT: Duration = Duration::from_millis(2500);
/// A newcomer waits this long for the first offer of a peer its welcome listed before offering itself (an older
/// peercall in the room waited for the newcomer's offer instead; the polite rule settles any crossing).
pub const FIRST_OFFER_WAIT: Duration = Duration::from_secs(3);
/// Longest id an orphan may claim.
pub const MAX_CLAIMED_ID: usize = 128;
/// Longest data-channel message taken (as the browser).
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Longest chat text (UTF-16 code units in the browser; characters here).
pub const MAX_CHAT: usize = 2000;
/// Where the bandwidth estimate starts when several video encodings are given (as a browser starts, about).
pub const INITIAL_ESTIMATE: u64 = 300_000;
/// The label and stream id of the pre-negotiated data channel every peercall connection has.
pub const CHANNEL_LABEL: &str = "peercall";

/// What to join and what to send.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Room name, as in the room URL (the signaling server validates it).
    pub room: String,
    /// Display name the other participants see.
    pub name: String,
    /// Room password, for rooms that have one (a wrong one ends the call with [`Event::Fatal`]).
    pub password: Option<String>,
    /// Join token the server requires when it restricts who may join.
    pub token: Option<String>,
    /// What is sent (looped); an empty track is not sent.
    pub clip: Clip,
    /// Relay candidates only (like the browser's `&relay=1`): no host or server-reflexive candidates.
    pub relay_only: bool,
    /// Reach TURN servers only over TCP and TLS (their `?transport=tcp` and `turns:` URLs), not over UDP.
    /// Without it, as a browser does, an allocation is made over every transport the server offers and ICE picks
    /// what gets through (UDP where it can, TCP when UDP is blocked, TLS when only HTTPS is allowed out).
    pub turn_tcp: bool,
    /// Emit [`Event::Media`] for every frame and packet that arrives (for `--record`).
    pub record: bool,
}

/// A datagram to send from one of the caller's sockets.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Local address of the socket to send from (one the caller registered).
    pub source: SocketAddr,
    /// Where the datagram goes.
    pub destination: SocketAddr,
    /// The bytes of one datagram (or of one stream frame, with `tcp`).
    pub contents: Vec<u8>,
    /// Send on the TCP connection to `destination` (a TURN server; the caller opens it on first use and feeds
    /// what it reads to [`Engine::handle_stream`]) instead of a datagram from `source`.
    pub tcp: bool,
    /// With `tcp`: the connection is TLS (a `turns:` server), and the server's certificate must be valid for
    /// this name (the URL's host, an IP address or a DNS name).
    pub tls: Option<std::sync::Arc<str>>,
}

/// What the engine wants done.
#[derive(Debug)]
pub enum Output {
    /// A text frame for the signaling WebSocket.
    Signal(String),
    /// A datagram to send.
    Transmit(Transmit),
    /// Something to tell the user (or the recorder).
    Event(Event),
    /// The caller should resolve this host name and call [`Engine::resolved`].
    Resolve(String),
}

/// Media kinds as the engine reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opus audio, RTP clock 48 kHz.
    Audio,
    /// VP8 video, RTP clock 90 kHz.
    Video,
}

/// Things that happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The server admitted us to the room.
    Joined {
        /// Our peer id in the room.
        id: String,
        /// How many others were in the room.
        peers: usize,
        /// The server resumed our previous session (a reconnect) instead of starting a new one.
        resumed: bool,
    },
    /// Someone entered the room; a connection to them starts.
    PeerJoined {
        /// Their peer id.
        id: String,
        /// Their display name.
        name: String,
    },
    /// Someone left the room; their connection is closed.
    PeerLeft {
        /// Their peer id.
        id: String,
        /// Their display name.
        name: String,
    },
    /// The connection to a peer is up (ICE and DTLS done).
    Connected {
        /// Their peer id.
        id: String,
        /// Their display name.
        name: String,
    },
    /// The connection to a peer was lost; ICE restarts follow.
    Disconnected {
        /// Their peer id.
        id: String,
        /// Their display name.
        name: String,
    },
    /// An ICE restart toward a peer began.
    IceRestart {
        /// Their peer id.
        id: String,
        /// Why, for logs (e.g. "SIGUSR1" when `peercall join` was asked to restart).
        reason: &'static str,
    },
    /// A chat message over the data channel.
    Chat {
        /// Sender peer id.
        from: String,
        /// Sender display name.
        name: String,
        /// The text, at most [`MAX_CHAT`] characters.
        text: String,
    },
    /// One frame (video) or packet (audio) from `peer`; `rtp` is its RTP time, extended (90 kHz / 48 kHz).
    Media {
        /// Sender peer id.
        peer: String,
        /// Sender display name.
        name: String,
        /// Audio or video.
        kind: Kind,
        /// RTP timestamp, extended to 64 bits.
        rtp: u64,
        /// The depacketized frame (VP8) or packet (Opus).
        data: Arc<[u8]>,
        /// No frame was lost between the previous one and this (false after a gap).
        contiguous: bool,
    },
    /// A peer whose signaling session was lost (the server restarted) told us its new id over the data channel:
    /// the same connection, now known by `id`. Not a leave and a join: the call goes on.
    Rekeyed {
        /// The id it had.
        old: String,
        /// The id it has now.
        id: String,
        /// Its display name.
        name: String,
    },
    /// The join was refused (room full, wrong password, …): the call is over.
    Fatal {
        /// The server's error code (protocol v1, e.g. "room-full").
        code: String,
        /// Human-readable text from the server.
        message: String,
    },
    /// A non-fatal error the server sent.
    ServerError {
        /// The server's error code (protocol v1).
        code: String,
        /// Human-readable text from the server.
        message: String,
    },
}

/// The route a connection takes, by its candidates' types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Direct, between host candidates.
    Host,
    /// Through a NAT mapping (a server-reflexive candidate on either side).
    Srflx,
    /// Through a TURN relay (a relay candidate on either side).
    Relay,
}

impl Route {
    /// The ICE candidate type name ("host", "srflx", "relay"), for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Host => "host",
            Route::Srflx => "srflx",
            Route::Relay => "relay",
        }
    }
}

/// How a connection to one peer is doing.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    /// Their peer id.
    pub id: String,
    /// Their display name.
    pub name: String,
    /// The connection is up now.
    pub connected: bool,
    /// The connection was up at some point.
    pub ever_connected: bool,
    /// The route of the selected candidate pair, once there is one.
    pub route: Option<Route>,
    /// When our side of the route is a relay candidate: how we reach the TURN server ("udp", "tcp", "tls").
    pub relay_transport: Option<&'static str>,
    /// Round-trip time of the selected pair, as str0m's peer statistics report it.
    pub rtt: Option<Duration>,
    /// Bytes received from this peer (all packets).
    pub bytes_rx: u64,
    /// Bytes sent to this peer (all packets).
    pub bytes_tx: u64,
    /// Video frames received.
    pub video_frames_rx: u64,
    /// Audio packets received.
    pub audio_packets_rx: u64,
    /// Video frames sent.
    pub video_frames_tx: u64,
    /// Audio packets sent.
    pub audio_packets_tx: u64,
    /// The remote's receiver reports say it receives our video / audio.
    pub video_acked: bool,
    /// As `video_acked`, for audio.
    pub audio_acked: bool,
    /// ICE restarts begun toward this peer.
    pub restarts: u32,
    /// Offer collisions that perfect negotiation resolved.
    pub collisions: u32,
    /// Keyframe requests (PLI/FIR) the peer sent us; each restarts our clip at a keyframe for them.
    pub keyframe_requests: u64,
    /// The `peercall` data channel (chat) is open.
    pub channel_open: bool,
    /// The latest bandwidth estimate toward this peer (TWCC, or the peer's REMB), bits per second; only with
    /// several video encodings, which is when the engine asks for one.
    pub estimate_bps: Option<u64>,
    /// Bitrate on the wire of the video encoding this peer gets, bits per second.
    pub video_bps: Option<u64>,
    /// Which encoding that is (0 = the lowest bitrate), of how many.
    pub video_encoding: (usize, usize),
    /// Switches between encodings made for this peer.
    pub video_switches: u32,
}

#[derive(Debug, Default)]
struct SendCursor {
    index: usize,
    next_at: Option<Instant>,
    rtp: u64,
}

struct Link {
    status: PeerStatus,
    rtc: Option<Rtc>,
    pending: Option<SdpPendingOffer>,
    /// The pending offer carries an ICE restart.
    pending_is_restart: bool,
    negotiated: bool,
    channel: Option<ChannelId>,
    mids: Vec<(Mid, MediaKind)>,
    remote_ufrag: Option<String>,
    remote_candidates: Vec<(SocketAddr, str0m::CandidateKind)>,
    first_mid: Option<String>,
    ice: IceConnectionState,
    disconnected_since: Option<Instant>,
    watchdog: Option<Instant>,
    /// We are the newcomer and wait for this peer's first offer until then (see [`FIRST_OFFER_WAIT`]).
    first_offer_by: Option<Instant>,
    /// The SDP session id (`o=` line) of the peer's connection we negotiated with: an offer with another comes
    /// from a new connection of theirs.
    remote_session: Option<String>,
    retry_at: Option<Instant>,
    restart_wanted: Option<&'static str>,
    rtc_timeout: Option<Instant>,
    video: SendCursor,
    audio: SendCursor,
    /// Chat waiting for the data channel.
    queued: Vec<Value>,
    last_pli: Option<Instant>,
    last_rx: Option<Instant>,
    /// Its signaling session was lost (a server restart): up, but known by an id that no longer exists.
    orphan: bool,
    /// Which video encoding this peer gets (created when video first goes out).
    choice: Option<Choice>,
    /// An orphan whose connection is down, since when: it cannot be ICE-restarted (we cannot signal it), so
    /// after [`ORPHAN_WAIT`] it goes; the person comes back under their new id.
    orphan_down_since: Option<Instant>,
}

impl Link {
    fn new(id: &str, name: &str) -> Link {
        Link {
            status: PeerStatus {
                id: id.to_string(),
                name: name.to_string(),
                ..PeerStatus::default()
            },
            rtc: None,
            pending: None,
            pending_is_restart: false,
            negotiated: false,
            channel: None,
            mids: Vec::new(),
            remote_ufrag: None,
            remote_candidates: Vec::new(),
            first_mid: None,
            ice: IceConnectionState::New,
            disconnected_since: None,
            watchdog: None,
            first_offer_by: None,
            remote_session: None,
            retry_at: None,
            restart_wanted: None,
            rtc_timeout: None,
            video: SendCursor::default(),
            audio: SendCursor::default(),
            queued: Vec::new(),
            last_pli: None,
            last_rx: None,
            orphan: false,
            choice: None,
            orphan_down_since: None,
        }
    }

    fn mid_of(&self, kind: MediaKind) -> Option<Mid> {
        self.mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m)
    }

    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.mids.iter().find(|(m, _)| *m == mid).map(|(_, k)| *k)
    }
}

/// The sans-IO call engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    crypto: Arc<str0m::crypto::CryptoProvider>,
    my_id: Option<String>,
    resume: Option<String>,
    signaling_up: bool,
    joined: bool,
    links: BTreeMap<String, Link>,
    out: VecDeque<Output>,
    gather: Gatherer,
    left: bool,
    /// Ids held back while orphans may claim them: id → (name, until, heard by `peer-joined`: when admitted
    /// it is announced and we offer; otherwise a welcome listed it and we wait for its offer).
    deferred: BTreeMap<String, (String, Instant, bool)>,
    /// The video, at one bitrate or several (taken out of `config.clip`).
    ladder: Ladder,
    /// What the audio takes on the wire, bits per second (left out of the video's budget).
    audio_bps: u64,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The first `a=<attr>:` value of an SDP.
fn sdp_attr(sdp: &str, attr: &str) -> Option<String> {
    let prefix = format!("a={attr}:");
    sdp.lines().find_map(|l| {
        l.trim()
            .strip_prefix(prefix.as_str())
            .map(|s| s.trim().to_string())
    })
}

/// The session id of an SDP's `o=` line (RFC 8866 §5.2): one per connection, kept through renegotiations.
fn sdp_session_id(sdp: &str) -> Option<String> {
    let origin = sdp.lines().find_map(|l| l.trim().strip_prefix("o="))?;
    origin.split_whitespace().nth(1).map(str::to_string)
}

/// The payload type our side negotiated for `codec` on `mid`.
#[allow(clippy::let_and_return)] // the binding ends the writer's borrow before it is dropped
fn payload_type(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<str0m::format::PayloadParams> {
    rtc.writer(mid).and_then(|w| {
        let params = w
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .cloned();
        params
    })
}

/// Error codes after which the server closes the connection: the join is over.
const FATAL_CODES: &[&str] = &[
    "room-full",
    "wrong-password",
    "bad-token",
    "too-many-rooms",
    "too-many-connections",
    "too-many-joins",
    "abuse",
    "unsupported-version",
];

impl Engine {
    /// An engine that will join `config.room`: it sends the join as an [`Output::Signal`] once the caller
    /// reports the signaling socket open with [`Engine::signaling_connected`].
    pub fn new(mut config: EngineConfig, _now: Instant) -> Engine {
        let mut videos = vec![std::mem::take(&mut config.clip.video)];
        videos.append(&mut config.clip.video_alternatives);
        let ladder = Ladder::new(videos);
        let audio = &config.clip.audio;
        let audio_bps = crate::ladder::wire_bitrate(
            audio.iter().map(|p| p.data.len()),
            Duration::from_micros(
                audio.iter().map(|p| u64::from(p.samples)).sum::<u64>() * 1000 / 48,
            ),
        );
        Engine {
            ladder,
            audio_bps,
            gather: Gatherer::new(config.relay_only, config.turn_tcp),
            config,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            my_id: None,
            resume: None,
            signaling_up: false,
            joined: false,
            links: BTreeMap::new(),
            out: VecDeque::new(),
            left: false,
            deferred: BTreeMap::new(),
        }
    }

    /// Our signaling id, once welcomed.
    pub fn id(&self) -> Option<&str> {
        self.my_id.as_deref()
    }

    /// Randomness from the caller (the core reads no entropy itself) for STUN and TURN transaction ids: without
    /// it they follow a fixed sequence, fine for deterministic tests, guessable on a network. Call it before
    /// [`Engine::add_socket`].
    pub fn seed(&mut self, seed: u64) {
        self.gather.seed(seed);
    }

    /// A socket of the caller's: its address becomes a host candidate (unless relay-only) and STUN/TURN go
    /// out from it.
    pub fn add_socket(&mut self, now: Instant, addr: SocketAddr) {
        self.gather.add_socket(now, addr);
        self.flush_gathered(now);
    }

    /// The signaling socket is open: join (or resume).
    pub fn signaling_connected(&mut self, _now: Instant) {
        self.signaling_up = true;
        self.joined = false;
        let mut join =
            json!({"type": "join", "v": 1, "room": self.config.room, "name": self.config.name});
        if let Some(p) = self.config.password.as_ref().filter(|p| !p.is_empty()) {
            join["password"] = json!(p);
        }
        if let Some(t) = &self.config.token {
            join["token"] = json!(t);
        }
        if let Some(r) = &self.resume {
            join["resume"] = json!(r);
        }
        self.signal(join);
    }

    /// The signaling socket dropped: media keeps flowing; ICE restarts wait until it is back.
    pub fn signaling_lost(&mut self, _now: Instant) {
        self.signaling_up = false;
        self.joined = false;
    }

    /// Leave the room: say bye over every data channel and `leave` over signaling.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        let ids: Vec<String> = self.links.keys().cloned().collect();
        for id in ids {
            self.send_data(&id, json!({"t": "bye"}), false);
        }
        if self.signaling_up {
            self.signal(json!({"type": "leave"}));
        }
        self.drive(now);
        for link in self.links.values_mut() {
            if let Some(rtc) = link.rtc.as_mut() {
                rtc.disconnect();
            }
        }
    }

    /// Sends a chat message to everyone (data channel, or signaling until it is open).
    pub fn say(&mut self, text: &str) {
        let ids: Vec<String> = self.links.keys().cloned().collect();
        for id in ids {
            self.say_to(&id, text);
        }
    }

    /// Sends a chat message to one peer.
    pub fn say_to(&mut self, id: &str, text: &str) {
        let text: String = text
            .chars()
            .take(MAX_CHAT)
            .collect::<String>()
            .trim()
            .to_string();
        if !text.is_empty() {
            self.send_data(id, json!({"t": "chat", "text": text}), true);
        }
    }

    /// The status of every peer, by id.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.links.values().map(|l| l.status.clone()).collect()
    }

    /// A host name asked for with [`Output::Resolve`] resolved (empty: it did not resolve).
    pub fn resolved(&mut self, now: Instant, host: &str, ips: &[IpAddr]) {
        self.gather.resolved(now, host, ips);
        self.flush_gathered(now);
    }

    /// The next thing to do, in order; `None` when there is nothing until the next input or timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.gather.poll_timeout();
        for (_, until, _) in self.deferred.values() {
            t = Some(t.map_or(*until, |t| t.min(*until)));
        }
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for l in self.links.values() {
            min(l.rtc_timeout);
            min(l.disconnected_since.map(|d| d + DISCONNECTED_GRACE));
            min(l.watchdog);
            min(l.first_offer_by);
            min(l.retry_at);
            min(l.orphan_down_since.map(|t| t + ORPHAN_WAIT));
            if l.status.connected {
                min(l.last_rx.map(|t| t + SILENCE));
                min(l.video.next_at);
                min(l.audio.next_at);
            }
        }
        t
    }

    fn signal(&mut self, v: Value) {
        self.out.push_back(Output::Signal(v.to_string()));
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// One text frame from the signaling server.
    pub fn handle_signal(&mut self, now: Instant, text: &str) -> Result<(), PeerError> {
        let msg: Value =
            serde_json::from_str(text).map_err(|e| PeerError::Signaling(e.to_string()))?;
        let Some(typ) = str_field(&msg, "type") else {
            return Err(PeerError::Signaling("message without a type".into()));
        };
        match typ {
            "welcome" => self.on_welcome(now, &msg),
            "peer-joined" => {
                let peer = msg.get("peer").unwrap_or(&Value::Null);
                if let Some(id) = str_field(peer, "id") {
                    let name = str_field(peer, "name").unwrap_or("").to_string();
                    if Some(id) != self.my_id.as_deref() && !self.links.contains_key(id) {
                        if self.links.values().any(|l| l.orphan) {
                            // An orphan may be this peer under its new id: wait for its claim.
                            self.deferred
                                .insert(id.to_string(), (name, now + ORPHAN_WAIT, true));
                            return self.finish_signal(now);
                        }
                        let id = id.to_string();
                        self.event(Event::PeerJoined {
                            id: id.clone(),
                            name: name.clone(),
                        });
                        // Those in the room offer to a newcomer (docs/protocol.md, "Who offers").
                        self.add_link(now, &id, &name, true);
                    }
                }
            }
            "peer-left" => {
                if let Some(id) = str_field(&msg, "id") {
                    self.remove(id);
                }
            }
            "peer-updated" => {
                let peer = msg.get("peer").unwrap_or(&Value::Null);
                if let (Some(id), Some(name)) = (str_field(peer, "id"), str_field(peer, "name"))
                    && let Some(l) = self.links.get_mut(id)
                {
                    l.status.name = name.to_string();
                }
            }
            "offer" | "answer" | "candidate" => {
                if let Some(from) = str_field(&msg, "from").map(str::to_string) {
                    self.on_peer_signal(now, &from, typ, &msg);
                }
            }
            "message" => {
                if let (Some(from), Some(data)) = (str_field(&msg, "from"), msg.get("data")) {
                    let from = from.to_string();
                    let data = data.clone();
                    self.on_app_data(now, &from, &data, false);
                }
            }
            "ice-servers" => {
                if let Some(servers) = msg.get("iceServers") {
                    self.gather
                        .set_ice_servers(now, &IceServer::parse_list(servers));
                    self.flush_gathered(now);
                }
            }
            "error" => {
                let code = str_field(&msg, "code").unwrap_or("").to_string();
                let message = str_field(&msg, "message").unwrap_or("").to_string();
                if FATAL_CODES.contains(&code.as_str()) && !self.joined {
                    self.event(Event::Fatal { code, message });
                } else {
                    self.event(Event::ServerError { code, message });
                }
            }
            _ => {}
        }
        self.finish_signal(now)
    }

    fn finish_signal(&mut self, now: Instant) -> Result<(), PeerError> {
        self.drive(now);
        Ok(())
    }

    fn on_welcome(&mut self, now: Instant, msg: &Value) {
        let Some(id) = str_field(msg, "id").map(str::to_string) else {
            return;
        };
        self.joined = true;
        if let Some(r) = str_field(msg, "resume") {
            self.resume = Some(r.to_string());
        }
        let resumed = msg.get("resumed").and_then(Value::as_bool).unwrap_or(false);
        let listed: Vec<(String, String)> = msg
            .get("peers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        Some((
                            str_field(p, "id")?.to_string(),
                            str_field(p, "name").unwrap_or("").to_string(),
                        ))
                    })
                    .filter(|(pid, _)| *pid != id)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(servers) = msg.get("iceServers") {
            self.gather
                .set_ice_servers(now, &IceServer::parse_list(servers));
        }
        let first = self.my_id.is_none();
        let new_session = !first && !resumed;
        if new_session {
            // A new session (the server restarted or our grace period ran out): our old id is gone, but
            // connections still up keep flowing peer to peer. As the browser's roster: tell each of them our new
            // id over its data channel, mark those not listed under their old id as orphans, and hold back
            // listed ids we do not know for a moment, since an orphan may claim one of them.
            let listed_ids: Vec<&String> = listed.iter().map(|(p, _)| p).collect();
            let ids: Vec<String> = self.links.keys().cloned().collect();
            for old in ids {
                let keep = self
                    .links
                    .get(&old)
                    .is_some_and(|l| l.status.connected && l.status.channel_open);
                if keep {
                    if let Some(l) = self.links.get_mut(&old) {
                        l.orphan = !listed_ids.contains(&&old);
                    }
                    self.send_data(&old, json!({"t": "id", "id": id}), false);
                } else {
                    self.remove_quiet(&old);
                }
            }
            self.deferred.clear();
        }
        self.my_id = Some(id.clone());
        if resumed {
            let present: Vec<&String> = listed.iter().map(|(p, _)| p).collect();
            let gone: Vec<String> = self
                .links
                .keys()
                .filter(|k| !present.contains(k))
                .cloned()
                .collect();
            for g in gone {
                if self.links.get(&g).is_some_and(|l| !l.orphan) {
                    self.remove(&g);
                }
            }
        }
        self.event(Event::Joined {
            id,
            peers: listed.len(),
            resumed,
        });
        let orphans = self.links.values().any(|l| l.orphan);
        for (pid, name) in listed {
            if self.links.contains_key(&pid) || self.deferred.contains_key(&pid) {
                continue;
            }
            if new_session && orphans {
                self.deferred.insert(pid, (name, now + ORPHAN_WAIT, false));
                continue;
            }
            // Resumed: they joined while we were away and their welcome listed us, so they wait for our offer.
            // Otherwise we are new to them (first join, or a new id that reached them as peer-joined): they offer.
            self.add_link(now, &pid, &name, resumed);
        }
        // Restarts that waited for signaling.
        let waiting: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| l.restart_wanted.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for pid in waiting {
            let reason = self
                .links
                .get(&pid)
                .and_then(|l| l.restart_wanted)
                .unwrap_or("deferred");
            self.restart_ice(now, &pid, reason);
        }
        self.flush_gathered(now);
    }

    fn remove(&mut self, id: &str) {
        if let Some(mut l) = self.links.remove(id) {
            if let Some(rtc) = l.rtc.as_mut() {
                rtc.disconnect();
            }
            self.event(Event::PeerLeft {
                id: id.to_string(),
                name: l.status.name,
            });
        }
    }

    fn remove_quiet(&mut self, id: &str) {
        if let Some(mut l) = self.links.remove(id)
            && let Some(rtc) = l.rtc.as_mut()
        {
            rtc.disconnect();
        }
    }

    fn new_rtc(&self, now: Instant) -> Rtc {
        let builder = Rtc::builder()
            .set_crypto_provider(self.crypto.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(Some(Duration::from_secs(1)));
        // Several encodings to choose from: ask str0m for an estimate (TWCC), probing up to the highest.
        let several = self.ladder.len() > 1;
        let builder = if several {
            builder.enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE)))
        } else {
            builder
        };
        let mut rtc = builder.build(now);
        if several {
            let top = self.ladder.bps(self.ladder.len() - 1);
            rtc.bwe()
                .set_desired_bitrate(Bitrate::bps((top + self.audio_bps) * 11 / 10));
        }
        rtc
    }

    fn add_local_candidates(gather: &Gatherer, rtc: &mut Rtc) {
        for c in gather.candidates() {
            rtc.add_local_candidate(c);
        }
    }

    /// A link to `id`: we make the first offer now (`we_offer`), or wait [`FIRST_OFFER_WAIT`] for theirs.
    fn add_link(&mut self, now: Instant, id: &str, name: &str, we_offer: bool) {
        let mut link = Link::new(id, name);
        if !we_offer {
            link.first_offer_by = Some(now + FIRST_OFFER_WAIT);
        }
        self.links.insert(id.to_string(), link);
        if we_offer {
            self.start_offer(now, id);
        }
    }

    /// A connection with one audio, one video transceiver and the data channel; offer.
    fn start_offer(&mut self, now: Instant, id: &str) {
        let mut rtc = self.new_rtc(now);
        Self::add_local_candidates(&self.gather, &mut rtc);
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let cid = api.add_channel_with_config(ChannelConfig {
            label: CHANNEL_LABEL.to_string(),
            ordered: true,
            negotiated: Some(0),
            ..ChannelConfig::default()
        });
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        let sdp = offer.to_sdp_string();
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.mids = vec![(audio, MediaKind::Audio), (video, MediaKind::Video)];
        link.channel = Some(cid);
        link.first_mid = sdp_attr(&sdp, "mid");
        link.rtc = Some(rtc);
        link.pending = Some(pending);
        link.pending_is_restart = false;
        link.first_offer_by = None;
        link.watchdog = Some(now + CONNECT_WATCHDOG);
        self.signal(json!({"type": "offer", "to": id, "sdp": sdp}));
    }

    fn on_peer_signal(&mut self, now: Instant, from: &str, typ: &str, msg: &Value) {
        if !self.links.contains_key(from) {
            if typ != "offer" {
                return;
            }
            // An offer: a newcomer, not an orphan (those never offer under a new id first).
            self.deferred.remove(from);
            // An offer from someone we have not heard join (it can overtake peer-joined): admit them.
            self.links.insert(from.to_string(), Link::new(from, ""));
        }
        let polite = self.my_id.as_deref().is_some_and(|me| me < from);
        match typ {
            "offer" | "answer" => {
                let Some(sdp) = str_field(msg, "sdp") else {
                    return;
                };
                if typ == "offer" {
                    self.on_offer(now, from, sdp, polite);
                } else {
                    self.on_answer(now, from, sdp);
                }
            }
            _ => {
                let Some(link) = self.links.get_mut(from) else {
                    return;
                };
                let Some(rtc) = link.rtc.as_mut() else {
                    return;
                };
                let Some(cand) = msg
                    .get("candidate")
                    .and_then(|c| c.get("candidate"))
                    .and_then(Value::as_str)
                else {
                    return; // null: end of candidates
                };
                if cand.is_empty() {
                    return;
                }
                match Candidate::from_sdp_string(cand) {
                    Ok(c) => {
                        link.remote_candidates.push((c.addr(), c.kind()));
                        self.gather.want_permission(now, c.addr());
                        rtc.add_remote_candidate(c);
                    }
                    Err(e) => tracing::debug!("candidate from {from} ignored: {e}"),
                }
            }
        }
    }

    fn on_offer(&mut self, now: Instant, from: &str, sdp: &str, polite: bool) {
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("bad offer from {from}: {e}");
                return;
            }
        };
        // Another connection of theirs (its SDP session id differs from the one we negotiated with): they lost ours
        // and started over; ours cannot be renegotiated into theirs, so we start over too.
        let session = sdp_session_id(sdp);
        if let Some(l) = self.links.get_mut(from)
            && l.remote_session.is_some()
            && session.is_some()
            && l.remote_session != session
        {
            tracing::info!("{from} started a new connection; replacing ours");
            if let Some(rtc) = l.rtc.as_mut() {
                rtc.disconnect();
            }
            let mut fresh = Link::new(from, &l.status.name);
            fresh.orphan = l.orphan;
            fresh.queued = std::mem::take(&mut l.queued);
            *l = fresh;
        }
        let fresh = self.links.get(from).is_some_and(|l| l.rtc.is_none());
        if fresh {
            let mut rtc = self.new_rtc(now);
            Self::add_local_candidates(&self.gather, &mut rtc);
            if let Some(l) = self.links.get_mut(from) {
                l.rtc = Some(rtc);
            }
        }
        let Some(link) = self.links.get_mut(from) else {
            return;
        };
        let collision = link.pending.is_some();
        if collision {
            link.status.collisions += 1;
            if !polite {
                return; // impolite: ignore their offer, ours wins
            }
        }
        if collision && !link.negotiated {
            // Our first offer is rolled back: its media and channel were never negotiated; theirs come instead.
            link.mids.clear();
            link.channel = None;
            link.first_mid = None;
        }
        link.first_offer_by = None;
        link.remote_session = session;
        let new_ufrag = sdp_attr(sdp, "ice-ufrag");
        let they_restarted = link.remote_ufrag.is_some() && new_ufrag != link.remote_ufrag;
        let rolled_back_restart = collision && link.pending_is_restart;
        link.pending = None; // accept_offer rolls our offer back
        link.pending_is_restart = false;
        let Some(rtc) = link.rtc.as_mut() else {
            return;
        };
        let answer = match rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("offer from {from} refused: {e}");
                return;
            }
        };
        if link.channel.is_none() {
            let mut api = rtc.sdp_api();
            let cid = api.add_channel_with_config(ChannelConfig {
                label: CHANNEL_LABEL.to_string(),
                ordered: true,
                negotiated: Some(0),
                ..ChannelConfig::default()
            });
            if api.apply().is_some() {
                tracing::warn!("data channel for {from} needed a negotiation");
            }
            link.channel = Some(cid);
        }
        link.remote_ufrag = new_ufrag;
        link.negotiated = true;
        let answer = answer.to_sdp_string();
        if link.first_mid.is_none() {
            link.first_mid = sdp_attr(&answer, "mid");
        }
        if !link.status.connected {
            link.watchdog = Some(now + CONNECT_WATCHDOG);
        }
        // A restart of ours that was rolled back is satisfied if their offer restarted ICE too.
        if rolled_back_restart && !they_restarted {
            link.restart_wanted = Some("rolled back");
        }
        self.signal(json!({"type": "answer", "to": from, "sdp": answer}));
        // Every remote candidate seen in the offer may need a TURN permission.
        for line in sdp.lines() {
            if let Some(c) = line.trim().strip_prefix("a=")
                && let Ok(c) = Candidate::from_sdp_string(c)
            {
                self.gather.want_permission(now, c.addr());
                if let Some(l) = self.links.get_mut(from) {
                    l.remote_candidates.push((c.addr(), c.kind()));
                }
            }
        }
        if let Some(l) = self.links.get_mut(from)
            && let Some(reason) = l.restart_wanted.take()
        {
            self.restart_ice(now, from, reason);
        }
    }

    fn on_answer(&mut self, now: Instant, from: &str, sdp: &str) {
        let Some(link) = self.links.get_mut(from) else {
            return;
        };
        let Some(pending) = link.pending.take() else {
            return; // an answer to an offer we no longer have
        };
        link.pending_is_restart = false;
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("bad answer from {from}: {e}");
                return;
            }
        };
        let Some(rtc) = link.rtc.as_mut() else {
            return;
        };
        if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
            tracing::warn!("answer from {from} refused: {e}");
            return;
        }
        link.remote_ufrag = sdp_attr(sdp, "ice-ufrag");
        link.remote_session = sdp_session_id(sdp);
        link.negotiated = true;
        for line in sdp.lines() {
            if let Some(c) = line.trim().strip_prefix("a=")
                && let Ok(c) = Candidate::from_sdp_string(c)
            {
                link.remote_candidates.push((c.addr(), c.kind()));
                self.gather.want_permission(now, c.addr());
            }
        }
    }

    /// ICE restart with `id`: new credentials, an offer. Waits when signaling is down or before the first
    /// negotiation completed.
    pub fn restart_ice(&mut self, now: Instant, id: &str, reason: &'static str) {
        let signaling = self.signaling_up && self.joined;
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        if !link.negotiated || link.rtc.is_none() || link.orphan {
            return; // an orphan cannot be signalled until it tells us its new id
        }
        if !signaling {
            link.restart_wanted = Some(reason);
            return;
        }
        if link.pending.is_some() {
            // An offer is out: the restart goes with the next one.
            link.restart_wanted = Some(reason);
            return;
        }
        link.restart_wanted = None;
        link.status.restarts += 1;
        let Some(rtc) = link.rtc.as_mut() else {
            return;
        };
        let mut api = rtc.sdp_api();
        api.ice_restart(true);
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        link.pending = Some(pending);
        link.pending_is_restart = true;
        let n = link.status.restarts.min(3);
        link.retry_at = Some(now + RESTART_RETRY * n);
        let sdp = offer.to_sdp_string();
        tracing::info!(
            "ICE restart with {id} ({reason}, #{})",
            link.status.restarts
        );
        self.signal(json!({"type": "offer", "to": id, "sdp": sdp}));
        self.event(Event::IceRestart {
            id: id.to_string(),
            reason,
        });
    }

    /// A datagram arrived on the caller's socket `destination` from `source`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        // STUN answers to our own binding and TURN requests, and TURN data, first.
        let delivered = match self.gather.handle_datagram(now, source, destination, data) {
            crate::gather::Handled::Consumed => None,
            crate::gather::Handled::Relayed { peer, relay, data } => Some((peer, relay, data)),
            crate::gather::Handled::NotMine => Some((source, destination, data.to_vec())),
        };
        self.deliver(now, delivered);
    }

    /// Bytes read from the TCP connection to TURN server `server`.
    pub fn handle_stream(&mut self, now: Instant, server: SocketAddr, data: &[u8]) {
        for (peer, relay, bytes) in self.gather.handle_stream(now, server, data) {
            self.deliver(now, Some((peer, relay, bytes)));
        }
        self.flush_gathered(now);
        self.drive(now);
    }

    /// The TCP connection to TURN server `server` closed or could not be opened.
    pub fn stream_closed(&mut self, now: Instant, server: SocketAddr) {
        self.gather.stream_closed(server);
        self.flush_gathered(now);
    }

    fn deliver(&mut self, now: Instant, delivered: Option<(SocketAddr, SocketAddr, Vec<u8>)>) {
        if let Some((src, dst, bytes)) = delivered {
            let Ok(contents) = bytes.as_slice().try_into() else {
                self.flush_gathered(now);
                return;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: src,
                    destination: dst,
                    contents,
                },
            );
            for link in self.links.values_mut() {
                if let Some(rtc) = link.rtc.as_mut()
                    && rtc.accepts(&input)
                {
                    if let Err(e) = rtc.handle_input(input) {
                        tracing::debug!("input for {}: {e}", link.status.id);
                    }
                    link.last_rx = Some(now);
                    if !link.status.connected
                        && link.status.ever_connected
                        && matches!(
                            link.ice,
                            IceConnectionState::Connected | IceConnectionState::Completed
                        )
                    {
                        // Back after a silence that str0m did not count as a disconnection.
                        link.status.connected = true;
                        link.disconnected_since = None;
                        let (id, name) = (link.status.id.clone(), link.status.name.clone());
                        self.out
                            .push_back(Output::Event(Event::Connected { id, name }));
                    }
                    break;
                }
            }
        }
        self.flush_gathered(now);
        self.drive(now);
    }

    /// Time passed: timers, media out, every Rtc's timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.gather.handle_timeout(now);
        self.flush_gathered(now);
        let due: Vec<String> = self
            .deferred
            .iter()
            .filter(|(_, (_, until, _))| now >= *until)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some((name, _, joined)) = self.deferred.remove(&id) else {
                continue;
            };
            // Unclaimed: someone new. An orphan of the same name whose connection is down is stale.
            let stale: Vec<String> = self
                .links
                .iter()
                .filter(|(_, l)| l.orphan && !l.status.connected && l.status.name == name)
                .map(|(k, _)| k.clone())
                .collect();
            for s in stale {
                self.remove_quiet(&s);
            }
            if !self.links.contains_key(&id) {
                if joined {
                    self.event(Event::PeerJoined {
                        id: id.clone(),
                        name: name.clone(),
                    });
                }
                self.add_link(now, &id, &name, joined);
            }
        }
        let ids: Vec<String> = self.links.keys().cloned().collect();
        for id in &ids {
            let Some(link) = self.links.get_mut(id) else {
                continue;
            };
            if link.orphan {
                if link.status.connected {
                    link.orphan_down_since = None;
                } else if now >= *link.orphan_down_since.get_or_insert(now) + ORPHAN_WAIT {
                    tracing::info!("{id} lost its session and its connection; dropped");
                    self.remove_quiet(id);
                    continue;
                }
            }
            let mut restart = None;
            if link.status.connected && link.last_rx.is_some_and(|t| now >= t + SILENCE) {
                link.status.connected = false;
                link.disconnected_since = Some(now);
                let (pid, name) = (link.status.id.clone(), link.status.name.clone());
                self.out
                    .push_back(Output::Event(Event::Disconnected { id: pid, name }));
            }
            if link
                .disconnected_since
                .is_some_and(|d| now >= d + DISCONNECTED_GRACE)
            {
                link.disconnected_since = None;
                restart = Some("disconnected");
            }
            if link.watchdog.is_some_and(|w| now >= w) {
                link.watchdog = None;
                if !link.status.connected {
                    restart = Some("timeout");
                }
            }
            if link.first_offer_by.is_some_and(|t| now >= t) {
                link.first_offer_by = None;
                if link.rtc.is_none() {
                    tracing::info!("no offer from {id} after {FIRST_OFFER_WAIT:?}; offering");
                    self.start_offer(now, id);
                    continue;
                }
            }
            if link.retry_at.is_some_and(|r| now >= r) {
                link.retry_at = None;
                if !link.status.connected {
                    restart = Some("retry");
                }
            }
            if let Some(reason) = restart {
                self.restart_ice(now, id, reason);
            }
            self.send_media(now, id);
        }
        self.drive(now);
    }

    fn send_media(&mut self, now: Instant, id: &str) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        if !link.status.connected {
            return;
        }
        let clip = &self.config.clip;
        let ladder = &self.ladder;
        let audio_bps = self.audio_bps;
        let Some(rtc) = link.rtc.as_mut() else {
            return;
        };
        if !ladder.is_empty()
            && let Some(mid) = link
                .mids
                .iter()
                .find(|(_, k)| *k == MediaKind::Video)
                .map(|m| m.0)
        {
            let choice = choice_of(&mut link.choice, ladder, audio_bps);
            let cur = &mut link.video;
            let mut next = *cur.next_at.get_or_insert(now);
            if now.saturating_duration_since(next) > Duration::from_secs(1) {
                next = now; // we were stalled: do not burst
            }
            while next <= now {
                // A switch of encoding happens here, at a keyframe of the new one.
                cur.index = choice.before_frame(ladder, now, cur.index);
                let frames = ladder.frames(choice.current);
                if frames.is_empty() {
                    break;
                }
                let index = cur.index % frames.len();
                let Some(frame) = frames.get(index) else {
                    break;
                };
                let pt = payload_type(rtc, mid, Codec::Vp8);
                if let (Some(pt), Some(writer)) = (pt.map(|p| p.pt()), rtc.writer(mid)) {
                    let t = MediaTime::new(cur.rtp, Frequency::NINETY_KHZ);
                    if writer.write(pt, next, t, frame.data.clone()).is_ok() {
                        link.status.video_frames_tx += 1;
                    }
                }
                cur.rtp += (frame.duration.as_micros() as u64 * 9) / 100;
                cur.index += 1;
                next += frame.duration;
            }
            cur.next_at = Some(next);
            link.status.video_bps = Some(ladder.bps(choice.current));
            link.status.video_encoding = (choice.current, ladder.len());
            link.status.video_switches = choice.switches;
        }
        if !clip.audio.is_empty()
            && let Some(mid) = link
                .mids
                .iter()
                .find(|(_, k)| *k == MediaKind::Audio)
                .map(|m| m.0)
        {
            let cur = &mut link.audio;
            let mut next = *cur.next_at.get_or_insert(now);
            if now.saturating_duration_since(next) > Duration::from_secs(1) {
                next = now;
            }
            while next <= now {
                let index = cur.index % clip.audio.len();
                let Some(packet) = clip.audio.get(index) else {
                    break;
                };
                let pt = payload_type(rtc, mid, Codec::Opus);
                if let (Some(pt), Some(writer)) = (pt.map(|p| p.pt()), rtc.writer(mid)) {
                    let t = MediaTime::new(cur.rtp, Frequency::FORTY_EIGHT_KHZ);
                    if writer.write(pt, next, t, packet.data.clone()).is_ok() {
                        link.status.audio_packets_tx += 1;
                    }
                }
                cur.rtp += u64::from(packet.samples);
                cur.index = index + 1;
                next += Duration::from_micros(u64::from(packet.samples) * 1_000_000 / 48_000);
            }
            cur.next_at = Some(next);
        }
    }

    /// Keyframe asked for: restart the clip's current group of pictures (its keyframe) for that peer, in the
    /// encoding it should get (a pending switch of encoding is made now).
    fn keyframe_requested(&mut self, id: &str) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.status.keyframe_requests += 1;
        if self.ladder.is_empty() {
            return;
        }
        let audio_bps = self.audio_bps;
        let ladder = &self.ladder;
        let choice = choice_of(&mut link.choice, ladder, audio_bps);
        link.video.index = choice.keyframe_requested(ladder, link.video.index);
    }

    /// A bandwidth estimate toward `id` (str0m's TWCC estimator, or the peer's REMB).
    fn estimate(&mut self, now: Instant, id: &str, bps: u64) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.status.estimate_bps = Some(bps);
        if self.ladder.len() < 2 {
            return;
        }
        let audio_bps = self.audio_bps;
        let ladder = &self.ladder;
        let choice = choice_of(&mut link.choice, ladder, audio_bps);
        choice.on_estimate(ladder, now, bps, bps.saturating_sub(audio_bps));
    }

    fn send_data(&mut self, id: &str, data: Value, fallback_signaling: bool) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let text = data.to_string();
        if link.status.channel_open
            && let (Some(cid), Some(rtc)) = (link.channel, link.rtc.as_mut())
            && let Some(mut ch) = rtc.channel(cid)
            && ch.write(false, text.as_bytes()).is_ok()
        {
            return;
        }
        if fallback_signaling && self.signaling_up && self.joined {
            self.signal(json!({"type": "message", "to": id, "data": data}));
        } else if fallback_signaling {
            link.queued.push(data);
        }
    }

    /// The peer known as `old` says (over its DTLS-authenticated data channel) that its id is now `new`.
    fn rekey(&mut self, now: Instant, old: &str, new: &str) {
        self.deferred.remove(new);
        if let Some(other) = self.links.get(new) {
            if !other.orphan && other.status.connected {
                // A live connection already answers to that id. If the claimer is a stale copy (its session
                // was lost), it goes; otherwise it claims someone else's id: ignored (as the browser's roster).
                if self.links.get(old).is_some_and(|l| l.orphan) {
                    self.remove_quiet(old);
                } else {
                    tracing::warn!("{old} claimed the id of {new}, which is connected; ignored");
                }
                return;
            }
            // A fresh link made for the new id before we learned who it is: keep the established connection.
            self.remove_quiet(new);
        }
        let Some(mut link) = self.links.remove(old) else {
            return;
        };
        link.status.id = new.to_string();
        link.orphan = false;
        link.orphan_down_since = None;
        let name = link.status.name.clone();
        let restart = link.restart_wanted;
        self.links.insert(new.to_string(), link);
        tracing::info!("peer {old} is now {new}");
        self.event(Event::Rekeyed {
            old: old.to_string(),
            id: new.to_string(),
            name,
        });
        // A restart that wanted doing while we could not signal them can go now.
        if let Some(reason) = restart {
            self.restart_ice(now, new, reason);
        }
    }

    fn on_app_data(&mut self, now: Instant, from: &str, data: &Value, via_channel: bool) {
        let Some(t) = str_field(data, "t") else {
            return;
        };
        let name = self
            .links
            .get(from)
            .map(|l| l.status.name.clone())
            .unwrap_or_default();
        match t {
            "chat" => {
                if let Some(text) = str_field(data, "text") {
                    let text: String = text
                        .chars()
                        .take(MAX_CHAT)
                        .collect::<String>()
                        .trim()
                        .to_string();
                    if !text.is_empty() {
                        self.event(Event::Chat {
                            from: from.to_string(),
                            name,
                            text,
                        });
                    }
                }
            }
            "bye" => self.remove(from),
            "id" if via_channel => {
                if let Some(new_id) = str_field(data, "id")
                    && !new_id.is_empty()
                    && new_id.len() <= MAX_CLAIMED_ID
                    && new_id != from
                    && Some(new_id) != self.my_id.as_deref()
                {
                    self.rekey(now, from, new_id);
                }
            }
            _ => {}
        }
    }

    fn local_state(&self) -> Value {
        json!({
            "t": "state",
            "audio": !self.config.clip.audio.is_empty(),
            "video": !self.ladder.is_empty(),
            "screen": false,
        })
    }

    /// Candidates gathered since the last call go to every connection (and as trickle candidates to the peer);
    /// datagrams the gatherer wants sent go out.
    fn flush_gathered(&mut self, _now: Instant) {
        while let Some(t) = self.gather.poll_transmit() {
            self.out.push_back(Output::Transmit(t));
        }
        while let Some(host) = self.gather.poll_resolve() {
            self.out.push_back(Output::Resolve(host));
        }
        let fresh = self.gather.take_new_candidates();
        if fresh.is_empty() {
            return;
        }
        let mut signals = Vec::new();
        for (id, link) in self.links.iter_mut() {
            let Some(rtc) = link.rtc.as_mut() else {
                continue;
            };
            for c in &fresh {
                if let Some(added) = rtc.add_local_candidate(c.clone()) {
                    signals.push(json!({
                        "type": "candidate",
                        "to": id,
                        "candidate": {
                            "candidate": added.to_sdp_string(),
                            "sdpMid": link.first_mid,
                            "sdpMLineIndex": 0,
                        }
                    }));
                }
            }
        }
        if self.signaling_up && self.joined {
            for s in signals {
                self.signal(s);
            }
        }
    }

    /// Polls every Rtc until it has nothing more to say.
    fn drive(&mut self, now: Instant) {
        let ids: Vec<String> = self.links.keys().cloned().collect();
        for id in ids {
            let mut events = Vec::new();
            let mut transmits = Vec::new();
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            let Some(rtc) = link.rtc.as_mut() else {
                continue;
            };
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!("timeout for {id}: {e}");
            }
            loop {
                if !rtc.is_alive() {
                    link.rtc_timeout = None;
                    break;
                }
                match rtc.poll_output() {
                    Ok(RtcOutput::Timeout(t)) => {
                        link.rtc_timeout = Some(t.max(now));
                        break;
                    }
                    Ok(RtcOutput::Transmit(t)) => transmits.push(t),
                    Ok(RtcOutput::Event(e)) => events.push(e),
                    Err(e) => {
                        tracing::warn!("connection to {id} failed: {e}");
                        link.rtc_timeout = None;
                        break;
                    }
                }
            }
            for t in transmits {
                let contents: Vec<u8> = t.contents.to_vec();
                if let Some(t) = self
                    .gather
                    .wrap_transmit(now, t.source, t.destination, contents)
                {
                    self.out.push_back(Output::Transmit(t));
                }
            }
            for e in events {
                self.on_rtc_event(now, &id, e);
            }
        }
        while let Some(t) = self.gather.poll_transmit() {
            self.out.push_back(Output::Transmit(t));
        }
    }

    fn on_rtc_event(&mut self, now: Instant, id: &str, e: RtcEvent) {
        let record = self.config.record;
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        match e {
            RtcEvent::IceConnectionStateChange(state) => {
                link.ice = state;
                match state {
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        link.disconnected_since = None;
                        link.watchdog = None;
                        link.retry_at = None;
                        link.status.restarts = 0;
                        if !link.status.connected {
                            link.status.connected = true;
                            link.status.ever_connected = true;
                            let name = link.status.name.clone();
                            self.event(Event::Connected {
                                id: id.to_string(),
                                name,
                            });
                        }
                    }
                    IceConnectionState::Disconnected => {
                        link.disconnected_since = Some(now);
                        if link.status.connected {
                            link.status.connected = false;
                            let name = link.status.name.clone();
                            self.event(Event::Disconnected {
                                id: id.to_string(),
                                name,
                            });
                        }
                    }
                    _ => {}
                }
            }
            RtcEvent::MediaAdded(m)
                if link.kind_of(m.mid).is_none() && link.mid_of(m.kind).is_none() =>
            {
                link.mids.push((m.mid, m.kind));
            }
            RtcEvent::MediaData(d) => {
                let Some(kind) = link.kind_of(d.mid) else {
                    return;
                };
                let kind = if kind == MediaKind::Video {
                    link.status.video_frames_rx += 1;
                    if !d.contiguous
                        && link
                            .last_pli
                            .is_none_or(|t| now >= t + Duration::from_secs(1))
                        && let Some(rtc) = link.rtc.as_mut()
                        && let Some(mut w) = rtc.writer(d.mid)
                    {
                        link.last_pli = Some(now);
                        let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                    }
                    Kind::Video
                } else {
                    link.status.audio_packets_rx += 1;
                    Kind::Audio
                };
                if record {
                    let freq = if kind == Kind::Video {
                        Frequency::NINETY_KHZ
                    } else {
                        Frequency::FORTY_EIGHT_KHZ
                    };
                    let rtp = d.time.rebase(freq).numer();
                    let name = link.status.name.clone();
                    self.event(Event::Media {
                        peer: id.to_string(),
                        name,
                        kind,
                        rtp,
                        data: d.data,
                        contiguous: d.contiguous,
                    });
                }
            }
            RtcEvent::KeyframeRequest(_) => self.keyframe_requested(id),
            RtcEvent::EgressBitrateEstimate(kind) => {
                let bps = match kind {
                    BweKind::Twcc { estimate, .. } => estimate.as_u64(),
                    BweKind::Remb { estimate, .. } => estimate.as_u64(),
                    _ => return,
                };
                self.estimate(now, id, bps);
            }
            RtcEvent::ChannelOpen(cid, _)
                if Some(cid) == link.channel || link.channel.is_none() =>
            {
                link.channel = Some(cid);
                link.status.channel_open = true;
                let queued = std::mem::take(&mut link.queued);
                let state = self.local_state();
                self.send_data(id, state, false);
                for q in queued {
                    self.send_data(id, q, true);
                }
            }
            RtcEvent::ChannelClose(cid) if Some(cid) == link.channel => {
                link.status.channel_open = false;
            }
            RtcEvent::ChannelData(d) => {
                if d.binary || d.data.len() > MAX_DATA_BYTES {
                    return;
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&d.data) {
                    let from = id.to_string();
                    self.on_app_data(now, &from, &v, true);
                }
            }
            RtcEvent::PeerStats(s) => {
                link.status.rtt = s.rtt;
                link.status.bytes_rx = s.peer_bytes_rx;
                link.status.bytes_tx = s.peer_bytes_tx;
                if let Some(pair) = s.selected_candidate_pair {
                    let local = self.gather.kind_of(pair.local.addr);
                    link.status.relay_transport = self.gather.relay_transport(pair.local.addr);
                    let remote = link
                        .remote_candidates
                        .iter()
                        .rev()
                        .find(|(a, _)| *a == pair.remote.addr)
                        .map(|(_, k)| *k);
                    let relay = local == Some(LocalKind::Relay)
                        || remote == Some(str0m::CandidateKind::Relayed);
                    let srflx = local == Some(LocalKind::Srflx)
                        || matches!(
                            remote,
                            Some(str0m::CandidateKind::ServerReflexive)
                                | Some(str0m::CandidateKind::PeerReflexive)
                        );
                    link.status.route = Some(if relay {
                        Route::Relay
                    } else if srflx {
                        Route::Srflx
                    } else {
                        Route::Host
                    });
                }
            }
            RtcEvent::MediaEgressStats(s) if s.remote.is_some() => match link.kind_of(s.mid) {
                Some(MediaKind::Video) => link.status.video_acked = true,
                Some(MediaKind::Audio) => link.status.audio_acked = true,
                None => {}
            },
            _ => {}
        }
    }
}

/// A link's encoding choice, made on first use from the initial estimate less the audio (`choice` is the link's
/// field, taken alone so the caller may hold its other fields).
fn choice_of<'a>(
    choice: &'a mut Option<Choice>,
    ladder: &Ladder,
    audio_bps: u64,
) -> &'a mut Choice {
    choice.get_or_insert_with(|| Choice::new(ladder, INITIAL_ESTIMATE.saturating_sub(audio_bps)))
}
