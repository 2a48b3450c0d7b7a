//! The room state machine, sans-IO.
//!
//! Inputs: connections opening and closing, validated client messages, and the passing of time — each with
//! the current `Instant` supplied by the caller. Outputs: [`Output`]s (a message for a connection, or the
//! order to close one), collected with [`Rooms::poll_output`]. [`Rooms::poll_timeout`] says when
//! [`Rooms::handle_timeout`] wants to run next (resume grace expiry, TURN credential refresh).
//!
//! Wall-clock time (needed for token expiry and TURN credential expiry) is derived from the `Instant`s via
//! an anchor pair set with [`Rooms::sync_wall_clock`], so the core never reads a clock itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cluster::{
    Admission, ClusterEvent, ClusterRequest, ConnectionCount, Member, Resumption, RoomSnapshot,
};
use crate::metrics::JoinRefusal;
use crate::metrics::Metrics;
use crate::protocol::{ClientMessage, ErrorCode, Forward, Join, PeerInfo, ServerMessage};
use crate::token::{TokenError, verify_join_token};
use crate::{SignalConfig, SignalStats, ice};

mod cluster;
mod limits;
pub use limits::{FAILURE_MEMORY, FIRST_BACKOFF};
use limits::{Failure, Limits, ceil_secs};

/// How long every join to a room under password guessing waits before it is checked (see
/// [`SignalConfig::room_failed_joins_before_delay`]). Correct and wrong passwords wait alike, so the wait tells
/// a guesser nothing, and a real participant is never refused: at worst admitted this much later.
pub const ROOM_GUESS_DELAY: Duration = Duration::from_secs(1);

/// A connection, numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the driver knows about a new connection.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The client's address, for the per-IP limit (`None`: not limited).
    pub ip: Option<IpAddr>,
    /// Host for STUN/TURN URLs, already normalized ([`ice::normalize_host`]); `public_host` overrides it.
    pub host: Option<String>,
}

/// WebSocket close codes the core asks for.
pub mod close_code {
    /// Normal closure (after `leave`).
    pub const NORMAL: u16 = 1000;
    /// Policy violation (after a closing error: `room-full`, `abuse`, ...).
    pub const POLICY: u16 = 1008;
    /// The peer resumed on another connection; this one is obsolete.
    pub const REPLACED: u16 = 4000;
    /// The node is draining (SIGTERM in a cluster): reconnect, with the resume token, to another node.
    pub const DRAINING: u16 = 4001;
}

/// Cluster events kept for a room whose first snapshot has not arrived yet; more are dropped.
const MAX_EVENT_BUFFER: usize = 256;
/// Messages a connection may send while the cluster store counts it against the per-address cap (a client sends
/// its join at once; the answer takes one Redis round trip). Past this, messages are refused `rate-limited`.
const MAX_HELD_MESSAGES: usize = 8;

/// An effect for the driver to carry out.
#[derive(Debug)]
pub enum Output {
    /// Send this message on this connection.
    Send {
        /// The receiving connection.
        conn: ConnId,
        /// What to send.
        msg: ServerMessage,
    },
    /// Close this connection (after sending what was queued before). The core has already forgotten it.
    Close {
        /// The connection to close.
        conn: ConnId,
        /// WebSocket close code, one of [`close_code`].
        code: u16,
        /// Close reason (the error code after a closing error).
        reason: &'static str,
    },
    /// Ask the cluster store (only with [`Rooms::enable_cluster`]).
    Cluster(ClusterRequest),
}

/// A join waiting for the cluster store's answer.
#[derive(Debug)]
enum Pending {
    Admit {
        room: String,
        id: String,
        resume: String,
        name: String,
        name_pinned: bool,
        /// The join as asked, parked again if the store delays it.
        join: Join,
    },
    Resume {
        join: Join,
        new_token: String,
    },
    /// A bad join token, being counted by the store; `message` is the `bad-token` error's text.
    BadToken {
        message: &'static str,
    },
}

#[derive(Debug)]
struct Conn {
    ip: Option<IpAddr>,
    host: Option<String>,
    peer: Option<String>,
    ice_epoch: u64,
    /// A join held back by its room's guessing delay, checked when [`Timer::ParkedJoin`] fires. Boxed: rarely
    /// set, and inline it was more than half of every connection's entry in `conns` (issue 14: memory per
    /// connection; a table of 10,000 entries has 16,384 slots).
    parked: Option<Box<Join>>,
    /// The join has waited its room's guessing delay (a cluster store must not delay it again).
    waited: bool,
    /// Messages held while the cluster store counts this connection against the per-address cap.
    /// Boxed, like `parked`: only in a cluster, only until the store answers. The box is one pointer in every
    /// connection's entry where the Vec is three (the extra allocation only happens in a cluster).
    #[allow(clippy::box_collection)]
    held: Option<Box<Vec<ClientMessage>>>,
    /// The cluster store counts this connection in its per-address total (to be given back when it goes).
    ip_counted: bool,
}

#[derive(Debug)]
struct Peer {
    name: String,
    room: String,
    conn: Option<ConnId>,
    resume: String,
    /// Bumped on every detach and resume; a grace timer only fires for its own generation.
    epoch: u64,
    name_pinned: bool,
    /// Forwarded messages that arrived while detached.
    pending: VecDeque<ServerMessage>,
    /// The node holding this peer's connection, when it is another node of the cluster (`None`: here).
    node: Option<String>,
}

#[derive(Debug)]
struct Room {
    /// Peer ids in join order.
    members: Vec<String>,
    /// Boxed: most rooms have none, and every room's entry would carry its 48 bytes (issue 14).
    password: Option<Box<PasswordHash>>,
    /// Failed password joins, forgotten [`FAILURE_MEMORY`] after the last one.
    failed: u32,
    last_failed: Option<Instant>,
    /// Cluster: the last room event applied, whether a snapshot from the store was applied yet, the events
    /// held until then, joins of this node waiting for the store, and the stored password hash.
    version: u64,
    synced: bool,
    buffer: Vec<ClusterEvent>,
    admitting: u32,
    stored_password: Option<String>,
}

impl Room {
    fn new(password: Option<PasswordHash>) -> Self {
        Room {
            members: Vec::new(),
            password: password.map(Box::new),
            failed: 0,
            last_failed: None,
            version: 0,
            synced: false,
            buffer: Vec::new(),
            admitting: 0,
            stored_password: None,
        }
    }
}

impl Room {
    /// Whether joins to this room wait [`ROOM_GUESS_DELAY`] first.
    fn guarded(&self, now: Instant, threshold: u32) -> bool {
        threshold > 0
            && self.failed >= threshold
            && self
                .last_failed
                .is_some_and(|t| now.saturating_duration_since(t) < FAILURE_MEMORY)
    }
}

#[derive(Debug)]
struct PasswordHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl PasswordHash {
    fn new(salt: [u8; 16], password: &str) -> Self {
        Self {
            salt,
            hash: Self::digest(&salt, password),
        }
    }

    fn digest(salt: &[u8; 16], password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn matches(&self, password: &str) -> bool {
        Self::digest(&self.salt, password).ct_eq(&self.hash).into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Grace { peer: String, epoch: u64 },
    IceRefresh { conn: ConnId, epoch: u64 },
    ParkedJoin { conn: ConnId },
}

/// The signaling room core.
#[derive(Debug)]
pub struct Rooms {
    config: SignalConfig,
    metrics: Arc<Metrics>,
    rng: StdRng,
    wall_anchor: (Instant, u64),
    next_conn: u64,
    conns: HashMap<ConnId, Conn>,
    peers: HashMap<String, Peer>,
    by_resume: HashMap<String, String>,
    rooms: HashMap<String, Room>,
    per_ip: HashMap<IpAddr, u32>,
    limits: Limits,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    out: VecDeque<Output>,
    /// This node's id when rooms are shared with other nodes through a cluster store.
    node: Option<String>,
    /// Joins waiting for the cluster store, by connection (kept when the connection goes away meanwhile).
    pending: HashMap<ConnId, Pending>,
    /// Connections the cluster store is counting against the per-address cap, with their address (kept when the
    /// connection goes away meanwhile, so a late count is given back).
    counting: HashMap<ConnId, IpAddr>,
}

impl Rooms {
    /// `seed` feeds the generator of peer ids, resume tokens and password salts (use 32 random bytes in
    /// production, a fixed value in tests). `now`/`now_unix` anchor the wall clock.
    pub fn new(
        config: SignalConfig,
        metrics: Arc<Metrics>,
        seed: [u8; 32],
        now: Instant,
        now_unix: u64,
    ) -> Self {
        Self {
            limits: Limits::new(&config),
            config,
            metrics,
            rng: StdRng::from_seed(seed),
            wall_anchor: (now, now_unix),
            next_conn: 1,
            conns: HashMap::new(),
            peers: HashMap::new(),
            by_resume: HashMap::new(),
            rooms: HashMap::new(),
            per_ip: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            node: None,
            pending: HashMap::new(),
            counting: HashMap::new(),
        }
    }

    /// Shares rooms with the other nodes of a cluster: from now on admissions and cross-node resumes are
    /// asked of the store ([`Output::Cluster`]) and events of other nodes are taken with
    /// [`Rooms::handle_cluster_event`]. `node` is this node's id, unique in the cluster.
    pub fn enable_cluster(&mut self, node: String) {
        self.node = Some(node);
    }

    /// This node's cluster id, when clustered.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Re-anchors the wall clock (the driver calls this now and then; wall time may jump, `Instant` won't).
    pub fn sync_wall_clock(&mut self, now: Instant, now_unix: u64) {
        self.wall_anchor = (now, now_unix);
    }

    /// Seconds since the Unix epoch at `now`.
    pub fn unix_at(&self, now: Instant) -> u64 {
        let (at, unix) = self.wall_anchor;
        if now >= at {
            unix.saturating_add(now.duration_since(at).as_secs())
        } else {
            unix.saturating_sub(at.duration_since(now).as_secs())
        }
    }

    /// Connections, rooms and peers (grace-period peers included) held right now.
    pub fn stats(&self) -> SignalStats {
        SignalStats {
            connections: self.conns.len(),
            rooms: self.rooms.len(),
            peers: self.peers.len(),
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Rooms::handle_timeout`] should next be called. May be early (a cancelled timer), never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    // -----------------------------------------------------------------------------------------------------
    // Connections

    /// A WebSocket connection opened. Over the per-IP limit it is refused at once (`too-many-connections`
    /// and a close are queued; the id is then already forgotten).
    pub fn open(&mut self, _now: Instant, info: ConnInfo) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let ip = info.ip.map(ip_key);
        if let Some(ip) = ip {
            let limit = self.config.max_connections_per_ip;
            let count = self.per_ip.entry(ip).or_insert(0);
            if limit > 0 && *count >= limit {
                self.emit_error(
                    id,
                    ErrorCode::TooManyConnections,
                    "too many connections from your address",
                    None,
                );
                self.out.push_back(Output::Close {
                    conn: id,
                    code: close_code::POLICY,
                    reason: ErrorCode::TooManyConnections.as_str(),
                });
                return id;
            }
            *count += 1;
        }
        self.metrics.connection_accepted();
        // In a cluster the cap holds across nodes: the store counts the connection too (its messages wait).
        let limit = self.config.max_connections_per_ip;
        let held = match ip {
            Some(ip) if self.node.is_some() && limit > 0 => {
                self.counting.insert(id, ip);
                self.out
                    .push_back(Output::Cluster(ClusterRequest::CountConnection {
                        conn: id,
                        ip,
                        limit,
                    }));
                Some(Box::default())
            }
            _ => None,
        };
        self.conns.insert(
            id,
            Conn {
                ip,
                host: info.host,
                peer: None,
                ice_epoch: 0,
                parked: None,
                waited: false,
                held,
                ip_counted: false,
            },
        );
        id
    }

    /// The connection is gone (socket closed, ping timeout, slow consumer). Its peer, if any, keeps its id
    /// and place for the resume grace period; nobody is told yet.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.forget_conn(conn) else {
            return;
        };
        let Some(peer_id) = c.peer else {
            return;
        };
        let grace = self.config.resume_grace;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.conn != Some(conn) {
            return;
        }
        peer.conn = None;
        peer.epoch += 1;
        if grace.is_zero() {
            self.remove_peer(&peer_id);
        } else {
            let epoch = peer.epoch;
            self.push_timer(
                now + grace,
                Timer::Grace {
                    peer: peer_id,
                    epoch,
                },
            );
        }
    }

    /// Closes a connection with a closing error (the driver uses it for `abuse`). Its peer leaves at once.
    pub fn kick(&mut self, _now: Instant, conn: ConnId, code: ErrorCode) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let message = match code {
            ErrorCode::Abuse => "too many errors in a row: closing this connection",
            _ => "closing this connection",
        };
        let _ = self.close_with_error(conn, code, message, None);
    }

    // -----------------------------------------------------------------------------------------------------
    // Messages

    /// Handles one validated message. `Err(code)` when it was refused (the `error` is already queued for
    /// `conn`); the caller counts consecutive errors with it.
    pub fn handle_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        msg: ClientMessage,
    ) -> Result<(), ErrorCode> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(()); // already closed: late frames are dropped
        };
        if let Some(held) = &mut c.held {
            if held.len() < MAX_HELD_MESSAGES {
                held.push(msg);
                return Ok(());
            }
            return self.fail(
                conn,
                ErrorCode::RateLimited,
                "too many messages before the server accepted this connection",
                Some(msg.type_name()),
            );
        }
        let peer_id = c.peer.clone();
        let parked = c.parked.is_some() || self.pending.contains_key(&conn);
        let ty = msg.type_name();
        match (msg, peer_id) {
            (ClientMessage::Ping, _) => {
                self.send(conn, ServerMessage::Pong);
                Ok(())
            }
            (ClientMessage::Join(_), None) if parked => self.fail(
                conn,
                ErrorCode::AlreadyJoined,
                "a join is already in progress on this connection",
                Some("join"),
            ),
            (ClientMessage::Join(join), None) => self.join(now, conn, join),
            (ClientMessage::Join(_), Some(_)) => self.fail(
                conn,
                ErrorCode::AlreadyJoined,
                "this connection has already joined a room",
                Some("join"),
            ),
            (_, None) => self.fail(conn, ErrorCode::NotJoined, "send join first", Some(ty)),
            (ClientMessage::Forward(f), Some(from)) => self.forward(conn, &from, f),
            (ClientMessage::Rename { name }, Some(id)) => self.rename(conn, &id, name),
            (ClientMessage::Leave, Some(id)) => {
                self.forget_conn(conn);
                self.remove_peer(&id);
                self.out.push_back(Output::Close {
                    conn,
                    code: close_code::NORMAL,
                    reason: "leave",
                });
                Ok(())
            }
        }
    }

    fn join(&mut self, now: Instant, conn: ConnId, join: Join) -> Result<(), ErrorCode> {
        // Resume: a live resume token for the same room gives back the same peer.
        if let Some(token) = &join.resume
            && let Some(peer_id) = self.by_resume.get(token).cloned()
            && self
                .peers
                .get(&peer_id)
                .is_some_and(|p| p.room == join.room && p.node.is_none())
        {
            self.resume(now, conn, &peer_id, join);
            return Ok(());
        }
        if self.node.is_some()
            && let Some(token) = join.resume.clone()
        {
            // Unknown here: the peer may have been held by another node (dead, draining or just elsewhere).
            let new_token = self.new_resume_token();
            let room = join.room.clone();
            let name = join.name.clone();
            self.ensure_cluster_room(&room);
            self.pending.insert(
                conn,
                Pending::Resume {
                    join,
                    new_token: new_token.clone(),
                },
            );
            self.out.push_back(Output::Cluster(ClusterRequest::Resume {
                conn,
                room,
                token,
                new_token,
                name,
            }));
            return Ok(());
        }

        let ip = self.conns.get(&conn).and_then(|c| c.ip);
        if let Some(ip) = ip {
            if let Some(left) = self.limits.backoff_left(ip, now) {
                return self.refuse_backoff(conn, left);
            }
            if !self.limits.take_join(ip, now) {
                return self.refuse_join_rate(conn);
            }
        }
        let threshold = self.config.room_failed_joins_before_delay;
        if self
            .rooms
            .get(&join.room)
            .is_some_and(|r| r.guarded(now, threshold))
            && let Some(c) = self.conns.get_mut(&conn)
        {
            // Checked in ROOM_GUESS_DELAY, whatever the password: see `ROOM_GUESS_DELAY`.
            c.parked = Some(Box::new(join));
            c.waited = true;
            self.metrics.join_delayed();
            self.push_timer(now + ROOM_GUESS_DELAY, Timer::ParkedJoin { conn });
            return Ok(());
        }
        self.admit(now, conn, join)
    }

    /// The checks of a join that is not a resume, once the per-address throttles let it through.
    fn admit(&mut self, now: Instant, conn: ConnId, join: Join) -> Result<(), ErrorCode> {
        let mut name = join.name.clone();
        let mut name_pinned = false;
        if let Some(secret) = &self.config.join_token_secret {
            let Some(token) = &join.token else {
                return self.close_with_error(
                    conn,
                    ErrorCode::BadToken,
                    "this server requires a join token",
                    Some("join"),
                );
            };
            match verify_join_token(secret.as_bytes(), token, &join.room, self.unix_at(now)) {
                Ok(claims) => {
                    if let Some(n) = claims.name {
                        name = n.trim().to_owned();
                        name_pinned = true;
                    }
                }
                Err(e) => {
                    let message = match e {
                        TokenError::Expired => "the join token has expired",
                        TokenError::WrongRoom => "the join token is for another room",
                        _ => "the join token is not valid",
                    };
                    return self.refuse_bad_token(now, conn, message);
                }
            }
        }

        if self.node.is_some() {
            return self.admit_cluster(conn, join, name, name_pinned);
        }
        match self.rooms.get(&join.room) {
            Some(room) => {
                let wrong_password = room
                    .password
                    .as_ref()
                    .is_some_and(|hash| !join.password.as_deref().is_some_and(|p| hash.matches(p)));
                let members = room.members.len();
                if wrong_password {
                    self.count_failure(now, conn, Some(&join.room), "wrong password");
                    return self.close_with_error(
                        conn,
                        ErrorCode::WrongPassword,
                        "wrong password for this room",
                        Some("join"),
                    );
                }
                if members >= self.config.max_peers_per_room {
                    let message = format!(
                        "the room is full ({} peers)",
                        self.config.max_peers_per_room
                    );
                    return self.close_with_error(conn, ErrorCode::RoomFull, message, Some("join"));
                }
            }
            None => {
                if self.rooms.len() >= self.config.max_rooms {
                    return self.close_with_error(
                        conn,
                        ErrorCode::TooManyRooms,
                        "the server has reached its room limit",
                        Some("join"),
                    );
                }
                if self.config.require_room_password && join.password.is_none() {
                    return self.close_with_error(
                        conn,
                        ErrorCode::WrongPassword,
                        "this server requires a password for new rooms",
                        Some("join"),
                    );
                }
                if self.config.max_peers_per_room == 0 {
                    return self.close_with_error(
                        conn,
                        ErrorCode::RoomFull,
                        "rooms are closed (capacity 0)",
                        Some("join"),
                    );
                }
                // Last: only a room that is really about to be created costs a token.
                if let Some(ip) = self.conns.get(&conn).and_then(|c| c.ip)
                    && !self.limits.take_room(ip, now)
                {
                    return self.refuse_new_room_rate(conn);
                }
                let password = join
                    .password
                    .as_deref()
                    .map(|p| PasswordHash::new(self.rng.r#gen(), p));
                self.rooms.insert(join.room.clone(), Room::new(password));
            }
        }

        let id = self.new_peer_id();
        let resume = self.new_resume_token();
        let peers = self.peer_list(&join.room, &id);
        let room = self
            .rooms
            .get_mut(&join.room)
            .expect("room exists: found or created just above");
        room.members.push(id.clone());
        let others = room.members.clone();
        self.by_resume.insert(resume.clone(), id.clone());
        self.peers.insert(
            id.clone(),
            Peer {
                name: name.clone(),
                room: join.room.clone(),
                conn: Some(conn),
                resume: resume.clone(),
                epoch: 0,
                name_pinned,
                pending: VecDeque::new(),
                node: None,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(id.clone());
        }
        let ice_servers = self.ice_for(now, conn, &id);
        self.send(
            conn,
            ServerMessage::Welcome {
                id: id.clone(),
                room: join.room,
                peers,
                ice_servers,
                resume,
                resumed: false,
            },
        );
        let info = PeerInfo {
            id: id.clone(),
            name,
        };
        for other in others.iter().filter(|o| **o != id) {
            self.send_to_peer_if_attached(other, ServerMessage::PeerJoined { peer: info.clone() });
        }
        Ok(())
    }

    /// The members of `room` but `except`, as `welcome` lists them.
    fn peer_list(&self, room: &str, except: &str) -> Vec<PeerInfo> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        room.members
            .iter()
            .filter(|m| *m != except)
            .filter_map(|m| {
                self.peers.get(m).map(|p| PeerInfo {
                    id: m.clone(),
                    name: p.name.clone(),
                })
            })
            .collect()
    }

    fn resume(&mut self, now: Instant, conn: ConnId, peer_id: &str, join: Join) {
        self.metrics.resumed();
        let new_token = self.new_resume_token();
        let Some(peer) = self.peers.get_mut(peer_id) else {
            return;
        };
        let old_conn = peer.conn.replace(conn);
        peer.epoch += 1; // cancels a pending grace timer
        let old_token = std::mem::replace(&mut peer.resume, new_token.clone());
        let renamed = (!peer.name_pinned && peer.name != join.name).then(|| {
            peer.name = join.name.clone();
            PeerInfo {
                id: peer_id.to_owned(),
                name: join.name.clone(),
            }
        });
        let pending = std::mem::take(&mut peer.pending);
        let room_name = peer.room.clone();
        self.by_resume.remove(&old_token);
        self.by_resume.insert(new_token.clone(), peer_id.to_owned());
        if self.node.is_some() {
            self.out.push_back(Output::Cluster(ClusterRequest::Retoken {
                room: room_name.clone(),
                id: peer_id.to_owned(),
                old: old_token,
                new: new_token.clone(),
            }));
            if let Some(info) = &renamed {
                self.out.push_back(Output::Cluster(ClusterRequest::Rename {
                    room: room_name.clone(),
                    id: peer_id.to_owned(),
                    name: info.name.clone(),
                }));
            }
        }
        if let Some(old) = old_conn.filter(|old| *old != conn) {
            // The old socket is still open on our side (its loss was not noticed yet): retire it quietly.
            self.forget_conn(old);
            self.out.push_back(Output::Close {
                conn: old,
                code: close_code::REPLACED,
                reason: "resumed elsewhere",
            });
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(peer_id.to_owned());
        }
        let peers = self.peer_list(&room_name, peer_id);
        let ice_servers = self.ice_for(now, conn, peer_id);
        self.send(
            conn,
            ServerMessage::Welcome {
                id: peer_id.to_owned(),
                room: room_name.clone(),
                peers,
                ice_servers,
                resume: new_token,
                resumed: true,
            },
        );
        for msg in pending {
            self.send(conn, msg);
        }
        if let Some(info) = renamed {
            for other in self.peer_list(&room_name, peer_id) {
                self.send_to_peer_if_attached(
                    &other.id,
                    ServerMessage::PeerUpdated { peer: info.clone() },
                );
            }
        }
    }

    fn forward(&mut self, conn: ConnId, from: &str, f: Forward) -> Result<(), ErrorCode> {
        let ty = f.kind.type_name();
        let Some(room) = self.peers.get(from).map(|p| p.room.clone()) else {
            return Ok(());
        };
        let max_pending = self.config.max_pending_per_peer;
        let target = match self.peers.get_mut(&f.to) {
            Some(t) if t.room == room && f.to != from => t,
            _ => {
                return self.fail(
                    conn,
                    ErrorCode::UnknownPeer,
                    "no such peer in your room",
                    Some(ty),
                );
            }
        };
        if target.node.is_some() {
            self.metrics.forwarded();
            self.out.push_back(Output::Cluster(ClusterRequest::Forward {
                room,
                to: f.to,
                from: from.to_owned(),
                kind: f.kind,
                payload: f.payload,
            }));
            return Ok(());
        }
        let msg = ServerMessage::Forward {
            kind: f.kind,
            from: from.to_owned(),
            payload: f.payload,
        };
        match target.conn {
            Some(to) => {
                self.metrics.forwarded();
                self.send(to, msg);
            }
            None if target.pending.len() < max_pending => {
                self.metrics.forwarded();
                target.pending.push_back(msg);
            }
            None => {} // the peer is away and its backlog is full: drop, as a lost packet would be
        }
        Ok(())
    }

    fn rename(&mut self, conn: ConnId, id: &str, name: String) -> Result<(), ErrorCode> {
        let Some(peer) = self.peers.get_mut(id) else {
            return Ok(());
        };
        if peer.name_pinned {
            return self.fail(
                conn,
                ErrorCode::BadField,
                "the name is set by the join token",
                Some("rename"),
            );
        }
        if peer.name == name {
            return Ok(());
        }
        peer.name = name.clone();
        let room = peer.room.clone();
        if self.node.is_some() {
            self.out.push_back(Output::Cluster(ClusterRequest::Rename {
                room: room.clone(),
                id: id.to_owned(),
                name: name.clone(),
            }));
        }
        let info = PeerInfo {
            id: id.to_owned(),
            name,
        };
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for other in members.iter().filter(|m| *m != id) {
            self.send_to_peer_if_attached(other, ServerMessage::PeerUpdated { peer: info.clone() });
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------------------
    // Time

    /// Runs the timers due at `now`: peers past their grace period leave; TURN credentials are refreshed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Grace { ref peer, .. } => {
                    if self.timer_live(&timer) {
                        self.remove_peer(peer);
                    }
                }
                Timer::ParkedJoin { conn } => {
                    let Some(join) = self.conns.get_mut(&conn).and_then(|c| c.parked.take()) else {
                        continue;
                    };
                    let _ = self.admit(now, conn, *join);
                }
                Timer::IceRefresh { conn, .. } => {
                    if !self.timer_live(&timer) {
                        continue;
                    }
                    let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
                        continue;
                    };
                    let ice_servers = self.ice_for(now, conn, &peer);
                    self.send(conn, ServerMessage::IceServers { ice_servers });
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Helpers

    /// ICE servers for a peer on a connection, and the refresh timer that goes with them.
    fn ice_for(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer_id: &str,
    ) -> Vec<crate::protocol::IceServer> {
        let unix = self.unix_at(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let host = self
            .config
            .public_host
            .as_deref()
            .and_then(ice::normalize_host)
            .or_else(|| c.host.clone());
        let list = ice::ice_servers(self.config.turn.as_ref(), host.as_deref(), peer_id, unix);
        if let (Some(turn), false) = (&self.config.turn, list.is_empty()) {
            c.ice_epoch += 1;
            let epoch = c.ice_epoch;
            let at = now + ice::refresh_after(turn.credential_ttl);
            self.push_timer(at, Timer::IceRefresh { conn, epoch });
        }
        list
    }

    fn push_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
        // Cancelled timers stay in the heap until due; under heavy churn, drop them early so the heap stays
        // proportional to the live connections and peers.
        if self.timers.len() > 2 * (self.conns.len() + self.peers.len()) + 1024 {
            let timers = std::mem::take(&mut self.timers);
            self.timers = timers
                .into_iter()
                .filter(|Reverse((_, t))| self.timer_live(t))
                .collect();
        }
    }

    fn timer_live(&self, timer: &Timer) -> bool {
        match timer {
            Timer::Grace { peer, epoch } => self
                .peers
                .get(peer)
                .is_some_and(|p| p.epoch == *epoch && p.conn.is_none()),
            Timer::IceRefresh { conn, epoch } => {
                self.conns.get(conn).is_some_and(|c| c.ice_epoch == *epoch)
            }
            Timer::ParkedJoin { conn } => self.conns.get(conn).is_some_and(|c| c.parked.is_some()),
        }
    }

    /// Entries in the timer heap (live or cancelled); for tests.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn remove_peer(&mut self, id: &str) {
        self.remove_peer_inner(id, true);
    }

    /// Removes a peer and tells the room's local members; `tell_store`: a local peer's leave goes to the
    /// cluster store too (not when the store told us).
    fn remove_peer_inner(&mut self, id: &str, tell_store: bool) {
        let Some(peer) = self.peers.remove(id) else {
            return;
        };
        self.by_resume.remove(&peer.resume);
        if let Some(c) = peer.conn.and_then(|c| self.conns.get_mut(&c)) {
            c.peer = None;
        }
        if tell_store && self.node.is_some() && peer.node.is_none() {
            self.out.push_back(Output::Cluster(ClusterRequest::Leave {
                room: peer.room.clone(),
                id: id.to_owned(),
                token: peer.resume.clone(),
            }));
        }
        let Some(room) = self.rooms.get_mut(&peer.room) else {
            return;
        };
        room.members.retain(|m| m != id);
        if self.node.is_some() {
            let members = room.members.clone();
            for other in &members {
                self.send_to_peer_if_attached(other, ServerMessage::PeerLeft { id: id.to_owned() });
            }
            self.maybe_drop_room(&peer.room);
            return;
        }
        if room.members.is_empty() {
            self.rooms.remove(&peer.room);
            return;
        }
        let members = room.members.clone();
        for other in &members {
            self.send_to_peer_if_attached(other, ServerMessage::PeerLeft { id: id.to_owned() });
        }
    }

    fn forget_conn(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if let Some(ip) = c.ip
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        if c.ip_counted
            && let Some(ip) = c.ip
        {
            self.out
                .push_back(Output::Cluster(ClusterRequest::UncountConnection { ip }));
        }
        Some(c)
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.out.push_back(Output::Send { conn, msg });
    }

    fn send_to_peer_if_attached(&mut self, peer: &str, msg: ServerMessage) {
        if let Some(conn) = self.peers.get(peer).and_then(|p| p.conn) {
            self.send(conn, msg);
        }
    }

    fn emit_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<std::borrow::Cow<'static, str>>,
        ref_type: Option<&'static str>,
    ) {
        self.metrics.error(code);
        self.send(conn, ServerMessage::error(code, message, ref_type));
    }

    /// Queues a non-closing error for `conn`.
    fn fail(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<std::borrow::Cow<'static, str>>,
        ref_type: Option<&'static str>,
    ) -> Result<(), ErrorCode> {
        self.emit_error(conn, code, message, ref_type);
        Err(code)
    }

    /// A join refused by a per-address throttle: counted, answered `too-many-joins`, closed.
    fn refuse_join(
        &mut self,
        conn: ConnId,
        why: JoinRefusal,
        message: String,
    ) -> Result<(), ErrorCode> {
        self.metrics.join_refused(why);
        self.close_with_error(conn, ErrorCode::TooManyJoins, message, Some("join"))
    }

    /// Refuses a join of an address backing off after failed joins (`left` to go), on this node or the cluster's.
    fn refuse_backoff(&mut self, conn: ConnId, left: Duration) -> Result<(), ErrorCode> {
        let message = format!(
            "too many failed joins from your address: try again in {} s",
            ceil_secs(left)
        );
        self.refuse_join(conn, JoinRefusal::Backoff, message)
    }

    /// Refuses a join of an address past `max_joins_per_min`.
    fn refuse_join_rate(&mut self, conn: ConnId) -> Result<(), ErrorCode> {
        let message = format!(
            "too many joins from your address (at most {} a minute): try again shortly",
            self.config.max_joins_per_min
        );
        self.refuse_join(conn, JoinRefusal::JoinRate, message)
    }

    /// Refuses a join that would create a room for an address past `max_new_rooms_per_min`.
    fn refuse_new_room_rate(&mut self, conn: ConnId) -> Result<(), ErrorCode> {
        let message = format!(
            "too many new rooms from your address (at most {} a minute): try again shortly",
            self.config.max_new_rooms_per_min
        );
        self.refuse_join(conn, JoinRefusal::NewRoomRate, message)
    }

    /// A failed join (wrong password, bad token): counted against the address and, for a password, the room.
    /// The address backs off past its allowance; the room delays joins past its threshold. Both are logged
    /// when they start, the single failures at debug level.
    fn count_failure(&mut self, now: Instant, conn: ConnId, room: Option<&str>, what: &str) {
        self.metrics.join_failed();
        let ip = self.conns.get(&conn).and_then(|c| c.ip);
        if let Some(ip) = ip {
            match self.limits.fail(ip, now) {
                Failure::Counted(n) => {
                    tracing::debug!(client = %ip, failures = n, "signaling: failed join ({what})");
                }
                Failure::Backoff(n, d) => tracing::warn!(
                    client = %ip,
                    failures = n,
                    "signaling: {n} failed joins ({what}) from {ip}: its joins are refused for {} s",
                    ceil_secs(d)
                ),
            }
        }
        let threshold = self.config.room_failed_joins_before_delay;
        if let Some(name) = room
            && let Some(r) = self.rooms.get_mut(name)
        {
            if r.last_failed
                .is_some_and(|t| now.saturating_duration_since(t) >= FAILURE_MEMORY)
            {
                r.failed = 0;
            }
            r.failed = r.failed.saturating_add(1);
            r.last_failed = Some(now);
            if threshold > 0 && r.failed == threshold {
                tracing::warn!(
                    room = name,
                    "signaling: {threshold} failed password joins to room {name:?}: every join to it now \
                     waits {} s before it is checked",
                    ROOM_GUESS_DELAY.as_secs()
                );
            }
        }
    }

    /// Queues a closing error for `conn`, closes it, and removes its peer at once (no grace).
    fn close_with_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<std::borrow::Cow<'static, str>>,
        ref_type: Option<&'static str>,
    ) -> Result<(), ErrorCode> {
        self.emit_error(conn, code, message, ref_type);
        if let Some(peer) = self.forget_conn(conn).and_then(|c| c.peer) {
            self.remove_peer(&peer);
        }
        self.out.push_back(Output::Close {
            conn,
            code: close_code::POLICY,
            reason: code.as_str(),
        });
        Err(code)
    }

    fn new_peer_id(&mut self) -> String {
        loop {
            let n: u64 = self.rng.r#gen::<u64>() & 0xffff_ffff_ffff;
            // In a cluster the node's id makes the peer id unique cluster-wide (it stays the peer's id when it
            // resumes on another node).
            let id = match &self.node {
                Some(node) => format!("p-{node}-{:08x}", n & 0xffff_ffff),
                None => format!("p-{n:012x}"),
            };
            if !self.peers.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_resume_token(&mut self) -> String {
        loop {
            let bytes: [u8; 18] = self.rng.r#gen();
            let token = URL_SAFE_NO_PAD.encode(bytes);
            if !self.by_resume.contains_key(&token) {
                return token;
            }
        }
    }
}

/// The unit of the per-IP limit: the IPv4 address, or the /64 of an IPv6 address.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;
