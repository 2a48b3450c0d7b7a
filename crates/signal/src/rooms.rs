//! The sans-IO room logic: connections in, addressed messages out. No sockets, no clock reads, no RNG:
//! time is injected as [`Now`], and ids and tokens derive from a secret key given at construction.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};

use crate::protocol::{ClientMessage, ErrorCode, IceServer, PeerInfo, Rejection, ServerMessage, parse};

/// Identifies one WebSocket connection (chosen by the driver).
pub type ConnId = u64;

/// Injected time: monotonic for timers, wall clock for credential expiry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix: u64,
}

/// Limits and features of the room logic.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    pub max_message_bytes: usize,
    pub max_messages_per_sec: u32,
    pub max_connections_per_ip: u32,
    pub max_rooms: usize,
    pub max_peers_per_room: usize,
    pub require_room_password: bool,
    pub join_token_secret: Option<String>,
    pub resume_grace: Duration,
    pub max_errors_in_row: u32,
    pub public_host: Option<String>,
    pub turn: Option<TurnAdvert>,
}

/// How browsers reach the TURN server, and the shared secret to mint their credentials.
#[derive(Debug, Clone)]
pub struct TurnAdvert {
    pub secret: String,
    pub port: u16,
    pub tls_port: Option<u16>,
    pub credential_ttl: Duration,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Send(ConnId, ServerMessage),
    /// Close the connection (after sending what was queued before).
    Close(ConnId),
}

struct Conn {
    ip: IpAddr,
    host: String,
    peer: Option<(String, String)>, // (room, peer id)
    tokens: f64,
    last_refill: Instant,
    errors_in_row: u32,
    credentials_due: Option<Instant>,
}

struct Peer {
    name: String,
    conn: Option<ConnId>,
    /// Set while disconnected: when the grace period ends.
    gone_until: Option<Instant>,
}

struct Room {
    password: Option<String>,
    peers: BTreeMap<String, Peer>,
}

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub messages_in: HashMap<&'static str, u64>,
    pub errors: HashMap<&'static str, u64>,
}

pub struct Rooms {
    config: RoomsConfig,
    key: [u8; 32],
    next_id: u64,
    conns: HashMap<ConnId, Conn>,
    per_ip: HashMap<IpAddr, u32>,
    rooms: HashMap<String, Room>,
    /// resume token → (room, peer id)
    resume: HashMap<String, (String, String)>,
    pub counters: Counters,
}

impl Rooms {
    pub fn new(config: RoomsConfig, key: [u8; 32]) -> Rooms {
        Rooms {
            config,
            key,
            next_id: 0,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
            rooms: HashMap::new(),
            resume: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    pub fn peers(&self) -> usize {
        self.rooms.values().map(|r| r.peers.len()).sum()
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// A new connection from `ip`, which reached us as `host` (Host header, for ICE URLs).
    pub fn connect(&mut self, now: Now, conn: ConnId, ip: IpAddr, host: &str, out: &mut Vec<Out>) {
        let count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.config.max_connections_per_ip {
            self.count_error(ErrorCode::TooManyConnections);
            out.push(error(conn, ErrorCode::TooManyConnections, "too many connections from your address", None));
            out.push(Out::Close(conn));
            return;
        }
        *count += 1;
        let burst = f64::from(self.config.max_messages_per_sec) * 2.0;
        self.conns.insert(
            conn,
            Conn {
                ip,
                host: host.to_owned(),
                peer: None,
                tokens: burst,
                last_refill: now.instant,
                errors_in_row: 0,
                credentials_due: None,
            },
        );
    }

    /// One text frame of `len` bytes. Oversized frames are refused before parsing.
    pub fn handle_text(&mut self, now: Now, conn: ConnId, text: &str, out: &mut Vec<Out>) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        if text.len() > self.config.max_message_bytes {
            let limit = self.config.max_message_bytes;
            return self.refuse(conn, Rejection { code: ErrorCode::TooLarge, message: format!("messages are limited to {limit} bytes"), reference: None }, out);
        }
        if !self.take_token(now, conn) {
            return self.refuse(conn, Rejection { code: ErrorCode::RateLimited, message: "slow down".into(), reference: None }, out);
        }
        match parse(text) {
            Ok(msg) => self.dispatch(now, conn, msg, out),
            Err(rejection) => self.refuse(conn, rejection, out),
        }
    }

    /// A binary frame: not part of the protocol.
    pub fn handle_binary(&mut self, conn: ConnId, out: &mut Vec<Out>) {
        let r = Rejection { code: ErrorCode::BadJson, message: "binary frames are not supported".into(), reference: None };
        self.refuse(conn, r, out);
    }

    fn take_token(&mut self, now: Now, conn: ConnId) -> bool {
        let rate = f64::from(self.config.max_messages_per_sec);
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        let elapsed = now.instant.saturating_duration_since(c.last_refill).as_secs_f64();
        c.tokens = (c.tokens + elapsed * rate).min(rate * 2.0);
        c.last_refill = now.instant;
        if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn count_error(&mut self, code: ErrorCode) {
        *self.counters.errors.entry(code.as_str()).or_insert(0) += 1;
    }

    /// Answers a bad message to its sender only; too many in a row close the connection.
    fn refuse(&mut self, conn: ConnId, r: Rejection, out: &mut Vec<Out>) {
        self.count_error(r.code);
        out.push(error(conn, r.code, &r.message, r.reference));
        if r.code.closes() {
            out.push(Out::Close(conn));
            return;
        }
        let max = self.config.max_errors_in_row;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.errors_in_row += 1;
            if c.errors_in_row >= max {
                self.count_error(ErrorCode::Abuse);
                out.push(error(conn, ErrorCode::Abuse, "too many invalid messages", None));
                out.push(Out::Close(conn));
            }
        }
    }

    fn dispatch(&mut self, now: Now, conn: ConnId, msg: ClientMessage, out: &mut Vec<Out>) {
        let kind = match &msg {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Message { .. } => "message",
            ClientMessage::Rename { .. } => "rename",
            ClientMessage::Ping => "ping",
            ClientMessage::Leave => "leave",
        };
        *self.counters.messages_in.entry(kind).or_insert(0) += 1;
        let joined = self.conns.get(&conn).and_then(|c| c.peer.clone());
        let result = match (msg, joined) {
            (ClientMessage::Join { room, name, password, token, resume }, None) => {
                self.join(now, conn, room, name, password, token, resume, out)
            }
            (ClientMessage::Join { .. }, Some(_)) => Err(rej(ErrorCode::AlreadyJoined, "already in a room", "join")),
            (ClientMessage::Ping, _) => {
                out.push(Out::Send(conn, ServerMessage::Pong));
                Ok(())
            }
            (_, None) => Err(rej(ErrorCode::NotJoined, "send join first", kind)),
            (ClientMessage::Offer { to, sdp }, Some((room, from))) => {
                self.forward(&room, &to, ServerMessage::Offer { from, sdp }, kind, out)
            }
            (ClientMessage::Answer { to, sdp }, Some((room, from))) => {
                self.forward(&room, &to, ServerMessage::Answer { from, sdp }, kind, out)
            }
            (ClientMessage::Candidate { to, candidate }, Some((room, from))) => {
                self.forward(&room, &to, ServerMessage::Candidate { from, candidate }, kind, out)
            }
            (ClientMessage::Message { to, data }, Some((room, from))) => {
                self.forward(&room, &to, ServerMessage::Message { from, data }, kind, out)
            }
            (ClientMessage::Rename { name }, Some((room, id))) => {
                if let Some(p) = self.rooms.get_mut(&room).and_then(|r| r.peers.get_mut(&id)) {
                    p.name = name.clone();
                }
                self.broadcast(&room, &id, ServerMessage::PeerUpdated { peer: PeerInfo { id: id.clone(), name } }, out);
                Ok(())
            }
            (ClientMessage::Leave, Some((room, id))) => {
                self.remove_peer(&room, &id, out);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.peer = None;
                }
                out.push(Out::Close(conn));
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.errors_in_row = 0;
                }
            }
            Err(r) => self.refuse(conn, r, out),
        }
    }

    fn forward(&mut self, room: &str, to: &str, msg: ServerMessage, kind: &str, out: &mut Vec<Out>) -> Result<(), Rejection> {
        let target = self.rooms.get(room).and_then(|r| r.peers.get(to)).ok_or_else(|| {
            rej(ErrorCode::UnknownPeer, "no such peer in your room", kind)
        })?;
        // A peer inside its resume grace period misses the message; it renegotiates when it is back.
        if let Some(conn) = target.conn {
            out.push(Out::Send(conn, msg));
        }
        Ok(())
    }

    fn broadcast(&self, room: &str, except: &str, msg: ServerMessage, out: &mut Vec<Out>) {
        if let Some(r) = self.rooms.get(room) {
            for (id, p) in &r.peers {
                if id != except {
                    if let Some(conn) = p.conn {
                        out.push(Out::Send(conn, msg.clone()));
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        now: Now,
        conn: ConnId,
        room: String,
        mut name: String,
        password: Option<String>,
        token: Option<String>,
        resume: Option<String>,
        out: &mut Vec<Out>,
    ) -> Result<(), Rejection> {
        // Resume: same id, nobody sees a leave or a join.
        if let Some(token) = resume {
            if let Some((r, id)) = self.resume.get(&token).cloned().filter(|(r, _)| *r == room) {
                if let Some(p) = self.rooms.get_mut(&r).and_then(|x| x.peers.get_mut(&id)) {
                    if let Some(old) = p.conn.replace(conn) {
                        // The old socket may still be half-open: it no longer speaks for this peer.
                        if let Some(c) = self.conns.get_mut(&old) {
                            c.peer = None;
                        }
                        out.push(Out::Close(old));
                    }
                    p.gone_until = None;
                    if p.name != name {
                        p.name = name.clone();
                        let info = PeerInfo { id: id.clone(), name: name.clone() };
                        self.broadcast(&r, &id, ServerMessage::PeerUpdated { peer: info }, out);
                    }
                    self.welcome(now, conn, &r, &id, token, true, out);
                    return Ok(());
                }
            }
            // An unknown or expired token falls through to a fresh join.
        }
        if let Some(secret) = &self.config.join_token_secret {
            let t = token.as_deref().ok_or_else(|| rej(ErrorCode::BadToken, "this server requires a join token", "join"))?;
            name = verify_join_token(secret.as_bytes(), t, &room, now.unix)
                .map_err(|m| rej(ErrorCode::BadToken, m, "join"))?;
        }
        match self.rooms.get(&room) {
            Some(r) => {
                let live = r.peers.len();
                if live >= self.config.max_peers_per_room {
                    return Err(rej(ErrorCode::RoomFull, "this room is full", "join"));
                }
                if let Some(expected) = &r.password {
                    let given = password.as_deref().unwrap_or("");
                    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                        return Err(rej(ErrorCode::WrongPassword, "wrong room password", "join"));
                    }
                }
            }
            None => {
                if self.rooms.len() >= self.config.max_rooms {
                    return Err(rej(ErrorCode::TooManyRooms, "the server has no room for more rooms", "join"));
                }
                let password = password.filter(|p| !p.is_empty());
                if self.config.require_room_password && password.is_none() {
                    return Err(rej(ErrorCode::WrongPassword, "rooms on this server need a password", "join"));
                }
                self.rooms.insert(room.clone(), Room { password, peers: BTreeMap::new() });
            }
        }
        let id = self.new_id();
        let token = self.derive("resume", &id);
        self.resume.insert(token.clone(), (room.clone(), id.clone()));
        let info = PeerInfo { id: id.clone(), name: name.clone() };
        self.broadcast(&room, &id, ServerMessage::PeerJoined { peer: info }, out);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.peers.insert(id.clone(), Peer { name, conn: Some(conn), gone_until: None });
        }
        self.welcome(now, conn, &room, &id, token, false, out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn welcome(&mut self, now: Now, conn: ConnId, room: &str, id: &str, resume: String, resumed: bool, out: &mut Vec<Out>) {
        let peers = self
            .rooms
            .get(room)
            .map(|r| {
                r.peers.iter().filter(|(pid, _)| *pid != id).map(|(pid, p)| PeerInfo { id: pid.clone(), name: p.name.clone() }).collect()
            })
            .unwrap_or_default();
        let host = self.conns.get(&conn).map(|c| c.host.clone()).unwrap_or_default();
        let ice_servers = self.ice_servers(now, &host, id);
        let refresh = self.config.turn.as_ref().map(|t| now.instant + t.credential_ttl.mul_f64(0.8));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some((room.to_owned(), id.to_owned()));
            c.credentials_due = refresh;
        }
        out.push(Out::Send(
            conn,
            ServerMessage::Welcome { id: id.to_owned(), room: room.to_owned(), peers, ice_servers, resume, resumed },
        ));
    }

    /// STUN and TURN entries with coturn REST credentials for `peer_id`, on the host the client used.
    pub fn ice_servers(&self, now: Now, request_host: &str, peer_id: &str) -> Vec<IceServer> {
        let Some(turn) = &self.config.turn else { return Vec::new() };
        let host = self.config.public_host.clone().unwrap_or_else(|| host_only(request_host));
        let username = format!("{}:{peer_id}", now.unix + turn.credential_ttl.as_secs());
        let credential = rest_credential(turn.secret.as_bytes(), &username);
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", turn.port),
            format!("turn:{host}:{}?transport=tcp", turn.port),
        ];
        if let Some(tls) = turn.tls_port {
            urls.push(format!("turns:{host}:{tls}?transport=tcp"));
        }
        vec![
            IceServer { urls: vec![format!("stun:{host}:{}", turn.port)], username: None, credential: None },
            IceServer { urls, username: Some(username), credential: Some(credential) },
        ]
    }

    /// The connection closed. A joined peer keeps its place for the grace period.
    pub fn disconnected(&mut self, now: Now, conn: ConnId, out: &mut Vec<Out>) {
        let Some(c) = self.conns.remove(&conn) else { return };
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        if let Some((room, id)) = c.peer {
            let grace = self.config.resume_grace;
            if let Some(p) = self.rooms.get_mut(&room).and_then(|r| r.peers.get_mut(&id)) {
                if p.conn == Some(conn) {
                    p.conn = None;
                    p.gone_until = Some(now.instant + grace);
                }
            }
            if grace.is_zero() {
                self.handle_timeout(now, out);
            }
        }
    }

    /// Ends grace periods and refreshes TURN credentials that are about to expire.
    pub fn handle_timeout(&mut self, now: Now, out: &mut Vec<Out>) {
        let mut gone = Vec::new();
        for (room_name, room) in &self.rooms {
            for (id, p) in &room.peers {
                if p.gone_until.is_some_and(|t| t <= now.instant) {
                    gone.push((room_name.clone(), id.clone()));
                }
            }
        }
        for (room, id) in gone {
            self.remove_peer(&room, &id, out);
        }
        let due: Vec<(ConnId, String, String)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.credentials_due.is_some_and(|t| t <= now.instant))
            .filter_map(|(id, c)| c.peer.as_ref().map(|(_, p)| (*id, c.host.clone(), p.clone())))
            .collect();
        for (conn, host, peer) in due {
            let ice_servers = self.ice_servers(now, &host, &peer);
            let next = self.config.turn.as_ref().map(|t| now.instant + t.credential_ttl.mul_f64(0.8));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.credentials_due = next;
            }
            out.push(Out::Send(conn, ServerMessage::IceServers { ice_servers }));
        }
    }

    /// The earliest instant `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grace = self.rooms.values().flat_map(|r| r.peers.values()).filter_map(|p| p.gone_until);
        let creds = self.conns.values().filter_map(|c| c.credentials_due);
        grace.chain(creds).min()
    }

    fn remove_peer(&mut self, room: &str, id: &str, out: &mut Vec<Out>) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        if r.peers.remove(id).is_none() {
            return;
        }
        let empty = r.peers.is_empty();
        self.resume.retain(|_, (rm, pid)| !(rm == room && pid == id));
        if empty {
            self.rooms.remove(room);
        } else {
            self.broadcast(room, id, ServerMessage::PeerLeft { id: id.to_owned() }, out);
        }
    }

    /// Every connection, for shutdown.
    pub fn all_connections(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        let n = self.next_id.to_string();
        format!("p-{}", &self.derive("id", &n)[..12])
    }

    fn derive(&self, purpose: &str, input: &str) -> String {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(input.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

fn rej(code: ErrorCode, message: &str, reference: &str) -> Rejection {
    Rejection { code, message: message.to_owned(), reference: Some(reference.to_owned()) }
}

fn error(conn: ConnId, code: ErrorCode, message: &str, reference: Option<String>) -> Out {
    Out::Send(conn, ServerMessage::Error { code, message: message.to_owned(), reference })
}

/// `host:port`, `[v6]:port` or `host` → the host part, as it goes into a STUN/TURN URL.
pub fn host_only(host_header: &str) -> String {
    if let Some(rest) = host_header.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return format!("[{}]", &rest[..end]);
        }
    }
    match host_header.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h.to_owned(),
        _ => host_header.to_owned(),
    }
}

/// coturn's REST API password: base64(HMAC-SHA1(secret, username)).
pub fn rest_credential(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Makes a join token: base64url(JSON {room, name, exp}) "." base64url(HMAC-SHA256(secret, first part)).
pub fn make_join_token(secret: &[u8], room: &str, name: &str, exp_unix: u64) -> String {
    let payload = serde_json::json!({ "room": room, "name": name, "exp": exp_unix }).to_string();
    let body = URL_SAFE_NO_PAD.encode(payload);
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Checks a join token; returns the display name it grants.
pub fn verify_join_token(secret: &[u8], token: &str, room: &str, unix_now: u64) -> Result<String, &'static str> {
    let (body, sig) = token.split_once('.').ok_or("malformed join token")?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "malformed join token")?;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body.as_bytes());
    mac.verify_slice(&sig).map_err(|_| "join token signature does not match")?;
    let payload = URL_SAFE_NO_PAD.decode(body).map_err(|_| "malformed join token")?;
    let v: serde_json::Value = serde_json::from_slice(&payload).map_err(|_| "malformed join token")?;
    if v.get("room").and_then(|r| r.as_str()) != Some(room) {
        return Err("join token is for another room");
    }
    if v.get("exp").and_then(|e| e.as_u64()).is_none_or(|e| e < unix_now) {
        return Err("join token expired");
    }
    v.get("name").and_then(|n| n.as_str()).map(str::to_owned).ok_or("join token has no name")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests;
