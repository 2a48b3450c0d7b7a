//! The cluster side of the room core, sans-IO: what the core asks of the cluster store and what it is told.
//!
//! With `--redis`, several nodes serve the same rooms (docs/scaling.md). The room core ([`crate::rooms`]) stays
//! the only place that decides: it asks the store for the decisions that must be taken cluster-wide (admission
//! against capacity and password, failed joins per address, resume on another node) with [`ClusterRequest`]s,
//! learns the answers with [`crate::rooms::Rooms::handle_admission`] / [`crate::rooms::Rooms::handle_resumption`],
//! and learns what happens on other nodes with [`crate::rooms::Rooms::handle_cluster_event`]. The Redis driver
//! ([`crate::redis`]) only moves these values to and from Redis.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::protocol::{ErrorCode, ForwardKind, PeerInfo};
use crate::rooms::ConnId;

/// A member of a room as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Peer id (unique cluster-wide).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Node that holds the member's connection.
    pub node: String,
}

/// What the core asks of the cluster store. Requests are carried out in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterRequest {
    /// Start receiving the room's events (sent before the first [`ClusterRequest::Admit`] for it).
    Subscribe {
        /// Room name.
        room: String,
    },
    /// Stop receiving the room's events (no local member left).
    Unsubscribe {
        /// Room name.
        room: String,
    },
    /// Admit a new member atomically against the room's capacity and password; answered with
    /// [`crate::rooms::Rooms::handle_admission`].
    Admit {
        /// The joining connection; the answer is handed back with it.
        conn: ConnId,
        /// Room name.
        room: String,
        /// Peer id this node chose for the newcomer (random, so unique cluster-wide).
        id: String,
        /// Display name.
        name: String,
        /// The newcomer's first resume token, stored so that any node can resume it.
        resume: String,
        /// The password the join gave, in clear; the store compares it with (or, creating the room, stores)
        /// a salted hash.
        password: Option<String>,
        /// Most members the room may hold, grace-period members included (`max_peers_per_room`).
        capacity: usize,
        /// Refuse to create the room without a password (`require_room_password`).
        require_password: bool,
        /// The joining client's address (IPv4, or the /64 of IPv6), for the cluster-wide join rates.
        ip: Option<IpAddr>,
        /// Joins per minute one address may make across the cluster (0: no limit).
        joins_per_min: u32,
        /// New rooms per minute one address may create across the cluster (0: no limit).
        rooms_per_min: u32,
        /// How the store counts wrong passwords cluster-wide (per address and per room).
        failures: Box<FailureLimits>,
    },
    /// Count a new connection from `ip` against the cluster-wide cap of `limit` connections per address;
    /// answered with [`crate::rooms::Rooms::handle_connection_count`]. The core has checked its local count.
    CountConnection {
        /// The new connection; its messages wait for the answer.
        conn: ConnId,
        /// The client's address (IPv4, or the /64 of IPv6), as the local count keys it.
        ip: IpAddr,
        /// Most connections one address may hold across every live node (`max_connections_per_ip`).
        limit: u32,
    },
    /// A join whose join token this node refused (bad, expired, for another room): the store checks the address's
    /// back-off and join rate as for an admission and, when it may join at all, counts the failure cluster-wide,
    /// so guesses spread over the nodes add up to one allowance. Answered with
    /// [`crate::rooms::Rooms::handle_admission`] ([`Admission::BadToken`], [`Admission::Backoff`],
    /// [`Admission::Throttled`] or [`Admission::Unavailable`]).
    BadToken {
        /// The joining connection; the answer is handed back with it.
        conn: ConnId,
        /// The client's address (IPv4, or the /64 of IPv6).
        ip: IpAddr,
        /// Joins per minute one address may make across the cluster (0: no limit).
        joins_per_min: u32,
        /// How the store counts failed joins cluster-wide (only the per-address part applies).
        failures: Box<FailureLimits>,
    },
    /// A connection from `ip` that the store counted is gone.
    UncountConnection {
        /// The address whose count drops by one.
        ip: IpAddr,
    },
    /// Take over the member that holds this resume token (it may live on another node); answered with
    /// [`crate::rooms::Rooms::handle_resumption`].
    Resume {
        /// The resuming connection; the answer is handed back with it.
        conn: ConnId,
        /// Room name.
        room: String,
        /// The resume token the client sent.
        token: String,
        /// The token that replaces it (sent in the `welcome`), so the old one cannot be used twice.
        new_token: String,
        /// Display name the resuming `join` carries; when it differs from the stored one the core renames
        /// the member after the answer.
        name: String,
    },
    /// A local member resumed here: its token changed.
    Retoken {
        /// Room name.
        room: String,
        /// Peer id of the member.
        id: String,
        /// The resume token it had.
        old: String,
        /// The token its `welcome` carried.
        new: String,
    },
    /// A local member left for good.
    Leave {
        /// Room name.
        room: String,
        /// Peer id of the member.
        id: String,
        /// Its current resume token, dropped with it so no node can resume it.
        token: String,
    },
    /// A local member renamed itself.
    Rename {
        /// Room name.
        room: String,
        /// Peer id of the member.
        id: String,
        /// The new display name.
        name: String,
    },
    /// Relay a message from a local member to a member on another node.
    Forward {
        /// Room name (the message goes out on the room's channel).
        room: String,
        /// Peer id of the receiver.
        to: String,
        /// Peer id of the sender, stamped by this node.
        from: String,
        /// Which message.
        kind: ForwardKind,
        /// The payload as the sender wrote it.
        payload: Box<RawValue>,
    },
}

/// The store's answer to [`ClusterRequest::Admit`] and [`ClusterRequest::BadToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Admitted. `members` is the room after the join (the new member included), `seq` the room's event number
    /// at that moment, `password` the stored (salted) password hash, kept to restore the room after a store
    /// restart.
    Admitted {
        /// The room's event number after the join: events up to it are part of `members`.
        seq: u64,
        /// Every member after the join, the newcomer included.
        members: Vec<Member>,
        /// The stored salted password hash, `None` for a room without a password.
        password: Option<String>,
    },
    /// Refused (`room-full`, `wrong-password`).
    Refused(ErrorCode),
    /// A wrong password, counted by the store: `failures` of the address and `room_failures` of the room across
    /// the cluster (each forgotten after its memory without a new one); `backoff`: the address's joins are now
    /// refused this long on every node.
    WrongPassword {
        /// The address's failed joins across the cluster, this one included.
        failures: u32,
        /// The room's failed joins across the cluster, this one included.
        room_failures: u32,
        /// The back-off the address starts now, if it is past its allowance.
        backoff: Option<Duration>,
    },
    /// A bad join token ([`ClusterRequest::BadToken`]), counted by the store: `failures` of the address across the
    /// cluster (forgotten after their memory without a new one); `backoff`: the address's joins are now refused
    /// this long on every node.
    BadToken {
        /// The address's failed joins across the cluster, this one included.
        failures: u32,
        /// The back-off the address starts now, if it is past its allowance.
        backoff: Option<Duration>,
    },
    /// The address is backing off after failed joins (on whichever node): refused, this much is left.
    Backoff(Duration),
    /// The room has had too many failed joins across the cluster: the join waits
    /// [`crate::rooms::ROOM_GUESS_DELAY`] and is asked again with [`FailureLimits::delayed`] set.
    Delay,
    /// The address used up its joins (or new rooms) per minute across the cluster.
    Throttled(Throttle),
    /// The store cannot be reached.
    Unavailable,
}

/// The failed-join limits of one node, applied by the store to the cluster-wide counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureLimits {
    /// Failed joins an address may make before it backs off (0: never).
    pub backoff_after: u32,
    /// The first back-off; it doubles with every further failure.
    pub first_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// An address's failures are forgotten this long after its last one.
    pub memory: Duration,
    /// Failed joins a room may see before every join to it waits (0: never).
    pub room_delay_after: u32,
    /// A room's failures are forgotten this long after its last one.
    pub room_memory: Duration,
    /// The join has already waited its room's guessing delay: check it now.
    pub delayed: bool,
}

/// Which cluster-wide join rate an address used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Throttle {
    /// `--max-joins-per-min`.
    Joins,
    /// `--max-new-rooms-per-min`.
    NewRooms,
}

/// The store's answer to [`ClusterRequest::CountConnection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionCount {
    /// Counted: the address is within its cap on all live nodes together.
    Counted,
    /// The address holds its cap of connections across the cluster already.
    Refused,
    /// The store cannot be reached: the node's own count is the limit for now (fail safe, not fail open).
    Unavailable,
}

/// The store's answer to [`ClusterRequest::Resume`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resumption {
    /// The member is now held here.
    Resumed {
        /// The member's peer id (unchanged by the resume).
        id: String,
        /// Its display name as stored.
        name: String,
        /// The room's event number after the move: events up to it are part of `members`.
        seq: u64,
        /// Every member of the room, the resumed one included.
        members: Vec<Member>,
        /// The stored salted password hash, `None` for a room without a password.
        password: Option<String>,
    },
    /// The token names no member of the room: join afresh.
    Unknown,
    /// The store cannot be reached.
    Unavailable,
}

/// Something that happened in a room on another node (or in the store), in the room's order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A member was admitted (event `seq` of the room) on `node`.
    Joined {
        /// The room's event number.
        seq: u64,
        /// Node that holds the newcomer.
        node: String,
        /// The newcomer.
        peer: PeerInfo,
    },
    /// A member left (or its node died and it did not resume in time).
    Left {
        /// The room's event number.
        seq: u64,
        /// Peer id of the member that left.
        id: String,
    },
    /// A member resumed on `node`.
    Moved {
        /// The room's event number.
        seq: u64,
        /// Node that holds the member now.
        node: String,
        /// Peer id of the member.
        id: String,
    },
    /// A member renamed itself.
    Renamed {
        /// Node that holds the member (renames carry no event number: only the name changes).
        node: String,
        /// The member with its new name.
        peer: PeerInfo,
    },
    /// A message for a member of this room.
    Forward {
        /// Peer id of the receiver; nodes that do not hold it ignore the event.
        to: String,
        /// Peer id of the sender, stamped by the sender's node.
        from: String,
        /// Which message.
        kind: ForwardKind,
        /// The payload as the sender wrote it.
        payload: Box<RawValue>,
    },
}

/// What the core holds of one room, for restoring the store after it lost its data (a Redis restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// Room name.
    pub room: String,
    /// Stored password hash, if the room has one.
    pub password: Option<String>,
    /// Local members: id, name and current resume token.
    pub members: Vec<(String, String, String)>,
}

/// The wire form of events on a room's channel (also written by the store's Lua scripts).
pub mod wire {
    use serde::{Deserialize, Serialize};
    use serde_json::value::RawValue;

    use super::ClusterEvent;
    use crate::protocol::{ForwardKind, PeerInfo};

    /// One event as published on a room channel.
    #[derive(Debug, Deserialize, Serialize)]
    pub struct Event<'a> {
        /// `join`, `left`, `move`, `name` or `fwd`.
        pub t: &'a str,
        /// Publishing node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub n: Option<String>,
        /// Room event number (scripted events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub s: Option<u64>,
        /// Peer id (the subject).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub id: Option<String>,
        /// Display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// Forward: peer id of the receiver.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub to: Option<String>,
        /// Forward: peer id of the sender.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub from: Option<String>,
        /// Forward: `offer`, `answer`, `candidate` or `message`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub k: Option<&'a str>,
        /// Forward: the payload as raw JSON.
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        pub p: Option<&'a RawValue>,
    }

    fn kind_of(name: &str) -> Option<ForwardKind> {
        Some(match name {
            "offer" => ForwardKind::Offer,
            "answer" => ForwardKind::Answer,
            "candidate" => ForwardKind::Candidate,
            "message" => ForwardKind::Message,
            _ => return None,
        })
    }

    /// Parses one channel message; `None` for anything malformed (logged by the caller).
    pub fn parse(text: &str) -> Option<ClusterEvent> {
        let e: Event<'_> = serde_json::from_str(text).ok()?;
        Some(match e.t {
            "join" => ClusterEvent::Joined {
                seq: e.s?,
                node: e.n?,
                peer: PeerInfo {
                    id: e.id?,
                    name: e.name?,
                },
            },
            "left" => ClusterEvent::Left {
                seq: e.s?,
                id: e.id?,
            },
            "move" => ClusterEvent::Moved {
                seq: e.s?,
                node: e.n?,
                id: e.id?,
            },
            "name" => ClusterEvent::Renamed {
                node: e.n?,
                peer: PeerInfo {
                    id: e.id?,
                    name: e.name?,
                },
            },
            "fwd" => ClusterEvent::Forward {
                to: e.to?,
                from: e.from?,
                kind: kind_of(e.k?)?,
                payload: e.p?.to_owned(),
            },
            _ => return None,
        })
    }

    /// The channel text of a forward.
    pub fn forward(
        node: &str,
        to: &str,
        from: &str,
        kind: ForwardKind,
        payload: &RawValue,
    ) -> String {
        let e = Event {
            t: "fwd",
            n: Some(node.to_owned()),
            s: None,
            id: None,
            name: None,
            to: Some(to.to_owned()),
            from: Some(from.to_owned()),
            k: Some(kind.type_name()),
            p: Some(payload),
        };
        serde_json::to_string(&e).unwrap_or_default()
    }

    /// The channel text of a rename.
    pub fn rename(node: &str, id: &str, name: &str) -> String {
        let e = Event {
            t: "name",
            n: Some(node.to_owned()),
            s: None,
            id: Some(id.to_owned()),
            name: Some(name.to_owned()),
            to: None,
            from: None,
            k: None,
            p: None,
        };
        serde_json::to_string(&e).unwrap_or_default()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn events_round_trip_and_junk_is_refused() {
            let p = RawValue::from_string(r#"{"sdp":"x"}"#.into()).expect("json");
            let text = forward("n1", "p-b", "p-a", ForwardKind::Offer, &p);
            match parse(&text) {
                Some(ClusterEvent::Forward {
                    to,
                    from,
                    kind,
                    payload,
                }) => {
                    assert_eq!((to.as_str(), from.as_str()), ("p-b", "p-a"));
                    assert_eq!(kind, ForwardKind::Offer);
                    assert_eq!(payload.get(), r#"{"sdp":"x"}"#);
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                parse(r#"{"t":"join","n":"n1","s":4,"id":"p-1","name":"Ann"}"#),
                Some(ClusterEvent::Joined { seq: 4, .. })
            ));
            assert!(parse(r#"{"t":"join","n":"n1","id":"p-1"}"#).is_none());
            assert!(parse(r#"{"t":"fwd","to":"a","from":"b","k":"evil","p":1}"#).is_none());
            assert!(parse("not json").is_none());
        }
    }
}
