//! The room core's cluster inputs and outputs (only with [`Rooms::enable_cluster`]): admissions and resumes
//! decided by the store, events of other nodes applied in the room's order. Still sans-IO.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use super::limits::ceil_secs;
use super::{
    Admission, ClusterEvent, ClusterRequest, ConnId, ConnectionCount, FAILURE_MEMORY,
    FIRST_BACKOFF, MAX_EVENT_BUFFER, Member, Output, Peer, Pending, ROOM_GUESS_DELAY, Resumption,
    Room, RoomSnapshot, Rooms, Timer, close_code,
};
use crate::cluster::{FailureLimits, Throttle};
use crate::protocol::{ErrorCode, Join, PeerInfo, ServerMessage};

impl Rooms {
    /// The room exists here (created and subscribed to when it did not), with one more join in flight.
    pub(super) fn ensure_cluster_room(&mut self, room: &str) {
        if !self.rooms.contains_key(room) {
            self.rooms.insert(room.to_owned(), Room::new(None));
            self.out
                .push_back(Output::Cluster(ClusterRequest::Subscribe {
                    room: room.to_owned(),
                }));
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.admitting += 1;
        }
    }

    /// A fresh join in a cluster: the local checks are done; capacity and password are the store's.
    pub(super) fn admit_cluster(
        &mut self,
        conn: ConnId,
        join: Join,
        name: String,
        name_pinned: bool,
    ) -> Result<(), ErrorCode> {
        if !self.rooms.contains_key(&join.room) && self.rooms.len() >= self.config.max_rooms {
            return self.close_with_error(
                conn,
                ErrorCode::TooManyRooms,
                "the server has reached its room limit",
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
        let id = self.new_peer_id();
        let resume = self.new_resume_token();
        let ip = self.conns.get(&conn).and_then(|c| c.ip);
        self.ensure_cluster_room(&join.room);
        self.pending.insert(
            conn,
            Pending::Admit {
                room: join.room.clone(),
                id: id.clone(),
                resume: resume.clone(),
                name: name.clone(),
                name_pinned,
                join: join.clone(),
            },
        );
        let failures = Box::new(self.failure_limits(conn));
        self.out.push_back(Output::Cluster(ClusterRequest::Admit {
            conn,
            room: join.room,
            id,
            name,
            resume,
            password: join.password,
            capacity: self.config.max_peers_per_room,
            require_password: self.config.require_room_password,
            ip,
            joins_per_min: self.config.max_joins_per_min,
            rooms_per_min: self.config.max_new_rooms_per_min,
            failures,
        }));
        Ok(())
    }

    /// A join with a bad join token (`message` says why), refused `bad-token`. One node counts it against the
    /// address itself; in a cluster the store counts it with the address's other failed joins on every node (and
    /// answers with [`Rooms::handle_admission`]), so spreading guesses over the nodes buys no more of them.
    pub(super) fn refuse_bad_token(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: &'static str,
    ) -> Result<(), ErrorCode> {
        let ip = self.conns.get(&conn).and_then(|c| c.ip);
        let (Some(ip), Some(_)) = (ip, &self.node) else {
            self.count_failure(now, conn, None, "bad token");
            return self.close_with_error(conn, ErrorCode::BadToken, message, Some("join"));
        };
        self.pending.insert(conn, Pending::BadToken { message });
        self.out
            .push_back(Output::Cluster(ClusterRequest::BadToken {
                conn,
                ip,
                joins_per_min: self.config.max_joins_per_min,
                failures: Box::new(self.failure_limits(conn)),
            }));
        Ok(())
    }

    /// The store's answer to a [`ClusterRequest::BadToken`]: refused `bad-token` unless the address is backing
    /// off or out of joins (then refused as any join of it would be, so the answer tells a guesser nothing about
    /// the token). Without the store, the failure is counted here.
    fn handle_bad_token(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: &'static str,
        answer: Admission,
    ) {
        if !self.conns.contains_key(&conn) {
            return; // gone meanwhile; the store counted the failure all the same
        }
        match answer {
            Admission::BadToken { failures, backoff } => {
                self.metrics.join_failed();
                self.log_cluster_failure(conn, "bad token", failures, backoff);
            }
            Admission::Backoff(left) => {
                let _ = self.refuse_backoff(conn, left);
                return;
            }
            Admission::Throttled(_) => {
                let _ = self.refuse_join_rate(conn);
                return;
            }
            // The token is bad whatever the store: counted by this node's own limits for now.
            _ => self.count_failure(now, conn, None, "bad token"),
        }
        let _ = self.close_with_error(conn, ErrorCode::BadToken, message, Some("join"));
    }

    /// Logs a failed join the store counted: the back-off it starts as a warning, single failures at debug level.
    fn log_cluster_failure(
        &self,
        conn: ConnId,
        what: &str,
        failures: u32,
        backoff: Option<std::time::Duration>,
    ) {
        let ip = self.conns.get(&conn).and_then(|c| c.ip);
        let ip = ip.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
        match backoff {
            Some(d) => tracing::warn!(
                client = %ip,
                failures,
                "signaling: {failures} failed joins ({what}) from {ip} across the cluster: its joins are \
                 refused for {} s",
                ceil_secs(d)
            ),
            None => tracing::debug!(client = %ip, failures, "signaling: failed join ({what})"),
        }
    }

    /// This node's failed-join limits, for the store to apply to the cluster-wide counts.
    fn failure_limits(&self, conn: ConnId) -> FailureLimits {
        FailureLimits {
            backoff_after: self.config.failed_joins_before_backoff,
            first_backoff: FIRST_BACKOFF,
            max_backoff: self.config.max_join_backoff.max(FIRST_BACKOFF),
            memory: FAILURE_MEMORY.max(self.config.max_join_backoff.saturating_mul(2)),
            room_delay_after: self.config.room_failed_joins_before_delay,
            room_memory: FAILURE_MEMORY,
            delayed: self.conns.get(&conn).is_some_and(|c| c.waited),
        }
    }

    /// The store's answer to a [`ClusterRequest::CountConnection`]: the connection is refused, or its held
    /// messages are handled now. When the store cannot answer, the node's own cap (already checked) is the limit.
    pub fn handle_connection_count(&mut self, now: Instant, conn: ConnId, count: ConnectionCount) {
        let Some(ip) = self.counting.remove(&conn) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            if count == ConnectionCount::Counted {
                // Gone while the store counted it: give the count back.
                self.out
                    .push_back(Output::Cluster(ClusterRequest::UncountConnection { ip }));
            }
            return;
        };
        let held = c.held.take().map(|h| *h).unwrap_or_default();
        match count {
            ConnectionCount::Refused => {
                let limit = self.config.max_connections_per_ip;
                self.forget_conn(conn);
                self.emit_error(
                    conn,
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address (at most {limit} across this service's nodes)"
                    ),
                    None,
                );
                self.out.push_back(Output::Close {
                    conn,
                    code: close_code::POLICY,
                    reason: ErrorCode::TooManyConnections.as_str(),
                });
                return;
            }
            ConnectionCount::Counted => c.ip_counted = true,
            ConnectionCount::Unavailable => {}
            #[allow(unreachable_patterns)]
            _ => {}
        }
        for msg in held {
            let _ = self.handle_message(now, conn, msg);
        }
    }

    /// This node's connections per address, for writing back into the store (after it lost its data, or after
    /// counts could not be kept while it was unreachable). Every connection so listed counts as stored from now
    /// on; those the store is still counting are left out.
    pub fn cluster_ip_counts(&mut self) -> Vec<(IpAddr, u32)> {
        let mut counts: HashMap<IpAddr, u32> = HashMap::new();
        for c in self.conns.values_mut() {
            if let Some(ip) = c.ip
                && c.held.is_none()
            {
                c.ip_counted = true;
                *counts.entry(ip).or_insert(0) += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// The store's answer to a [`ClusterRequest::Admit`].
    pub fn handle_admission(&mut self, now: Instant, conn: ConnId, admission: Admission) {
        let (room, id, resume, name, name_pinned, join) = match self.pending.remove(&conn) {
            Some(Pending::Admit {
                room,
                id,
                resume,
                name,
                name_pinned,
                join,
            }) => (room, id, resume, name, name_pinned, join),
            Some(Pending::BadToken { message }) => {
                return self.handle_bad_token(now, conn, message, admission);
            }
            Some(other) => {
                // Not an admission (a resume): left for its own answer.
                self.pending.insert(conn, other);
                return;
            }
            None => return,
        };
        let alive = self.conns.contains_key(&conn);
        match admission {
            Admission::Admitted { .. } if !alive => {
                // The client went away while the store admitted it: give the place back.
                self.out.push_back(Output::Cluster(ClusterRequest::Leave {
                    room: room.clone(),
                    id,
                    token: resume,
                }));
            }
            Admission::Admitted {
                seq,
                members,
                password,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.stored_password = password;
                }
                self.apply_snapshot(now, &room, seq, &members, &id);
                self.install_local(conn, &room, &id, &name, &resume, name_pinned);
                self.welcome_local(now, conn, &room, &id, resume, false);
                let info = PeerInfo {
                    id: id.clone(),
                    name,
                };
                self.tell_locals(&room, &id, ServerMessage::PeerJoined { peer: info });
            }
            Admission::Refused(code) if alive => {
                let message = match code {
                    ErrorCode::WrongPassword => {
                        self.count_failure(now, conn, None, "wrong password");
                        "wrong password for this room".to_owned()
                    }
                    ErrorCode::RoomFull => format!(
                        "the room is full ({} peers)",
                        self.config.max_peers_per_room
                    ),
                    _ => "the join was refused".to_owned(),
                };
                let _ = self.close_with_error(conn, code, message, Some("join"));
            }
            Admission::WrongPassword {
                failures,
                room_failures,
                backoff,
            } if alive => {
                self.metrics.join_failed();
                self.log_cluster_failure(conn, "wrong password", failures, backoff);
                let threshold = self.config.room_failed_joins_before_delay;
                if threshold > 0 && room_failures == threshold {
                    tracing::warn!(
                        room = room.as_str(),
                        "signaling: {threshold} failed password joins to room {room:?} across the cluster: every \
                         join to it now waits {} s before it is checked",
                        ROOM_GUESS_DELAY.as_secs()
                    );
                }
                let _ = self.close_with_error(
                    conn,
                    ErrorCode::WrongPassword,
                    "wrong password for this room",
                    Some("join"),
                );
            }
            Admission::Backoff(left) if alive => {
                let _ = self.refuse_backoff(conn, left);
            }
            Admission::Delay if alive => {
                // Held like a local delayed join; the place this node reserved for it is asked for again.
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.parked = Some(Box::new(join));
                    c.waited = true;
                }
                self.metrics.join_delayed();
                self.push_timer(now + ROOM_GUESS_DELAY, Timer::ParkedJoin { conn });
            }
            Admission::Throttled(Throttle::NewRooms) if alive => {
                let _ = self.refuse_new_room_rate(conn);
            }
            Admission::Throttled(_) if alive => {
                let _ = self.refuse_join_rate(conn);
            }
            Admission::Unavailable if alive => {
                self.refuse_unavailable(conn);
            }
            _ => {}
        }
        self.admitted_one(&room);
    }

    /// The store's answer to a [`ClusterRequest::Resume`].
    pub fn handle_resumption(&mut self, now: Instant, conn: ConnId, resumption: Resumption) {
        let Some(Pending::Resume { join, new_token }) = self.pending.remove(&conn) else {
            return;
        };
        let room = join.room.clone();
        let alive = self.conns.contains_key(&conn);
        match resumption {
            Resumption::Resumed {
                id,
                name,
                seq,
                members,
                password,
            } => {
                self.metrics.resumed();
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.stored_password = password;
                }
                self.apply_snapshot(now, &room, seq, &members, &id);
                self.install_local(conn, &room, &id, &name, &new_token, false);
                if alive {
                    self.welcome_local(now, conn, &room, &id, new_token, true);
                    if join.name != name {
                        let _ = self.rename(conn, &id, join.name);
                    }
                } else if let Some(p) = self.peers.get_mut(&id) {
                    // Gone again before the answer: keep the place for the grace period, as any drop.
                    p.conn = None;
                    p.epoch += 1;
                    let epoch = p.epoch;
                    self.push_timer(
                        now + self.config.resume_grace,
                        super::Timer::Grace { peer: id, epoch },
                    );
                }
            }
            Resumption::Unknown if alive => {
                let mut join = join;
                join.resume = None;
                let _ = self.join(now, conn, join);
            }
            Resumption::Unavailable if alive => {
                self.refuse_unavailable(conn);
            }
            _ => {}
        }
        self.admitted_one(&room);
    }

    /// Closes a join or resume that the cluster store could not answer, with the `unavailable` error.
    fn refuse_unavailable(&mut self, conn: ConnId) {
        let _ = self.close_with_error(
            conn,
            ErrorCode::Unavailable,
            "the cluster store (Redis) cannot be reached: try again in a moment",
            Some("join"),
        );
    }

    /// One join of `room` in flight is answered: the room may go if it has nothing left here.
    fn admitted_one(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.admitting = r.admitting.saturating_sub(1);
        }
        self.maybe_drop_room(room);
    }

    /// Makes `id` a local peer of `room` on `conn` (a remote entry of the same id is taken over).
    fn install_local(
        &mut self,
        conn: ConnId,
        room: &str,
        id: &str,
        name: &str,
        resume: &str,
        name_pinned: bool,
    ) {
        let peer = self.peers.entry(id.to_owned()).or_insert_with(|| Peer {
            name: name.to_owned(),
            room: room.to_owned(),
            conn: None,
            resume: String::new(),
            epoch: 0,
            name_pinned,
            pending: VecDeque::new(),
            node: None,
        });
        peer.node = None;
        peer.conn = self.conns.contains_key(&conn).then_some(conn);
        peer.name = name.to_owned();
        peer.epoch += 1;
        let old = std::mem::replace(&mut peer.resume, resume.to_owned());
        self.by_resume.remove(&old);
        self.by_resume.insert(resume.to_owned(), id.to_owned());
        if let Some(r) = self.rooms.get_mut(room)
            && !r.members.iter().any(|m| m == id)
        {
            r.members.push(id.to_owned());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(id.to_owned());
        }
    }

    fn welcome_local(
        &mut self,
        now: Instant,
        conn: ConnId,
        room: &str,
        id: &str,
        resume: String,
        resumed: bool,
    ) {
        let peers = self.peer_list(room, id);
        let ice_servers = self.ice_for(now, conn, id);
        self.send(
            conn,
            ServerMessage::Welcome {
                id: id.to_owned(),
                room: room.to_owned(),
                peers,
                ice_servers,
                resume,
                resumed,
            },
        );
    }

    /// Sends `msg` to every attached local member of `room` but `except`.
    fn tell_locals(&mut self, room: &str, except: &str, msg: ServerMessage) {
        let members = self
            .rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for m in members.iter().filter(|m| *m != except) {
            self.send_to_peer_if_attached(m, msg.clone());
        }
    }

    /// The room as the store listed it at event `seq`: remote members are added or removed to match (the
    /// local members are told), unless the room is already past `seq`. The first snapshot also applies the
    /// events held until it came.
    fn apply_snapshot(
        &mut self,
        now: Instant,
        room: &str,
        seq: u64,
        members: &[Member],
        joiner: &str,
    ) {
        let me = self.node.clone().unwrap_or_default();
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.synced && seq <= r.version {
            return;
        }
        let first = !r.synced;
        r.synced = true;
        r.version = seq;
        let known = r.members.clone();
        let buffered = if first {
            std::mem::take(&mut r.buffer)
        } else {
            Vec::new()
        };
        for m in &known {
            let remote = self.peers.get(m).is_some_and(|p| p.node.is_some());
            if remote && !members.iter().any(|x| &x.id == m) {
                self.remove_peer_inner(m, false);
            }
        }
        for m in members {
            if m.node == me || m.id == joiner || self.peers.contains_key(&m.id) {
                continue;
            }
            self.add_remote(room, &m.id, &m.name, &m.node);
        }
        for event in buffered {
            self.handle_cluster_event(now, room, event);
        }
    }

    fn add_remote(&mut self, room: &str, id: &str, name: &str, node: &str) {
        self.peers.insert(
            id.to_owned(),
            Peer {
                name: name.to_owned(),
                room: room.to_owned(),
                conn: None,
                resume: String::new(),
                epoch: 0,
                name_pinned: false,
                pending: VecDeque::new(),
                node: Some(node.to_owned()),
            },
        );
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.push(id.to_owned());
        }
        let info = PeerInfo {
            id: id.to_owned(),
            name: name.to_owned(),
        };
        self.tell_locals(room, id, ServerMessage::PeerJoined { peer: info });
    }

    /// Forgets a room that has no local member and no join in flight (its remote members with it).
    pub(super) fn maybe_drop_room(&mut self, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        if r.admitting > 0
            || r.members
                .iter()
                .any(|m| self.peers.get(m).is_some_and(|p| p.node.is_none()))
        {
            return;
        }
        if let Some(r) = self.rooms.remove(room) {
            for m in r.members {
                self.peers.remove(&m);
            }
        }
        if self.node.is_some() {
            self.out
                .push_back(Output::Cluster(ClusterRequest::Unsubscribe {
                    room: room.to_owned(),
                }));
        }
    }

    /// An event of `room` from the cluster (another node, or the store's sweep of a dead node).
    pub fn handle_cluster_event(&mut self, _now: Instant, room: &str, event: ClusterEvent) {
        let me = self.node.clone().unwrap_or_default();
        let Some(r) = self.rooms.get_mut(room) else {
            return; // no local member: not ours to track
        };
        let seq = match &event {
            ClusterEvent::Joined { seq, .. }
            | ClusterEvent::Left { seq, .. }
            | ClusterEvent::Moved { seq, .. } => Some(*seq),
            _ => None,
        };
        if let Some(seq) = seq {
            if !r.synced {
                if r.buffer.len() < MAX_EVENT_BUFFER {
                    r.buffer.push(event);
                }
                return;
            }
            if seq <= r.version {
                return;
            }
            r.version = seq;
        }
        match event {
            ClusterEvent::Forward {
                to,
                from,
                kind,
                payload,
            } => {
                let max_pending = self.config.max_pending_per_peer;
                let Some(target) = self.peers.get_mut(&to) else {
                    return;
                };
                if target.room != room || target.node.is_some() {
                    return; // never outside the room, never relayed twice
                }
                let msg = ServerMessage::Forward {
                    kind,
                    from,
                    payload,
                };
                match target.conn {
                    Some(c) => self.send(c, msg),
                    None if target.pending.len() < max_pending => target.pending.push_back(msg),
                    None => {}
                }
            }
            ClusterEvent::Renamed { node, peer } => {
                if node == me {
                    return;
                }
                let Some(p) = self.peers.get_mut(&peer.id) else {
                    return;
                };
                if p.room != room || p.node.is_none() || p.name == peer.name {
                    return;
                }
                p.name = peer.name.clone();
                let id = peer.id.clone();
                self.tell_locals(room, &id, ServerMessage::PeerUpdated { peer });
            }
            ClusterEvent::Joined { node, peer, .. } => {
                if node == me || self.peers.contains_key(&peer.id) {
                    return;
                }
                self.add_remote(room, &peer.id, &peer.name, &node);
            }
            ClusterEvent::Left { id, .. } => {
                let Some(p) = self.peers.get(&id) else {
                    return;
                };
                if p.room != room {
                    return;
                }
                if p.node.is_none()
                    && let Some(c) = p.conn
                {
                    // The store took this node for dead and let its peer go: that session is over.
                    self.forget_conn(c);
                    self.out.push_back(Output::Close {
                        conn: c,
                        code: close_code::POLICY,
                        reason: "session lost",
                    });
                }
                self.remove_peer_inner(&id, false);
            }
            ClusterEvent::Moved { node, id, .. } => {
                if node == me {
                    return;
                }
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                if p.room != room {
                    return;
                }
                p.node = Some(node);
                p.epoch += 1; // cancels a grace timer
                p.pending.clear();
                let old = p.conn.take();
                let token = std::mem::take(&mut p.resume);
                self.by_resume.remove(&token);
                if let Some(c) = old {
                    self.forget_conn(c);
                    self.out.push_back(Output::Close {
                        conn: c,
                        code: close_code::REPLACED,
                        reason: "resumed elsewhere",
                    });
                }
                self.maybe_drop_room(room);
            }
        }
    }

    /// The rooms this node holds local members of, to write back into a store that lost its data.
    pub fn cluster_snapshot(&self) -> Vec<RoomSnapshot> {
        self.rooms
            .iter()
            .filter_map(|(name, r)| {
                let members: Vec<(String, String, String)> = r
                    .members
                    .iter()
                    .filter_map(|m| {
                        self.peers
                            .get(m)
                            .filter(|p| p.node.is_none())
                            .map(|p| (m.clone(), p.name.clone(), p.resume.clone()))
                    })
                    .collect();
                (!members.is_empty()).then(|| RoomSnapshot {
                    room: name.clone(),
                    password: r.stored_password.clone(),
                    members,
                })
            })
            .collect()
    }
}
