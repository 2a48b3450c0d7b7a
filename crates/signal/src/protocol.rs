//! The JSON wire protocol of docs/protocol.md, version 1.

use serde::{Deserialize, Serialize};

pub const VERSION: u8 = 1;

/// A message from a client, after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Join { room: String, name: String, password: Option<String>, token: Option<String>, resume: Option<String> },
    Offer { to: String, sdp: String },
    Answer { to: String, sdp: String },
    Candidate { to: String, candidate: serde_json::Value },
    Message { to: String, data: serde_json::Value },
    Rename { name: String },
    Ping,
    Leave,
}

/// Error codes of docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadField,
    TooLarge,
    RateLimited,
    NotJoined,
    AlreadyJoined,
    UnknownPeer,
    UnsupportedVersion,
    RoomFull,
    WrongPassword,
    BadToken,
    TooManyRooms,
    TooManyConnections,
    Abuse,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
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
        ErrorCode::Abuse,
    ];

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
            ErrorCode::Abuse => "abuse",
        }
    }

    /// Whether the server closes the connection after this error.
    pub fn closes(self) -> bool {
        matches!(
            self,
            ErrorCode::RoomFull
                | ErrorCode::WrongPassword
                | ErrorCode::BadToken
                | ErrorCode::TooManyRooms
                | ErrorCode::TooManyConnections
                | ErrorCode::Abuse
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    Welcome {
        id: String,
        room: String,
        peers: Vec<PeerInfo>,
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        resume: String,
        resumed: bool,
    },
    PeerJoined { peer: PeerInfo },
    PeerLeft { id: String },
    PeerUpdated { peer: PeerInfo },
    Offer { from: String, sdp: String },
    Answer { from: String, sdp: String },
    Candidate { from: String, candidate: serde_json::Value },
    Message { from: String, data: serde_json::Value },
    IceServers {
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none", rename = "ref")]
        reference: Option<String>,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u8,
    #[serde(flatten)]
    msg: &'a ServerMessage,
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Envelope { v: VERSION, msg: self }).unwrap_or_else(|_| {
            // Every variant holds only strings and JSON values, which always serialize.
            String::from("{\"v\":1,\"type\":\"error\",\"code\":\"bad-json\",\"message\":\"internal\"}")
        })
    }

    /// Metric label of the message type.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::PeerJoined { .. } => "peer-joined",
            ServerMessage::PeerLeft { .. } => "peer-left",
            ServerMessage::PeerUpdated { .. } => "peer-updated",
            ServerMessage::Offer { .. } => "offer",
            ServerMessage::Answer { .. } => "answer",
            ServerMessage::Candidate { .. } => "candidate",
            ServerMessage::Message { .. } => "message",
            ServerMessage::IceServers { .. } => "ice-servers",
            ServerMessage::Pong => "pong",
            ServerMessage::Error { .. } => "error",
        }
    }
}

/// Parse failure: the error code, a human message and the `type` it concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
}

fn reject(code: ErrorCode, message: impl Into<String>, reference: Option<&str>) -> Rejection {
    Rejection { code, message: message.into(), reference: reference.map(str::to_owned) }
}

#[derive(Deserialize)]
struct Join {
    v: Option<serde_json::Value>,
    room: String,
    name: String,
    password: Option<String>,
    token: Option<String>,
    resume: Option<String>,
}

#[derive(Deserialize)]
struct Sdp {
    to: String,
    sdp: String,
}

#[derive(Deserialize)]
struct Candidate {
    to: String,
    candidate: serde_json::Value,
}

#[derive(Deserialize)]
struct AppMessage {
    to: String,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

/// Parses and validates one text frame.
pub fn parse(text: &str) -> Result<ClientMessage, Rejection> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| reject(ErrorCode::BadJson, format!("invalid JSON: {e}"), None))?;
    let Some(object) = value.as_object() else {
        return Err(reject(ErrorCode::BadJson, "a message must be a JSON object", None));
    };
    let Some(kind) = object.get("type").and_then(|t| t.as_str()).map(str::to_owned) else {
        return Err(reject(ErrorCode::UnknownType, "missing \"type\"", None));
    };
    let field = |e: serde_json::Error| reject(ErrorCode::BadField, e.to_string(), Some(&kind));
    let msg = match kind.as_str() {
        "join" => {
            let j: Join = serde_json::from_value(value.clone()).map_err(field)?;
            if j.v.as_ref().and_then(|v| v.as_u64()) != Some(u64::from(VERSION)) {
                return Err(reject(ErrorCode::UnsupportedVersion, "this server speaks protocol version 1", Some("join")));
            }
            validate_room(&j.room).map_err(|m| reject(ErrorCode::BadField, m, Some("join")))?;
            let name = validate_name(&j.name).map_err(|m| reject(ErrorCode::BadField, m, Some("join")))?;
            ClientMessage::Join { room: j.room, name, password: j.password, token: j.token, resume: j.resume }
        }
        "offer" => {
            let s: Sdp = serde_json::from_value(value.clone()).map_err(field)?;
            ClientMessage::Offer { to: s.to, sdp: s.sdp }
        }
        "answer" => {
            let s: Sdp = serde_json::from_value(value.clone()).map_err(field)?;
            ClientMessage::Answer { to: s.to, sdp: s.sdp }
        }
        "candidate" => {
            let c: Candidate = serde_json::from_value(value.clone()).map_err(field)?;
            if !(c.candidate.is_object() || c.candidate.is_null()) {
                return Err(reject(ErrorCode::BadField, "candidate must be an object or null", Some("candidate")));
            }
            ClientMessage::Candidate { to: c.to, candidate: c.candidate }
        }
        "message" => {
            let m: AppMessage = serde_json::from_value(value.clone()).map_err(field)?;
            ClientMessage::Message { to: m.to, data: m.data }
        }
        "rename" => {
            let r: Rename = serde_json::from_value(value.clone()).map_err(field)?;
            let name = validate_name(&r.name).map_err(|m| reject(ErrorCode::BadField, m, Some("rename")))?;
            ClientMessage::Rename { name }
        }
        "ping" => ClientMessage::Ping,
        "leave" => ClientMessage::Leave,
        other => return Err(reject(ErrorCode::UnknownType, format!("unknown type {other:?}"), None)),
    };
    Ok(msg)
}

fn validate_room(room: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&room.len()) && room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err("room must be 1-64 characters of A-Z a-z 0-9 - _".into()) }
}

fn validate_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("name must be 1-64 characters without control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_message() {
        assert!(matches!(parse(r#"{"v":1,"type":"join","room":"a-b","name":" Al "}"#), Ok(ClientMessage::Join { name, .. }) if name == "Al"));
        assert!(matches!(parse(r#"{"type":"offer","to":"p1","sdp":"x"}"#), Ok(ClientMessage::Offer { .. })));
        assert!(matches!(parse(r#"{"type":"candidate","to":"p1","candidate":null}"#), Ok(ClientMessage::Candidate { .. })));
        assert!(matches!(parse(r#"{"type":"message","to":"p1","data":[1,2]}"#), Ok(ClientMessage::Message { .. })));
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
    }

    #[test]
    fn errors_have_the_documented_codes() {
        let code = |t: &str| parse(t).unwrap_err().code;
        assert_eq!(code("nope"), ErrorCode::BadJson);
        assert_eq!(code("[1]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"x":1}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"explode"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"offer","to":"p"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"v":2,"type":"join","room":"a","name":"b"}"#), ErrorCode::UnsupportedVersion);
        assert_eq!(code(r#"{"v":1,"type":"join","room":"a b","name":"b"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"v":1,"type":"join","room":"a","name":"\u0007"}"#), ErrorCode::BadField);
    }

    #[test]
    fn server_messages_carry_version_and_type() {
        let json = ServerMessage::PeerLeft { id: "p1".into() }.to_json();
        assert_eq!(json, r#"{"v":1,"type":"peer-left","id":"p1"}"#);
        let json = ServerMessage::IceServers { ice_servers: vec![] }.to_json();
        assert!(json.contains("\"iceServers\":[]"), "{json}");
    }
}
