//! Wire types of `docs/protocol.md`: parsing of client frames and serialization of server messages.
//!
//! Forwarded payloads (`sdp`, `candidate`, `data`) are kept as raw JSON text: the server checks their type
//! and passes them on without rebuilding them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// Protocol version carried in every server message and required in `join`.
pub const VERSION: u64 = 1;

/// Longest `room`, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest `name`, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest room `password`, in characters.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest join `token`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 2048;
/// Longest `resume` token, in bytes.
pub const MAX_RESUME_BYTES: usize = 128;
/// Longest peer id accepted in `to`, in bytes.
pub const MAX_PEER_ID_BYTES: usize = 64;

/// `error.code` values (docs/protocol.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `bad-json`: the frame is not a JSON object, or it is a binary frame. The connection is kept.
    BadJson,
    /// `unknown-type`: `type` is missing or names no client message. Kept.
    UnknownType,
    /// `bad-field`: a field is missing, of the wrong type or out of range (`message` names it). Kept.
    BadField,
    /// `too-large`: the frame is over the size limit ([`crate::SignalConfig::max_message_bytes`]). Kept; a frame
    /// over twice the limit drops the connection without a frame.
    TooLarge,
    /// `rate-limited`: more messages per second than [`crate::SignalConfig::max_messages_per_sec`]. Kept.
    RateLimited,
    /// `not-joined`: a message that needs a room (anything but `join` and `ping`) before `join`. Kept.
    NotJoined,
    /// `already-joined`: a second `join` on one connection. Kept.
    AlreadyJoined,
    /// `unknown-peer`: `to` names no peer of the sender's room. Kept.
    UnknownPeer,
    /// `unsupported-version`: `join.v` is not [`VERSION`]. Kept.
    UnsupportedVersion,
    /// `room-full`: the room holds [`crate::SignalConfig::max_peers_per_room`] peers (grace-period peers
    /// count). Closes the connection.
    RoomFull,
    /// `wrong-password`: the room has a password and the join's does not match. Closes.
    WrongPassword,
    /// `bad-token`: token auth is on and the join token is missing, forged, expired or for another room.
    /// Closes.
    BadToken,
    /// `too-many-rooms`: creating the room would pass [`crate::SignalConfig::max_rooms`]. Closes.
    TooManyRooms,
    /// `too-many-connections`: the client address holds [`crate::SignalConfig::max_connections_per_ip`]
    /// connections already. Closes.
    TooManyConnections,
    /// `too-many-joins`: the address joined or created rooms too often in the last minute, or is backing off
    /// after failed joins (`message` says how many seconds to wait). Closes.
    TooManyJoins,
    /// `abuse`: [`crate::SignalConfig::max_consecutive_errors`] errors in a row; the server gives up on the
    /// connection. Closes.
    Abuse,
    /// `unavailable`: the cluster store (Redis) cannot be reached, so a join that needs it cannot be admitted
    /// now; clients retry with back-off. Closes.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadField,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::UnsupportedVersion,
        ErrorCode::RoomFull,
        ErrorCode::WrongPassword,
        ErrorCode::BadToken,
        ErrorCode::TooManyRooms,
        ErrorCode::TooManyConnections,
        ErrorCode::TooManyJoins,
        ErrorCode::Abuse,
        ErrorCode::Unavailable,
    ];

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BadField => "bad-field",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::WrongPassword => "wrong-password",
            ErrorCode::BadToken => "bad-token",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::TooManyConnections => "too-many-connections",
            ErrorCode::TooManyJoins => "too-many-joins",
            ErrorCode::Abuse => "abuse",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Position in [`ErrorCode::ALL`] (for counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused client frame: the `error` message to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// What kind of refusal (`error.code`).
    pub code: ErrorCode,
    /// Human-readable detail for the client (`error.message`): which field, which limit.
    pub message: Cow<'static, str>,
    /// The `type` of the refused message, when it was recognised.
    pub ref_type: Option<&'static str>,
}

impl ProtocolError {
    /// A refusal with `code`; `ref_type` is the `type` of the refused message when it was recognised.
    pub fn new(
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
        ref_type: Option<&'static str>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            ref_type,
        }
    }

    /// The `error` message for the client.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
            ref_type: self.ref_type,
        }
    }
}

/// The four message kinds relayed from one peer to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardKind {
    /// `offer`: an SDP offer (also an ICE restart), payload field `sdp`.
    Offer,
    /// `answer`: an SDP answer, payload field `sdp`.
    Answer,
    /// `candidate`: one ICE candidate (`RTCIceCandidateInit`) or `null` for end-of-candidates, field
    /// `candidate`.
    Candidate,
    /// `message`: a small application message (any JSON value), field `data`.
    Message,
}

impl ForwardKind {
    /// The `type` on the wire.
    pub fn type_name(self) -> &'static str {
        match self {
            ForwardKind::Offer => "offer",
            ForwardKind::Answer => "answer",
            ForwardKind::Candidate => "candidate",
            ForwardKind::Message => "message",
        }
    }

    /// The payload field name.
    pub fn field(self) -> &'static str {
        match self {
            ForwardKind::Offer | ForwardKind::Answer => "sdp",
            ForwardKind::Candidate => "candidate",
            ForwardKind::Message => "data",
        }
    }
}

/// `join`. `v` has been checked by the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// Room name: 1 to [`MAX_ROOM_CHARS`] characters of `[A-Za-z0-9_-]` ([`valid_room`]).
    pub room: String,
    /// Trimmed display name.
    pub name: String,
    /// Room password; `None` when absent or empty.
    pub password: Option<String>,
    /// Signed join token ([`crate::token`]); checked only when token auth is on.
    pub token: Option<String>,
    /// The resume token of an earlier `welcome`: asks for the same peer id back within the grace period.
    pub resume: Option<String>,
}

/// `offer`, `answer`, `candidate` or `message`: a payload for one peer of the room.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Which of the four messages; fixes the payload's field name.
    pub kind: ForwardKind,
    /// Peer id of the receiver (a peer of the sender's room).
    pub to: String,
    /// The payload as raw JSON text (a string for `sdp`, an object or `null` for `candidate`, anything for
    /// `data`).
    pub payload: Box<RawValue>,
}

/// A message from a client, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `join`: enter a room; must be the first message (only `ping` may come before it).
    Join(Join),
    /// `offer`, `answer`, `candidate` or `message` for one peer of the room.
    Forward(Forward),
    /// `rename`: a new display name; the others get `peer-updated`. Refused when a join token fixed the name.
    Rename {
        /// The new name, trimmed, 1 to [`MAX_NAME_CHARS`] characters.
        name: String,
    },
    /// `ping`: application-level keepalive, answered with `pong`.
    Ping,
    /// `leave`: leave the room now, skipping the resume grace period; the server closes the socket.
    Leave,
}

/// Client message types, for counters (`messages by type`).
pub const CLIENT_TYPES: [&str; 8] = [
    "join",
    "offer",
    "answer",
    "candidate",
    "message",
    "rename",
    "ping",
    "leave",
];

impl ClientMessage {
    /// The `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Forward(f) => f.kind.type_name(),
            ClientMessage::Rename { .. } => "rename",
            ClientMessage::Ping => "ping",
            ClientMessage::Leave => "leave",
        }
    }

    /// Index in [`CLIENT_TYPES`].
    pub fn type_index(&self) -> usize {
        match self {
            ClientMessage::Join(_) => 0,
            ClientMessage::Forward(f) => match f.kind {
                ForwardKind::Offer => 1,
                ForwardKind::Answer => 2,
                ForwardKind::Candidate => 3,
                ForwardKind::Message => 4,
            },
            ClientMessage::Rename { .. } => 5,
            ClientMessage::Ping => 6,
            ClientMessage::Leave => 7,
        }
    }

    /// Parses one text frame. Does not check the size limit (see [`crate::session`]).
    pub fn parse(frame: &[u8]) -> Result<ClientMessage, ProtocolError> {
        parse_client(frame)
    }
}

/// Serializes a client message the way a client sends it (`join` carries `"v": 1`); for native clients and
/// the load generator.
impl Serialize for ClientMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.type_name())?;
        match self {
            ClientMessage::Join(j) => {
                m.serialize_entry("v", &VERSION)?;
                m.serialize_entry("room", &j.room)?;
                m.serialize_entry("name", &j.name)?;
                if let Some(p) = &j.password {
                    m.serialize_entry("password", p)?;
                }
                if let Some(t) = &j.token {
                    m.serialize_entry("token", t)?;
                }
                if let Some(r) = &j.resume {
                    m.serialize_entry("resume", r)?;
                }
            }
            ClientMessage::Forward(f) => {
                m.serialize_entry("to", &f.to)?;
                m.serialize_entry(f.kind.field(), &f.payload)?;
            }
            ClientMessage::Rename { name } => m.serialize_entry("name", name)?,
            ClientMessage::Ping | ClientMessage::Leave => {}
        }
        m.end()
    }
}

/// `{id, name}` of a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerInfo {
    /// Opaque peer id chosen by the server, unique within the room (cluster-wide with `--redis`).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs sharing the credential below.
    pub urls: Vec<String>,
    /// TURN REST username, `EXPIRY:PEERID` (expiry in Unix seconds); `None` for STUN.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    /// TURN REST password: base64 of HMAC-SHA1(secret, username); `None` for STUN.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
}

/// The value of `welcome.polite`: the polite side of a pair is the peer whose id sorts lower.
pub const POLITE_RULE: &str = "lower-id";

/// A message from the server. Serializes with `"v": 1` and `"type"` first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `welcome`: the join succeeded (serialized with `polite`, always [`POLITE_RULE`]).
    Welcome {
        /// The joiner's peer id.
        id: String,
        /// The room joined.
        room: String,
        /// The other peers of the room (on resume: the current list, replacing the client's).
        peers: Vec<PeerInfo>,
        /// `iceServers`: STUN/TURN URLs with fresh TURN credentials; empty without a TURN server.
        ice_servers: Vec<IceServer>,
        /// Secret resume token, new with every `welcome`: the client keeps the latest.
        resume: String,
        /// Whether this `join` got an earlier session back (same id, nobody saw it leave).
        resumed: bool,
    },
    /// `peer-joined`: someone entered the room.
    PeerJoined {
        /// The newcomer.
        peer: PeerInfo,
    },
    /// `peer-left`: someone left, or stayed away longer than the resume grace period.
    PeerLeft {
        /// The id of the peer that left.
        id: String,
    },
    /// `peer-updated`: someone renamed.
    PeerUpdated {
        /// The peer with its new name.
        peer: PeerInfo,
    },
    /// `offer` / `answer` / `candidate` / `message`, stamped with the sender's id.
    Forward {
        /// Which message; fixes the payload's field name.
        kind: ForwardKind,
        /// The sender's peer id, stamped by the server (whatever the client wrote).
        from: String,
        /// The payload as the sender wrote it, raw JSON text.
        payload: Box<RawValue>,
    },
    /// `ice-servers`: fresh TURN credentials, sent at 80 % of the old ones' lifetime.
    IceServers {
        /// Same shape as `welcome`'s.
        ice_servers: Vec<IceServer>,
    },
    /// `pong`: the answer to `ping`.
    Pong,
    /// `error`: something the client sent was refused.
    Error {
        /// Which refusal; tells the client whether the connection stays open.
        code: ErrorCode,
        /// `message`: human-readable detail (which field, which limit, how long to wait).
        message: Cow<'static, str>,
        /// `ref`: the `type` of the refused message, when it was recognised.
        ref_type: Option<&'static str>,
    },
}

impl ServerMessage {
    /// The `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::PeerJoined { .. } => "peer-joined",
            ServerMessage::PeerLeft { .. } => "peer-left",
            ServerMessage::PeerUpdated { .. } => "peer-updated",
            ServerMessage::Forward { kind, .. } => kind.type_name(),
            ServerMessage::IceServers { .. } => "ice-servers",
            ServerMessage::Pong => "pong",
            ServerMessage::Error { .. } => "error",
        }
    }

    /// An `error` message.
    pub fn error(
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
        ref_type: Option<&'static str>,
    ) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            ref_type,
        }
    }

    /// The error code, if this is an `error`.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serializing these types into a String has no failure path: map keys are strings, the raw payloads
        // are valid JSON (checked on the way in), and writing to a Vec cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!("cannot serialize a {} message: {e}", self.type_name());
            String::from(r#"{"v":1,"type":"error","code":"bad-json","message":"internal serialization error"}"#)
        })
    }
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("v", &VERSION)?;
        m.serialize_entry("type", self.type_name())?;
        match self {
            ServerMessage::Welcome {
                id,
                room,
                peers,
                ice_servers,
                resume,
                resumed,
            } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("room", room)?;
                m.serialize_entry("peers", peers)?;
                m.serialize_entry("iceServers", ice_servers)?;
                m.serialize_entry("resume", resume)?;
                m.serialize_entry("resumed", resumed)?;
                m.serialize_entry("polite", POLITE_RULE)?;
            }
            ServerMessage::PeerJoined { peer } | ServerMessage::PeerUpdated { peer } => {
                m.serialize_entry("peer", peer)?;
            }
            ServerMessage::PeerLeft { id } => m.serialize_entry("id", id)?,
            ServerMessage::Forward {
                kind,
                from,
                payload,
            } => {
                m.serialize_entry("from", from)?;
                m.serialize_entry(kind.field(), payload)?;
            }
            ServerMessage::IceServers { ice_servers } => {
                m.serialize_entry("iceServers", ice_servers)?
            }
            ServerMessage::Pong => {}
            ServerMessage::Error {
                code,
                message,
                ref_type,
            } => {
                m.serialize_entry("code", code.as_str())?;
                m.serialize_entry("message", message)?;
                if let Some(r) = ref_type {
                    m.serialize_entry("ref", r)?;
                }
            }
        }
        m.end()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Parsing

/// Every field any client message may carry, each kept as raw JSON. Unknown fields (`from` included) are
/// ignored. A present `null` is `Some("null")`, so `candidate: null` is told apart from a missing field.
#[derive(serde::Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    v: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    password: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    resume: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    sdp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    candidate: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

fn bad_field(ty: &'static str, message: impl Into<Cow<'static, str>>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadField, message, Some(ty))
}

/// Parses and validates one client frame (see [`ClientMessage::parse`]).
pub fn parse_client(frame: &[u8]) -> Result<ClientMessage, ProtocolError> {
    // serde would accept a JSON array for a struct; the protocol wants an object.
    let first = frame.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        return Err(ProtocolError::new(
            ErrorCode::BadJson,
            "expected a JSON object",
            None,
        ));
    }
    let wire: Wire<'_> = serde_json::from_slice(frame).map_err(|e| {
        let mut text = e.to_string();
        text.truncate(200);
        ProtocolError::new(ErrorCode::BadJson, format!("invalid JSON: {text}"), None)
    })?;
    let Some(ty) = wire.ty else {
        return Err(ProtocolError::new(
            ErrorCode::UnknownType,
            "the message has no \"type\"",
            None,
        ));
    };
    let Ok(ty) = serde_json::from_str::<Cow<'_, str>>(ty.get()) else {
        return Err(ProtocolError::new(
            ErrorCode::UnknownType,
            "\"type\" must be a string",
            None,
        ));
    };
    match &*ty {
        "join" => parse_join(&wire).map(ClientMessage::Join),
        "offer" => parse_forward(&wire, ForwardKind::Offer),
        "answer" => parse_forward(&wire, ForwardKind::Answer),
        "candidate" => parse_forward(&wire, ForwardKind::Candidate),
        "message" => parse_forward(&wire, ForwardKind::Message),
        "rename" => {
            let name = req_string(wire.name, "rename", "name")?;
            Ok(ClientMessage::Rename {
                name: valid_name(&name, "rename")?,
            })
        }
        "ping" => Ok(ClientMessage::Ping),
        "leave" => Ok(ClientMessage::Leave),
        other => {
            let mut shown: String = other.chars().take(40).collect();
            shown.retain(|c| !c.is_control());
            Err(ProtocolError::new(
                ErrorCode::UnknownType,
                format!("unknown message type \"{shown}\""),
                None,
            ))
        }
    }
}

fn parse_join(w: &Wire<'_>) -> Result<Join, ProtocolError> {
    const T: &str = "join";
    let version_ok = w.v.and_then(|v| serde_json::from_str::<u64>(v.get()).ok()) == Some(VERSION);
    if !version_ok {
        return Err(ProtocolError::new(
            ErrorCode::UnsupportedVersion,
            "this server speaks protocol version 1: send \"v\": 1 in join",
            Some(T),
        ));
    }
    let room = req_string(w.room, T, "room")?;
    if !valid_room(&room) {
        return Err(bad_field(
            T,
            "room must be 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    let name = valid_name(&req_string(w.name, T, "name")?, T)?;
    let password = opt_string(w.password, T, "password")?.filter(|p| !p.is_empty());
    if password
        .as_ref()
        .is_some_and(|p| p.chars().count() > MAX_PASSWORD_CHARS)
    {
        return Err(bad_field(T, "password is longer than 256 characters"));
    }
    let token = opt_string(w.token, T, "token")?;
    if token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_BYTES) {
        return Err(bad_field(T, "token is longer than 2048 bytes"));
    }
    let resume = opt_string(w.resume, T, "resume")?.filter(|r| !r.is_empty());
    if resume.as_ref().is_some_and(|r| r.len() > MAX_RESUME_BYTES) {
        return Err(bad_field(T, "resume is longer than 128 bytes"));
    }
    Ok(Join {
        room,
        name,
        password,
        token,
        resume,
    })
}

fn parse_forward(w: &Wire<'_>, kind: ForwardKind) -> Result<ClientMessage, ProtocolError> {
    let ty = kind.type_name();
    let to = req_string(w.to, ty, "to")?;
    if to.is_empty() || to.len() > MAX_PEER_ID_BYTES {
        return Err(bad_field(ty, "to must be a peer id"));
    }
    let raw = match kind {
        ForwardKind::Offer | ForwardKind::Answer => w.sdp,
        ForwardKind::Candidate => w.candidate,
        ForwardKind::Message => w.data,
    };
    let Some(raw) = raw else {
        return Err(bad_field(ty, format!("{} is missing", kind.field())));
    };
    let text = raw.get();
    let first = text.as_bytes().first().copied();
    let ok = match kind {
        ForwardKind::Offer | ForwardKind::Answer => first == Some(b'"'),
        ForwardKind::Candidate => first == Some(b'{') || text == "null",
        ForwardKind::Message => true,
    };
    if !ok {
        let want = match kind {
            ForwardKind::Candidate => "candidate must be an object or null",
            _ => "sdp must be a string",
        };
        return Err(bad_field(ty, want));
    }
    Ok(ClientMessage::Forward(Forward {
        kind,
        to,
        payload: raw.to_owned(),
    }))
}

fn req_string(
    raw: Option<&RawValue>,
    ty: &'static str,
    field: &'static str,
) -> Result<String, ProtocolError> {
    match opt_string(raw, ty, field)? {
        Some(s) => Ok(s),
        None => Err(bad_field(ty, format!("{field} is missing"))),
    }
}

fn opt_string(
    raw: Option<&RawValue>,
    ty: &'static str,
    field: &'static str,
) -> Result<Option<String>, ProtocolError> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| bad_field(ty, format!("{field} must be a string"))),
    }
}

/// `room`: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_CHARS
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `name`: trimmed, 1–64 characters, no control characters. Returns the trimmed name.
pub fn valid_name(name: &str, ty: &'static str) -> Result<String, ProtocolError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(bad_field(ty, "name is empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(bad_field(ty, "name is longer than 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad_field(ty, "name contains control characters"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(frame: &str) -> ProtocolError {
        match parse_client(frame.as_bytes()) {
            Ok(m) => panic!("{frame} parsed as {m:?}"),
            Err(e) => e,
        }
    }

    fn ok(frame: &str) -> ClientMessage {
        parse_client(frame.as_bytes()).unwrap_or_else(|e| panic!("{frame}: {e}"))
    }

    #[test]
    fn join_parses_and_trims_name() {
        let ClientMessage::Join(j) =
            ok(r#"{"type":"join","v":1,"room":"a-b_9","name":"  Ann  ","password":""}"#)
        else {
            panic!("not a join")
        };
        assert_eq!(j.room, "a-b_9");
        assert_eq!(j.name, "Ann");
        assert_eq!(j.password, None, "an empty password means none");
        assert_eq!(j.token, None);
        assert_eq!(j.resume, None);
    }

    #[test]
    fn join_version_rules() {
        for frame in [
            r#"{"type":"join","room":"r","name":"n"}"#,
            r#"{"type":"join","v":2,"room":"r","name":"n"}"#,
            r#"{"type":"join","v":"1","room":"r","name":"n"}"#,
        ] {
            let e = err(frame);
            assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{frame}");
            assert_eq!(e.ref_type, Some("join"));
        }
    }

    #[test]
    fn join_field_rules() {
        for (frame, needle) in [
            (r#"{"type":"join","v":1,"name":"n"}"#, "room is missing"),
            (
                r#"{"type":"join","v":1,"room":"","name":"n"}"#,
                "room must be",
            ),
            (
                r#"{"type":"join","v":1,"room":"a b","name":"n"}"#,
                "room must be",
            ),
            (
                r#"{"type":"join","v":1,"room":"é","name":"n"}"#,
                "room must be",
            ),
            (
                r#"{"type":"join","v":1,"room":7,"name":"n"}"#,
                "room must be a string",
            ),
            (r#"{"type":"join","v":1,"room":"r"}"#, "name is missing"),
            (
                r#"{"type":"join","v":1,"room":"r","name":"   "}"#,
                "name is empty",
            ),
            (
                r#"{"type":"join","v":1,"room":"r","name":"a\u0007b"}"#,
                "control",
            ),
            (
                r#"{"type":"join","v":1,"room":"r","name":null}"#,
                "name must be a string",
            ),
            (
                r#"{"type":"join","v":1,"room":"r","name":"n","token":5}"#,
                "token must be a string",
            ),
        ] {
            let e = err(frame);
            assert_eq!(e.code, ErrorCode::BadField, "{frame}");
            assert!(e.message.contains(needle), "{frame}: {}", e.message);
        }
        let long_room = "r".repeat(65);
        let e = err(&format!(
            r#"{{"type":"join","v":1,"room":"{long_room}","name":"n"}}"#
        ));
        assert_eq!(e.code, ErrorCode::BadField);
        let room64 = "r".repeat(64);
        let name64 = "é".repeat(64);
        assert!(matches!(
            ok(&format!(
                r#"{{"type":"join","v":1,"room":"{room64}","name":"{name64}"}}"#
            )),
            ClientMessage::Join(_)
        ));
        let name65 = "é".repeat(65);
        assert_eq!(
            err(&format!(
                r#"{{"type":"join","v":1,"room":"r","name":"{name65}"}}"#
            ))
            .code,
            ErrorCode::BadField
        );
    }

    #[test]
    fn forwards_keep_raw_payload_and_ignore_from() {
        let ClientMessage::Forward(f) =
            ok(r#"{"type":"offer","to":"p-1","from":"p-evil","sdp":"v=0\r\n"}"#)
        else {
            panic!("not a forward")
        };
        assert_eq!(f.kind, ForwardKind::Offer);
        assert_eq!(f.to, "p-1");
        assert_eq!(f.payload.get(), r#""v=0\r\n""#);

        let ClientMessage::Forward(f) = ok(r#"{"type":"candidate","to":"p-1","candidate":null}"#)
        else {
            panic!("not a forward")
        };
        assert_eq!(f.payload.get(), "null");
        let ClientMessage::Forward(f) =
            ok(r#"{"type":"candidate","to":"p-1","candidate":{"candidate":"c","sdpMid":"0"}}"#)
        else {
            panic!("not a forward")
        };
        assert_eq!(f.payload.get(), r#"{"candidate":"c","sdpMid":"0"}"#);
        let ClientMessage::Forward(f) =
            ok(r#"{"type":"message","to":"p-1","data":[1,{"a":null}]}"#)
        else {
            panic!("not a forward")
        };
        assert_eq!(f.payload.get(), r#"[1,{"a":null}]"#);
    }

    #[test]
    fn forward_field_rules() {
        for (frame, ty) in [
            (r#"{"type":"offer","sdp":"x"}"#, "offer"),
            (r#"{"type":"offer","to":"p","sdp":5}"#, "offer"),
            (r#"{"type":"answer","to":"p"}"#, "answer"),
            (r#"{"type":"answer","to":"","sdp":"x"}"#, "answer"),
            (r#"{"type":"candidate","to":"p"}"#, "candidate"),
            (
                r#"{"type":"candidate","to":"p","candidate":"str"}"#,
                "candidate",
            ),
            (r#"{"type":"message","to":"p"}"#, "message"),
            (r#"{"type":"message","to":["p"],"data":1}"#, "message"),
        ] {
            let e = err(frame);
            assert_eq!(e.code, ErrorCode::BadField, "{frame}");
            assert_eq!(e.ref_type, Some(ty), "{frame}");
        }
        let long_to = "p".repeat(65);
        assert_eq!(
            err(&format!(r#"{{"type":"offer","to":"{long_to}","sdp":""}}"#)).code,
            ErrorCode::BadField
        );
    }

    #[test]
    fn bad_json_and_unknown_type() {
        for frame in [
            "",
            "   ",
            "not json",
            "[1,2]",
            "\"join\"",
            "42",
            "null",
            "{",
            r#"{"type":"ping",}"#,
        ] {
            assert_eq!(err(frame).code, ErrorCode::BadJson, "{frame:?}");
        }
        assert_eq!(
            err(r#"{"type":"ping","type":"leave"}"#).code,
            ErrorCode::BadJson,
            "duplicate keys"
        );
        for frame in [
            r#"{}"#,
            r#"{"type":7}"#,
            r#"{"type":null}"#,
            r#"{"type":"hello"}"#,
            r#"{"type":"Join"}"#,
        ] {
            let e = err(frame);
            assert_eq!(e.code, ErrorCode::UnknownType, "{frame}");
            assert_eq!(e.ref_type, None);
        }
        assert!(err(r#"{"type":"hello"}"#).message.contains("hello"));
    }

    #[test]
    fn simple_messages() {
        assert!(matches!(ok(r#"{"type":"ping"}"#), ClientMessage::Ping));
        assert!(matches!(
            ok(r#" {"type":"leave","v":1} "#),
            ClientMessage::Leave
        ));
        assert!(
            matches!(ok(r#"{"type":"rename","name":" Bo "}"#), ClientMessage::Rename { name } if name == "Bo")
        );
        assert_eq!(err(r#"{"type":"rename"}"#).code, ErrorCode::BadField);
        assert!(
            matches!(ok(r#"{"type":"p\u0069ng"}"#), ClientMessage::Ping),
            "escaped type"
        );
    }

    #[test]
    fn server_messages_serialize_per_contract() {
        let payload = RawValue::from_string(r#"{"candidate":"c"}"#.to_owned()).expect("valid JSON");
        let fwd = ServerMessage::Forward {
            kind: ForwardKind::Candidate,
            from: "p-1".into(),
            payload,
        };
        assert_eq!(
            fwd.to_json(),
            r#"{"v":1,"type":"candidate","from":"p-1","candidate":{"candidate":"c"}}"#
        );

        let welcome = ServerMessage::Welcome {
            id: "p-1".into(),
            room: "r".into(),
            peers: vec![PeerInfo {
                id: "p-0".into(),
                name: "Ann".into(),
            }],
            ice_servers: vec![IceServer {
                urls: vec!["stun:h:3478".into()],
                username: None,
                credential: None,
            }],
            resume: "tok".into(),
            resumed: false,
        };
        let v: serde_json::Value = serde_json::from_str(&welcome.to_json()).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!({"v":1,"type":"welcome","id":"p-1","room":"r","peers":[{"id":"p-0","name":"Ann"}],
                "iceServers":[{"urls":["stun:h:3478"]}],"resume":"tok","resumed":false,"polite":"lower-id"})
        );
        let e = ServerMessage::error(ErrorCode::UnknownPeer, "no such peer", Some("offer"));
        assert_eq!(
            e.to_json(),
            r#"{"v":1,"type":"error","code":"unknown-peer","message":"no such peer","ref":"offer"}"#
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"v":1,"type":"pong"}"#);
        assert_eq!(
            ServerMessage::PeerLeft { id: "p-2".into() }.to_json(),
            r#"{"v":1,"type":"peer-left","id":"p-2"}"#
        );
    }

    #[test]
    fn client_messages_round_trip() {
        for frame in [
            r#"{"type":"join","v":1,"room":"r","name":"n","password":"pw","token":"t","resume":"x"}"#,
            r#"{"type":"offer","to":"p-1","sdp":"v=0"}"#,
            r#"{"type":"candidate","to":"p-1","candidate":null}"#,
            r#"{"type":"message","to":"p-1","data":{"k":[1,2]}}"#,
            r#"{"type":"rename","name":"Bo"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"leave"}"#,
        ] {
            let msg = ok(frame);
            let again = serde_json::to_string(&msg).expect("serializes");
            let a: serde_json::Value = serde_json::from_str(frame).expect("json");
            let b: serde_json::Value = serde_json::from_str(&again).expect("json");
            assert_eq!(a, b);
        }
    }

    #[test]
    fn every_error_code_is_distinct_and_indexed() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_client(&bytes);
        }

        #[test]
        fn parse_never_panics_on_object_like_text(
            s in r#"\{("[a-z]{1,6}":("[a-z\\]{0,8}"|[0-9]{1,3}|null|\{\}|\[\]),?){0,5}\}"#
        ) {
            let _ = parse_client(s.as_bytes());
        }
    }
}
