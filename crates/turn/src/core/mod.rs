//! The sans-IO TURN server: allocations, permissions, channels, auth and policy.
//!
//! One shape, as in str0m and quinn-proto: inputs are `handle_*` calls ([`Core::handle_client`],
//! [`Core::handle_bound`], [`Core::handle_peer`], [`Core::handle_timeout`], [`Core::connection_closed`]) with
//! bytes, addresses and an injected [`Now`]; each returns what to do with that input at once (an [`Action`] or
//! [`PeerAction`], bytes written into caller buffers), and whatever else the driver must do comes out of
//! [`Core::poll_output`] ([`Output`]), with [`Core::poll_timeout`] saying when to call back. The core opens no
//! socket: an Allocate it admits asks for relay sockets ([`Action::Bind`]) and is answered once the driver
//! reports what it bound ([`Core::handle_bound`]). The [`Ledger`] the cores of one server share is passed in
//! by the driver on every call that may touch it, so a test holds its own and looks into it.

pub(crate) mod auth;
mod ledger;
pub mod policy;
mod refusal;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peercall_stun::{
    Attribute, CHANNEL_RANGE, ChannelData, Class, Family, Message, MessageWriter, Method,
    PacketKind, TransactionId, attr, classify, data_indication_payload_offset,
    frame_channel_data_in_place, write_data_indication_in_place,
};

use crate::ExternalIp;
use crate::metrics::TurnMetrics;
use auth::{AuthFailure, Credentials};
pub use ledger::{Ledger, QuotaKind, client_key};
use ledger::{Owner, Quotas};
use policy::PeerPolicy;
pub use refusal::Refusal;

/// How long a permission lasts after CreatePermission (or ChannelBind) last refreshed it: 5 minutes, fixed by
/// RFC 8656 §9.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a channel binding lasts after ChannelBind last refreshed it: 10 minutes, fixed by RFC 8656 §12.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const UDP: u8 = 17;

/// The time, injected: a monotonic instant for lifetimes and wall-clock seconds for REST credentials/nonces.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic time: allocation, permission and channel expiries are measured on it.
    pub instant: Instant,
    /// Seconds since the Unix epoch: the expiry in REST usernames and the nonce timestamps are compared with it.
    pub unix: u64,
}

/// Transport between client and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain UDP: one datagram, one STUN message or ChannelData.
    Udp,
    /// TCP: STUN messages and ChannelData back to back on one stream, ChannelData padded to 4 bytes.
    Tcp,
    /// TLS over TCP (TURNS), framed as TCP.
    Tls,
}

/// Identifies a client's connection (RFC 8656 "5-tuple").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it (its server-reflexive address).
    pub client: SocketAddr,
    /// The server's listening address the client reached.
    pub server: SocketAddr,
    /// UDP, TCP or TLS.
    pub transport: Transport,
}

/// Room a driver leaves in front of a peer's payload in the buffer it hands to [`Core::handle_peer`], so the
/// core frames ChannelData or a Data indication around the payload where it lies: the longest header, a Data
/// indication to an IPv6 peer (STUN header, XOR-PEER-ADDRESS, DATA attribute header).
pub const PEER_HEADROOM: usize = data_indication_payload_offset(Family::V6);
/// Room a driver leaves after a peer's payload: the padding to 4 bytes of ChannelData over TCP/TLS and of the
/// DATA attribute.
pub const PEER_TAILROOM: usize = 3;

/// Relay sockets an admitted Allocate needs before it can be answered ([`Action::Bind`]). The driver binds
/// them and reports what it got with [`Core::handle_bound`]; the core never opens a socket itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRequest {
    /// Fresh relayed addresses on the server's relay IPs.
    Fresh {
        /// One IPv4 address.
        v4: bool,
        /// One IPv6 address (both families: a dual allocation, RFC 8656 §7.2 step 9).
        v6: bool,
        /// Even ports only (EVEN-PORT).
        even: bool,
        /// Also hold the port after the (single) relayed address for a later Allocate with
        /// RESERVATION-TOKEN (EVEN-PORT R=1), reported in [`Bound::reserved`].
        reserve_next: bool,
    },
    /// The socket held since an earlier EVEN-PORT R=1 (perhaps bound by another shard), claimed by this
    /// Allocate's RESERVATION-TOKEN: serve it now, or report it gone.
    Reserved(SocketAddr),
}

/// What the driver bound for a [`RelayRequest`], the input of [`Core::handle_bound`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bound {
    /// The relayed addresses bound, `[IPv4, IPv6]`: `None` for a family not asked for or without a free port
    /// (for [`RelayRequest::Reserved`], the reserved address when its socket was still held).
    pub relays: [Option<SocketAddr>; 2],
    /// For [`RelayRequest::Fresh`] with `reserve_next`: the port after the relayed address, bound and held for
    /// the Allocate that will claim it; `None` when it could not be bound.
    pub reserved: Option<SocketAddr>,
}

/// What the core asks of the driver besides the answer to one input, drained with [`Core::poll_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Nothing holds this relayed address any more (its allocation ended, its reservation expired unclaimed,
    /// or it was bound for an Allocate that did not take it): close its socket.
    Release(SocketAddr),
}

/// What the driver must do after feeding the core a client packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send: the packet was consumed, refused without an answer, or dropped (counted in the
    /// metrics where an operator would want to see it).
    Drop,
    /// Send `out[..n]` back to the client on the same 5-tuple.
    Reply(usize),
    /// Send `packet[payload]` (the application data inside the client's ChannelData or Send indication)
    /// from relay socket `relay` to `peer`.
    ToPeer {
        /// The relayed transport address (the socket to send from).
        relay: SocketAddr,
        /// The peer to send to.
        peer: SocketAddr,
        /// Where the application data sits in the client's packet.
        payload: Range<usize>,
    },
    /// The Allocate in the packet passed authentication and the quotas and waits for relay sockets: bind what
    /// the request asks for and call [`Core::handle_bound`], which writes the answer. Until then the core
    /// holds the admission; the next [`Core::handle_client`] gives it back if the driver never reports.
    Bind(RelayRequest),
}

/// What the driver must do with a datagram a peer sent to a relay address.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerAction {
    /// Nothing to send: no allocation holds the relay, the peer has no permission, or the packet does not fit
    /// the buffers.
    Drop,
    /// `buf[frame]`, ChannelData framed around the payload in place, goes to the client.
    ChannelData {
        /// The client owning the relay.
        to: FiveTuple,
        /// Where the framed ChannelData lies in the buffer, padding included on TCP/TLS.
        frame: Range<usize>,
    },
    /// `buf[frame]`, a Data indication written around the payload in place, goes to the client.
    DataIndication {
        /// The client owning the relay.
        to: FiveTuple,
        /// Where the Data indication lies in the buffer.
        frame: Range<usize>,
    },
}

/// Server-wide settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Long-term credential realm ([`crate::TurnConfig::realm`]).
    pub realm: String,
    /// Static long-term users, `(name, password)`.
    pub users: Vec<(String, String)>,
    /// TURN REST shared secrets; any of them opens.
    pub auth_secrets: Vec<String>,
    /// Which peer addresses may be relayed to.
    pub policy: PeerPolicy,
    /// Allocations one username may hold at once (across every core sharing the ledger).
    pub user_quota: u32,
    /// Allocations (and EVEN-PORT reservations) per client address, IPv6 by /64: under `serve` every join
    /// mints a new username, so only this bounds what one client can hold.
    pub client_quota: u32,
    /// Allocations the server may hold at once (across every core sharing the ledger).
    pub total_quota: u32,
    /// Permissions (peer IP addresses) per allocation; past it CreatePermission answers 508.
    pub max_permissions: u32,
    /// Channel bindings per allocation; past it ChannelBind answers 508.
    pub max_channels: u32,
    /// Lifetime of an allocation whose request asks for none.
    pub default_lifetime: Duration,
    /// Longest lifetime granted; longer requests are cut to it.
    pub max_lifetime: Duration,
    /// Unauthenticated requests answered per second per source address (burst twice that); 0: no limit.
    pub unauth_rate_per_sec: u32,
    /// SOFTWARE attribute of answers; `None`: none.
    pub software: Option<String>,
    /// Key of the nonces' MAC. Cores of one server share it, so a nonce one shard issued verifies on another.
    pub nonce_key: [u8; 32],
    /// `--external-ip` mappings: the address advertised in XOR-RELAYED-ADDRESS for a relay (1:1 NAT).
    pub external_ip: Vec<ExternalIp>,
}

/// Relayed addresses by family, `[IPv4, IPv6]`: one, or both for a dual allocation (RFC 8656 §7.2 step 9).
/// A fixed array, so picking one on the relay path allocates nothing.
type Relays = [Option<SocketAddr>; 2];

struct Allocation {
    relays: Relays,
    owner: Owner,
    key: [u8; 16],
    expires: Instant,
    /// Peer IP → expiry, looked up on every relayed packet: a map, so the cost does not grow with the
    /// number of permissions (which is capped by `max_permissions`).
    permissions: HashMap<IpAddr, Instant>,
    /// Channel number → binding, for ChannelData from the client.
    channels: HashMap<u16, Channel>,
    /// Peer → channel number, for packets from the peer.
    channel_of_peer: HashMap<SocketAddr, u16>,
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Index of an address's family in [`Relays`].
fn slot(ip: IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

impl Allocation {
    /// The relayed address [`Core::relay_of`] reports: the IPv4 one when there is one.
    fn primary(&self) -> Option<SocketAddr> {
        self.relays[0].or(self.relays[1])
    }

    /// The relayed address to reach `peer` from: the one of the peer's own family (the socket that can
    /// address it), else, for IPv6 forms carrying an IPv4 address, the IPv4 one, as [`Core::check_peer`]
    /// accepts both. `None` means 443.
    fn relay_toward(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relays[slot(peer)].or_else(|| self.relays[slot(policy::normalize(peer))])
    }

    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|exp| *exp > now)
    }

    /// Installs or refreshes a permission; true when it is new.
    fn permit(&mut self, ip: IpAddr, until: Instant) -> bool {
        self.permissions.insert(ip, until).is_none()
    }

    /// The live channel bound to `peer`, if any.
    fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_of_peer.get(&peer)?;
        self.channels
            .get(&number)
            .is_some_and(|c| c.expires > now)
            .then_some(number)
    }
}

/// Token buckets for unauthenticated requests, in a fixed table indexed by a hash of the source IP: a flood
/// from spoofed addresses costs no memory, at worst sources share a bucket.
struct RateTable {
    buckets: Box<[(f32, Option<Instant>)]>,
    rate: f32,
}

impl RateTable {
    const SIZE: usize = 4096;

    fn new(rate: u32) -> RateTable {
        RateTable {
            buckets: vec![(0.0, None); Self::SIZE].into_boxed_slice(),
            rate: rate as f32,
        }
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let h = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 ^ (u128::from(v6) as u64),
        };
        let idx = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % Self::SIZE;
        let burst = self.rate * 2.0;
        let (tokens, last) = &mut self.buckets[idx];
        let refill = last.map_or(burst, |l| {
            now.saturating_duration_since(l).as_secs_f32() * self.rate
        });
        *tokens = (*tokens + refill).min(burst);
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The TURN server state of one shard.
pub struct Core {
    config: Arc<CoreConfig>,
    credentials: Credentials,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<SocketAddr, FiveTuple>,
    rate: RateTable,
    /// What [`Core::poll_output`] hands out next. Filled on the control path only (allocations ending).
    outputs: VecDeque<Output>,
    /// The admitted Allocate waiting for [`Core::handle_bound`].
    pending: Option<Pending>,
    metrics: Arc<TurnMetrics>,
    scratch_keys: Vec<[u8; 16]>,
    indications: u64,
    /// The soonest expiry of anything this core holds (see [`Core::poll_timeout`]).
    next_expiry: Option<Instant>,
}

/// How long a reserved port waits for its Allocate.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// An admitted Allocate waiting for its relay sockets (see [`Action::Bind`]).
struct Pending {
    from: FiveTuple,
    owner: Owner,
    key: [u8; 16],
    request: RelayRequest,
    /// Ledger admissions held for it: given back if nothing is bound.
    admitted: u32,
    lifetime: Duration,
    reply: Asked,
}

/// What an answer to a request repeats of it.
#[derive(Debug, Clone, Copy)]
struct Asked {
    method: Method,
    tid: TransactionId,
    fingerprint: bool,
}

impl Asked {
    fn of(msg: &Message<'_>) -> Asked {
        Asked {
            method: msg.method(),
            tid: *msg.transaction_id(),
            fingerprint: msg.has_fingerprint(),
        }
    }
}

/// What becomes of a request that does not succeed.
#[derive(Debug, Clone, Copy)]
enum Rejection {
    /// Nothing is answered (over the unauthenticated rate limit: an answer is what a flood wants).
    Drop,
    /// An error response, signed with `key` when the request authenticated.
    Answer {
        refusal: Refusal,
        key: Option<[u8; 16]>,
    },
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Rejection {
        Rejection::Answer { refusal, key: None }
    }
}

impl Core {
    /// A core counting into `metrics`. The cores of one server (one per thread) share quotas, relay addresses
    /// and reservations through the [`Ledger`] their driver passes to each call.
    pub fn new(config: Arc<CoreConfig>, metrics: Arc<TurnMetrics>) -> Core {
        let credentials = Credentials::new(
            &config.realm,
            &config.users,
            &config.auth_secrets,
            config.nonce_key,
        );
        Core {
            rate: RateTable::new(config.unauth_rate_per_sec),
            config,
            credentials,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            outputs: VecDeque::new(),
            pending: None,
            metrics,
            scratch_keys: Vec::with_capacity(4),
            indications: 0,
            next_expiry: None,
        }
    }

    /// Allocations this core holds (not the server's total: see [`Ledger::allocations`]).
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The next thing the driver must do that no single input's answer said (see [`Output`]); `None` when
    /// there is nothing more. Drain it after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether `relay` belongs to a live allocation of this core.
    #[cfg(test)]
    pub(crate) fn is_relay(&self, relay: SocketAddr) -> bool {
        self.by_relay.contains_key(&relay)
    }

    /// The allocation of `from`, if any: its primary relayed address (the IPv4 one of a dual allocation).
    pub fn relay_of(&self, from: &FiveTuple) -> Option<SocketAddr> {
        self.allocations.get(from).and_then(Allocation::primary)
    }

    /// A packet from a client. `out` receives any reply (at least 1500 bytes); `ledger` is the one the cores
    /// of this server share.
    pub fn handle_client(
        &mut self,
        now: Now,
        from: FiveTuple,
        packet: &[u8],
        out: &mut [u8],
        ledger: &Ledger,
    ) -> Action {
        // An Allocate whose sockets were never reported gives its admission back now.
        self.drop_pending(ledger);
        match classify(packet) {
            PacketKind::ChannelData => self.client_channel_data(now, from, packet, ledger),
            PacketKind::Stun => match Message::parse(packet) {
                Ok(msg) => self.client_stun(now, from, msg, out, ledger),
                Err(_) => {
                    self.metrics.malformed.inc();
                    Action::Drop
                }
            },
            PacketKind::Other => {
                self.metrics.malformed.inc();
                Action::Drop
            }
        }
    }

    fn client_channel_data(
        &mut self,
        now: Now,
        from: FiveTuple,
        packet: &[u8],
        ledger: &Ledger,
    ) -> Action {
        let Ok(cd) = ChannelData::parse(packet) else {
            self.metrics.malformed.inc();
            return Action::Drop;
        };
        let Some(alloc) = self.allocations.get(&from) else {
            tracing::debug!(client = %from.client, "ChannelData without allocation dropped");
            return Action::Drop;
        };
        let Some(ch) = alloc
            .channels
            .get(&cd.channel)
            .filter(|c| c.expires > now.instant)
        else {
            tracing::debug!(client = %from.client, channel = cd.channel, "ChannelData on unbound channel dropped");
            return Action::Drop;
        };
        let peer = ch.peer;
        let Some(relay) = self.route(alloc, peer, now.instant, ledger) else {
            return Action::Drop;
        };
        self.metrics.to_peer(cd.data.len());
        Action::ToPeer {
            relay,
            peer,
            payload: 4..4 + cd.data.len(),
        }
    }

    /// The relayed address a client's data to `peer` leaves from, if it may go there at all: a permission
    /// for the peer's address, a relayed address that can reach it, and the relay policy (checked again on
    /// every packet, as the allow list may have changed since the permission was made). The one check of
    /// ChannelData and Send indications.
    fn route(
        &self,
        alloc: &Allocation,
        peer: SocketAddr,
        now: Instant,
        ledger: &Ledger,
    ) -> Option<SocketAddr> {
        let relay = alloc.relay_toward(peer.ip())?;
        (alloc.permitted(peer.ip(), now) && self.policy_allows(peer, ledger)).then_some(relay)
    }

    /// The relay policy for `peer`, with this server's live relayed addresses always allowed.
    fn policy_allows(&self, peer: SocketAddr, ledger: &Ledger) -> bool {
        self.config.policy.check(peer, || ledger.is_relay(peer))
    }

    /// Brings the next wake-up forward to `at` if it is sooner.
    fn schedule(&mut self, at: Instant) {
        self.next_expiry = Some(self.next_expiry.map_or(at, |t| t.min(at)));
    }

    /// When [`Core::handle_timeout`] next has something to expire (it may find nothing, if a lifetime was
    /// extended since); `None` when nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_expiry
    }

    fn client_stun(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        ledger: &Ledger,
    ) -> Action {
        let method = msg.method();
        match msg.class() {
            Class::Request if method == Method::BINDING => {
                self.metrics.request(method, true);
                self.binding(from, msg, out)
            }
            Class::Request => {
                let result = self.authenticated_request(now, from, msg, out, ledger);
                match result {
                    // Counted when it is answered, in handle_bound.
                    Ok(bind @ Action::Bind(_)) => bind,
                    Ok(action) => {
                        self.metrics.request(method, true);
                        action
                    }
                    Err(rejection) => {
                        self.metrics.request(method, false);
                        self.rejected(now, from, msg, out, rejection)
                    }
                }
            }
            Class::Indication if method == Method::SEND => {
                self.send_indication(now, from, msg, ledger)
            }
            _ => Action::Drop,
        }
    }

    /// The answer to a request that did not succeed: none, or its error response.
    fn rejected(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        rejection: Rejection,
    ) -> Action {
        match rejection {
            Rejection::Drop => Action::Drop,
            Rejection::Answer { refusal, key } => {
                match self.error(now, from, msg, out, refusal, key.as_ref()) {
                    0 => Action::Drop,
                    n => Action::Reply(n),
                }
            }
        }
    }

    fn binding(&mut self, from: FiveTuple, msg: Message<'_>, out: &mut [u8]) -> Action {
        let tid = msg.transaction_id();
        let Ok(mut w) = MessageWriter::new(out, Class::Success, Method::BINDING, tid) else {
            return Action::Drop;
        };
        if w.add(&Attribute::XorMappedAddress(from.client)).is_err() {
            return Action::Drop;
        }
        if msg.has_fingerprint() && w.add_fingerprint().is_err() {
            return Action::Drop;
        }
        Action::Reply(w.finish())
    }

    /// Authenticates and runs a request; `Ok` is a success written to `out` or an admitted Allocate waiting
    /// for its sockets, `Err` an error to answer with (its key, when the request was authenticated, so the
    /// error carries MESSAGE-INTEGRITY).
    fn authenticated_request(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        ledger: &Ledger,
    ) -> Result<Action, Rejection> {
        // A request is unauthenticated until its MESSAGE-INTEGRITY has been verified: one that carries none is
        // counted against the source's unauthenticated rate at once; one that carries some is counted when it
        // fails (any answer before a verified key is an unauthenticated answer), so random or empty
        // MESSAGE-INTEGRITY attributes cannot buy answers past the limit. Verified requests are never counted.
        let carries_integrity = msg.get(attr::MESSAGE_INTEGRITY).is_some();
        if !carries_integrity && !self.rate.allow(from.client.ip(), now.instant) {
            self.metrics.rate_limited.inc();
            return Err(Rejection::Drop);
        }
        let unverified = |core: &mut Core, refusal: Refusal| {
            if carries_integrity && !core.rate.allow(from.client.ip(), now.instant) {
                core.metrics.rate_limited.inc();
                return Rejection::Drop;
            }
            Rejection::from(refusal)
        };
        let mut unknown = [0u16; 8];
        let n = msg.unknown_comprehension_required(attr::is_known, &mut unknown);
        if n > 0 {
            return Err(unverified(self, Refusal::UnknownAttribute));
        }
        let key = match self.authenticate(now, from, msg) {
            Ok(key) => key,
            Err(answer) => return Err(unverified(self, answer)),
        };
        let refuse = |refusal: Refusal| Rejection::Answer {
            refusal,
            key: Some(key),
        };
        let n = match msg.method() {
            Method::ALLOCATE => {
                let request = self.allocate(now, from, msg, key, ledger).map_err(refuse)?;
                return Ok(Action::Bind(request));
            }
            Method::REFRESH => self
                .refresh(now, from, msg, out, key, ledger)
                .map_err(refuse)?,
            Method::CREATE_PERMISSION => self
                .create_permission(now, from, msg, out, key, ledger)
                .map_err(refuse)?,
            Method::CHANNEL_BIND => self
                .channel_bind(now, from, msg, out, key, ledger)
                .map_err(refuse)?,
            _ => return Err(refuse(Refusal::BadRequest)),
        };
        Ok(Action::Reply(n))
    }

    fn authenticate(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
    ) -> Result<[u8; 16], Refusal> {
        let fail = |m: &TurnMetrics, f: AuthFailure| m.auth_failed(f);
        if msg.get(attr::MESSAGE_INTEGRITY).is_none() {
            fail(&self.metrics, AuthFailure::MissingIntegrity);
            return Err(Refusal::Unauthenticated);
        }
        let (
            Some(Ok(Attribute::Username(username))),
            Some(Ok(Attribute::Realm(_))),
            Some(Ok(Attribute::Nonce(nonce))),
        ) = (
            msg.decode_any(attr::USERNAME),
            msg.decode_any(attr::REALM),
            msg.decode_any(attr::NONCE),
        )
        else {
            return Err(Refusal::MissingCredentials);
        };
        if !self.credentials.nonce_valid(nonce, from.client, now.unix) {
            fail(&self.metrics, AuthFailure::StaleNonce);
            return Err(Refusal::StaleNonce);
        }
        if let Err(f) = self
            .credentials
            .keys(username, now.unix, &mut self.scratch_keys)
        {
            fail(&self.metrics, f);
            return Err(Refusal::Unauthenticated);
        }
        let key = self
            .scratch_keys
            .iter()
            .find(|k| msg.verify_integrity(&k[..]).is_ok())
            .copied();
        let Some(key) = key else {
            fail(&self.metrics, AuthFailure::BadIntegrity);
            return Err(Refusal::Unauthenticated);
        };
        // A request on an existing allocation must come from the user who made it (RFC 8656 §5).
        if let Some(alloc) = self.allocations.get(&from)
            && (&*alloc.owner.user != username || alloc.key != key)
        {
            return Err(Refusal::WrongCredentials);
        }
        Ok(key)
    }

    /// Checks an Allocate and admits it against the quotas; what it then needs is relay sockets, which the
    /// driver binds before [`Core::handle_bound`] answers it.
    fn allocate(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        key: [u8; 16],
        ledger: &Ledger,
    ) -> Result<RelayRequest, Refusal> {
        if self.allocations.contains_key(&from) {
            return Err(Refusal::AllocationMismatch);
        }
        match msg.decode_any(attr::REQUESTED_TRANSPORT) {
            Some(Ok(Attribute::RequestedTransport(UDP))) => {}
            Some(Ok(Attribute::RequestedTransport(_))) => {
                return Err(Refusal::UnsupportedTransport);
            }
            _ => return Err(Refusal::BadRequest),
        }
        let even_port = match msg.decode_any(attr::EVEN_PORT) {
            Some(Ok(Attribute::EvenPort(reserve))) => Some(reserve),
            Some(_) => return Err(Refusal::BadRequest),
            None => None,
        };
        let token = match msg.decode_any(attr::RESERVATION_TOKEN) {
            Some(Ok(Attribute::ReservationToken(t))) => Some(t),
            Some(_) => return Err(Refusal::BadRequest),
            None => None,
        };
        let requested_family = msg.get(attr::REQUESTED_ADDRESS_FAMILY).is_some();
        let dual = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY).is_some();
        // RFC 8656 §7.2 step 5: a reserved address comes with its family and port.
        if token.is_some() && (even_port.is_some() || requested_family || dual) {
            return Err(Refusal::BadRequest);
        }
        // Steps 6, 8 and 9: ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6 (IPv4 is implied), excludes
        // REQUESTED-ADDRESS-FAMILY and a port reservation (EVEN-PORT R=1); plain EVEN-PORT is allowed.
        if dual
            && (requested_family
                || even_port == Some(true)
                || !matches!(
                    msg.decode_any(attr::ADDITIONAL_ADDRESS_FAMILY),
                    Some(Ok(Attribute::AdditionalAddressFamily(Family::V6)))
                ))
        {
            return Err(Refusal::BadRequest);
        }
        let family = match msg.decode_any(attr::REQUESTED_ADDRESS_FAMILY) {
            None => Family::V4,
            Some(Ok(Attribute::RequestedAddressFamily(f))) => f,
            Some(_) => return Err(Refusal::AddressFamilyNotSupported),
        };
        let username = match msg.decode_any(attr::USERNAME) {
            Some(Ok(Attribute::Username(u))) => u,
            _ => return Err(Refusal::BadRequest),
        };
        // A dual allocation counts once against the quotas: it is one allocation with two addresses. A port
        // reservation (EVEN-PORT R=1) counts as one more until it is claimed or expires, admitted together
        // with the allocation so that a reservation never escapes the quotas.
        // An Allocate that claims a reservation takes over the reservation's admission instead.
        let owner = Owner::new(username, from.client.ip());
        let reserve = even_port == Some(true);
        let (request, admitted) = match token {
            Some(token) => match ledger.claim(token, now.instant, &owner, self.quotas()) {
                Ok(Some(addr)) => (RelayRequest::Reserved(addr), 1),
                Ok(None) => return Err(Refusal::InsufficientCapacity),
                Err((kind, refusal)) => {
                    self.metrics.quota_refused(kind);
                    return Err(refusal);
                }
            },
            None => {
                let admitted = 1 + u32::from(reserve);
                if let Err((kind, refusal)) = ledger.admit(&owner, admitted, self.quotas()) {
                    self.metrics.quota_refused(kind);
                    return Err(refusal);
                }
                let request = RelayRequest::Fresh {
                    v4: dual || family == Family::V4,
                    v6: dual || family == Family::V6,
                    even: even_port.is_some(),
                    reserve_next: reserve,
                };
                (request, admitted)
            }
        };
        self.pending = Some(Pending {
            from,
            owner,
            key,
            request,
            admitted,
            lifetime: self.lifetime(&msg),
            reply: Asked::of(&msg),
        });
        Ok(request)
    }

    /// The relay sockets the driver bound for the Allocate of the last [`Action::Bind`]: the allocation is
    /// made and answered (its success, or 508/440 when no address could be bound) into `out`.
    pub fn handle_bound(
        &mut self,
        now: Now,
        bound: Bound,
        out: &mut [u8],
        ledger: &Ledger,
    ) -> Action {
        let Some(pending) = self.pending.take() else {
            // No Allocate waits for these sockets: nothing will hold them.
            self.release_unused(&bound, [None; 2], None);
            return Action::Drop;
        };
        let (from, key, asked) = (pending.from, pending.key, pending.reply);
        let result = self.admit_allocation(now, pending, bound, out, ledger);
        self.metrics.request(Method::ALLOCATE, result.is_ok());
        let refusal = match result {
            Ok(n) => return Action::Reply(n),
            Err(refusal) => refusal,
        };
        match self.error_reply(now, from, asked, &[], out, refusal, Some(&key)) {
            0 => Action::Drop,
            n => Action::Reply(n),
        }
    }

    /// Makes the allocation of `pending` on the relayed addresses in `bound` and writes its success.
    fn admit_allocation(
        &mut self,
        now: Now,
        pending: Pending,
        bound: Bound,
        out: &mut [u8],
        ledger: &Ledger,
    ) -> Result<usize, Refusal> {
        let Pending {
            from,
            owner,
            key,
            request,
            admitted,
            lifetime,
            reply,
        } = pending;
        let (relays, missing, reserve) = match request {
            RelayRequest::Fresh {
                v4,
                v6,
                reserve_next,
                ..
            } => {
                let relays = [
                    bound.relays[0].filter(|_| v4),
                    bound.relays[1].filter(|_| v6),
                ];
                let missing = match (v4 && v6, relays) {
                    // RFC 8656 §7.2 step 9: one family alone is still a success, naming the missing one;
                    // neither is 508.
                    (_, [None, None]) => {
                        let refusal = match (v4, v6) {
                            (false, true) => unbound(Family::V6),
                            (true, false) => unbound(Family::V4),
                            _ => Refusal::InsufficientCapacity,
                        };
                        self.release_unused(&bound, relays, None);
                        ledger.release(&owner, admitted);
                        return Err(refusal);
                    }
                    (true, [Some(_), None]) => Some((Family::V6, unbound(Family::V6))),
                    (true, [None, Some(_)]) => Some((Family::V4, unbound(Family::V4))),
                    _ => None,
                };
                (relays, missing, reserve_next)
            }
            RelayRequest::Reserved(addr) => {
                let mut relays = [None; 2];
                relays[slot(addr.ip())] = bound.relays[slot(addr.ip())].filter(|a| *a == addr);
                if relays == [None, None] {
                    // The reserved socket is gone: the admission it passed to us goes with it.
                    self.release_unused(&bound, relays, None);
                    ledger.release(&owner, admitted);
                    return Err(Refusal::InsufficientCapacity);
                }
                (relays, None, false)
            }
        };
        // EVEN-PORT with R=1: the next port is held for a later Allocate with RESERVATION-TOKEN (RFC 8656
        // §7.2). Never a dual allocation (refused before), so the primary is the only relayed address.
        let next = relays[0]
            .or(relays[1])
            .and_then(|r| Some(SocketAddr::new(r.ip(), r.port().checked_add(1)?)));
        let reserved = bound.reserved.filter(|r| reserve && Some(*r) == next);
        self.release_unused(&bound, relays, reserved);
        let mut reserved_token = None;
        if reserve {
            match reserved {
                Some(addr) => {
                    reserved_token = Some(ledger.reserve(
                        addr,
                        now.instant + RESERVATION_LIFETIME,
                        owner.clone(),
                        &self.config.nonce_key,
                    ));
                    self.schedule(now.instant + RESERVATION_LIFETIME);
                }
                None => ledger.release(&owner, 1),
            }
        }
        self.schedule(now.instant + lifetime);
        self.allocations.insert(
            from,
            Allocation {
                relays,
                owner,
                key,
                expires: now.instant + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of_peer: HashMap::new(),
            },
        );
        for relay in relays.iter().flatten() {
            self.by_relay.insert(*relay, from);
            ledger.add_relay(*relay);
        }
        self.metrics.allocations.inc();
        let mut w = writer(out, Class::Success, Method::ALLOCATE, &reply.tid)?;
        // IPv4 first: `relays` is ordered by family.
        let ok = relays.iter().flatten().all(|relay| {
            w.add(&Attribute::XorRelayedAddress(self.advertised(*relay)))
                .is_ok()
        }) && w.add(&Attribute::XorMappedAddress(from.client)).is_ok()
            && w.add(&Attribute::Lifetime(lifetime.as_secs() as u32))
                .is_ok()
            && reserved_token.is_none_or(|t| w.add(&Attribute::ReservationToken(t)).is_ok())
            && missing.is_none_or(|(family, refusal)| {
                w.add(&Attribute::AddressErrorCode {
                    family,
                    code: refusal.code(),
                    reason: refusal.reason(),
                })
                .is_ok()
            });
        finish(w, ok, &key, reply.fingerprint)
    }

    /// Hands back to the driver every address in `bound` that is neither in `kept` nor `kept_reserved`.
    fn release_unused(&mut self, bound: &Bound, kept: Relays, kept_reserved: Option<SocketAddr>) {
        let unused = bound
            .relays
            .iter()
            .flatten()
            .filter(|a| !kept.contains(&Some(**a)))
            .chain(bound.reserved.iter().filter(|a| kept_reserved != Some(**a)));
        for addr in unused {
            self.outputs.push_back(Output::Release(*addr));
        }
    }

    /// Gives back what an Allocate waiting for [`Core::handle_bound`] holds, when no answer came.
    fn drop_pending(&mut self, ledger: &Ledger) {
        if let Some(p) = self.pending.take() {
            ledger.release(&p.owner, p.admitted);
            // A claimed reservation's socket is no longer in the ledger: nothing else would close it.
            if let RelayRequest::Reserved(addr) = p.request {
                self.outputs.push_back(Output::Release(addr));
            }
        }
    }

    /// The address clients are told for `relay`: its `--external-ip` mapping (1:1 NAT), if one applies.
    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        advertise(&self.config.external_ip, relay)
    }

    fn quotas(&self) -> Quotas {
        Quotas {
            user: self.config.user_quota,
            client: self.config.client_quota,
            total: self.config.total_quota,
        }
    }

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        match msg.decode_any(attr::LIFETIME) {
            Some(Ok(Attribute::Lifetime(secs))) => Duration::from_secs(u64::from(secs))
                .clamp(self.config.default_lifetime, self.config.max_lifetime),
            _ => self.config.default_lifetime,
        }
    }

    fn refresh(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        key: [u8; 16],
        ledger: &Ledger,
    ) -> Result<usize, Refusal> {
        if !self.allocations.contains_key(&from) {
            return Err(Refusal::AllocationMismatch);
        }
        let requested_zero = matches!(
            msg.decode_any(attr::LIFETIME),
            Some(Ok(Attribute::Lifetime(0)))
        );
        let lifetime = if requested_zero {
            self.remove(from, ledger);
            Duration::ZERO
        } else {
            let lifetime = self.lifetime(&msg);
            if let Some(a) = self.allocations.get_mut(&from) {
                a.expires = now.instant + lifetime;
                self.schedule(now.instant + lifetime);
            }
            lifetime
        };
        let mut w = writer(out, Class::Success, Method::REFRESH, msg.transaction_id())?;
        let ok = w
            .add(&Attribute::Lifetime(lifetime.as_secs() as u32))
            .is_ok();
        finish(w, ok, &key, msg.has_fingerprint())
    }

    /// Checks one XOR-PEER-ADDRESS for CreatePermission/ChannelBind: family and policy.
    fn check_peer(
        &self,
        from: FiveTuple,
        peer: SocketAddr,
        ledger: &Ledger,
    ) -> Result<(), Refusal> {
        let alloc = self
            .allocations
            .get(&from)
            .ok_or(Refusal::AllocationMismatch)?;
        if alloc.relay_toward(peer.ip()).is_none() {
            return Err(Refusal::PeerAddressFamilyMismatch);
        }
        if !self.policy_allows(peer, ledger) {
            self.metrics.policy_denied.inc();
            return Err(Refusal::Forbidden);
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        key: [u8; 16],
        ledger: &Ledger,
    ) -> Result<usize, Refusal> {
        if !self.allocations.contains_key(&from) {
            return Err(Refusal::AllocationMismatch);
        }
        // All peers must pass before any permission is installed (RFC 8656 §9.2).
        let mut peers = [None::<SocketAddr>; 16];
        let mut count = 0;
        for a in msg.attributes().filter(|a| a.typ == attr::XOR_PEER_ADDRESS) {
            let Ok(Attribute::XorPeerAddress(peer)) =
                Attribute::decode(a.typ, a.value, msg.transaction_id())
            else {
                return Err(Refusal::BadRequest);
            };
            self.check_peer(from, peer, ledger)?;
            if count == peers.len() {
                return Err(Refusal::BadRequest);
            }
            peers[count] = Some(peer);
            count += 1;
        }
        if count == 0 {
            return Err(Refusal::BadRequest);
        }
        let alloc = self
            .allocations
            .get_mut(&from)
            .ok_or(Refusal::AllocationMismatch)?;
        // All or none again: the new peers must fit under the cap together.
        let new = peers
            .iter()
            .flatten()
            .filter(|p| !alloc.permissions.contains_key(&p.ip()))
            .map(|p| p.ip())
            .collect::<std::collections::HashSet<_>>()
            .len();
        if alloc.permissions.len() + new > self.config.max_permissions as usize {
            self.metrics.limit_refused.inc();
            return Err(Refusal::TooManyPermissions);
        }
        for peer in peers.iter().flatten() {
            if alloc.permit(peer.ip(), now.instant + PERMISSION_LIFETIME) {
                self.metrics.permissions.inc();
            }
        }
        // A permission (installed or refreshed here) expires first; a channel lives longer.
        self.schedule(now.instant + PERMISSION_LIFETIME);
        let w = writer(
            out,
            Class::Success,
            Method::CREATE_PERMISSION,
            msg.transaction_id(),
        )?;
        finish(w, true, &key, msg.has_fingerprint())
    }

    fn channel_bind(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        key: [u8; 16],
        ledger: &Ledger,
    ) -> Result<usize, Refusal> {
        if !self.allocations.contains_key(&from) {
            return Err(Refusal::AllocationMismatch);
        }
        let number = match msg.decode_any(attr::CHANNEL_NUMBER) {
            Some(Ok(Attribute::ChannelNumber(n))) if CHANNEL_RANGE.contains(&n) => n,
            _ => {
                return Err(Refusal::BadChannelNumber);
            }
        };
        let peer = match msg.decode_any(attr::XOR_PEER_ADDRESS) {
            Some(Ok(Attribute::XorPeerAddress(p))) => p,
            _ => return Err(Refusal::MissingPeerAddress),
        };
        self.check_peer(from, peer, ledger)?;
        let alloc = self
            .allocations
            .get_mut(&from)
            .ok_or(Refusal::AllocationMismatch)?;
        // RFC 8656 §11.2: a live channel stays bound to its peer, and a peer to its channel.
        let live_number = alloc
            .channels
            .get(&number)
            .filter(|c| c.expires > now.instant);
        let live_peer = alloc.channel_to(peer, now.instant);
        if live_number.is_some_and(|c| c.peer != peer) || live_peer.is_some_and(|n| n != number) {
            return Err(Refusal::ChannelConflict);
        }
        let new_channel = !alloc.channels.contains_key(&number);
        let new_permission = !alloc.permissions.contains_key(&peer.ip());
        if new_channel && alloc.channels.len() >= self.config.max_channels as usize
            || new_permission && alloc.permissions.len() >= self.config.max_permissions as usize
        {
            self.metrics.limit_refused.inc();
            return Err(Refusal::TooManyChannels);
        }
        let until = now.instant + CHANNEL_LIFETIME;
        // An expired binding of this number may still name another peer: forget that peer's entry.
        if let Some(old) = alloc.channels.insert(
            number,
            Channel {
                peer,
                expires: until,
            },
        ) && old.peer != peer
            && alloc.channel_of_peer.get(&old.peer) == Some(&number)
        {
            alloc.channel_of_peer.remove(&old.peer);
        }
        if let Entry::Occupied(stale) = alloc.channel_of_peer.entry(peer)
            && *stale.get() != number
        {
            // The peer's previous channel expired (refused above otherwise): it moves to this one.
            let old = stale.remove();
            alloc.channels.remove(&old);
            self.metrics.channels.sub(1);
        }
        alloc.channel_of_peer.insert(peer, number);
        if new_channel {
            self.metrics.channels.inc();
        }
        if alloc.permit(peer.ip(), now.instant + PERMISSION_LIFETIME) {
            self.metrics.permissions.inc();
        }
        // A permission (installed or refreshed here) expires first; a channel lives longer.
        self.schedule(now.instant + PERMISSION_LIFETIME);
        let w = writer(
            out,
            Class::Success,
            Method::CHANNEL_BIND,
            msg.transaction_id(),
        )?;
        finish(w, true, &key, msg.has_fingerprint())
    }

    fn send_indication(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        ledger: &Ledger,
    ) -> Action {
        let Some(alloc) = self.allocations.get(&from) else {
            return Action::Drop;
        };
        let (Some(Ok(Attribute::XorPeerAddress(peer))), Some(data)) = (
            msg.decode_any(attr::XOR_PEER_ADDRESS),
            msg.attributes().find(|a| a.typ == attr::DATA),
        ) else {
            return Action::Drop;
        };
        let Some(relay) = self.route(alloc, peer, now.instant, ledger) else {
            return Action::Drop;
        };
        self.metrics.to_peer(data.value.len());
        let start = data.offset + 4; // after the attribute header
        Action::ToPeer {
            relay,
            peer,
            payload: start..start + data.value.len(),
        }
    }

    /// A datagram from `peer` to relay address `relay`, whose payload is `buf[payload]`. The core frames it
    /// for the client in place, around the payload: with [`PEER_HEADROOM`] bytes in front of it and
    /// [`PEER_TAILROOM`] after it nothing is moved or copied (with less, the payload is moved within `buf` to
    /// make room, and dropped when `buf` is too short for that).
    pub fn handle_peer(
        &mut self,
        now: Now,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> PeerAction {
        let Some(five) = self.by_relay.get(&relay).copied() else {
            return PeerAction::Drop;
        };
        let Some(alloc) = self.allocations.get(&five) else {
            return PeerAction::Drop;
        };
        if !alloc.permitted(peer.ip(), now.instant) {
            tracing::debug!(%relay, %peer, "peer packet without permission dropped");
            self.metrics.no_permission.inc();
            return PeerAction::Drop;
        }
        if payload.end > buf.len() || payload.start > payload.end {
            return PeerAction::Drop;
        }
        let len = payload.len();
        self.metrics.to_client(len);
        if let Some(number) = alloc.channel_to(peer, now.instant) {
            // Over streams ChannelData is padded to 4 bytes (RFC 8656 §12.5).
            let pad = five.transport != Transport::Udp;
            let Some(start) = make_room(buf, payload, 4) else {
                return PeerAction::Drop;
            };
            return match frame_channel_data_in_place(&mut buf[start..], number, len, pad) {
                Ok(n) => PeerAction::ChannelData {
                    to: five,
                    frame: start..start + n,
                },
                Err(_) => PeerAction::Drop,
            };
        }
        self.indications = self.indications.wrapping_add(1);
        let tid = indication_tid(&self.config.nonce_key, self.indications);
        let header = data_indication_payload_offset(Family::of(peer.ip()));
        let Some(start) = make_room(buf, payload, header) else {
            return PeerAction::Drop;
        };
        match write_data_indication_in_place(&mut buf[start..], &tid, peer, len) {
            Ok(n) => PeerAction::DataIndication {
                to: five,
                frame: start..start + n,
            },
            Err(_) => PeerAction::Drop,
        }
    }

    /// Removes what expired; call it at [`Core::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant, ledger: &Ledger) {
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for five in expired {
            self.remove(five, ledger);
        }
        ledger.expire_reservations(now, |addr| self.outputs.push_back(Output::Release(addr)));
        let mut next = ledger.next_reservation_expiry();
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for alloc in self.allocations.values_mut() {
            soonest(alloc.expires);
            let before = alloc.permissions.len();
            alloc.permissions.retain(|_, exp| *exp > now);
            self.metrics
                .permissions
                .sub((before - alloc.permissions.len()) as i64);
            let before = alloc.channels.len();
            alloc.channels.retain(|_, c| c.expires > now);
            let channels = &alloc.channels;
            alloc
                .channel_of_peer
                .retain(|_, number| channels.contains_key(number));
            self.metrics
                .channels
                .sub((before - alloc.channels.len()) as i64);
            alloc.permissions.values().for_each(|t| soonest(*t));
            alloc.channels.values().for_each(|c| soonest(c.expires));
        }
        self.next_expiry = next;
    }

    /// Drops every allocation of a client whose stream connection closed.
    pub fn connection_closed(&mut self, five: FiveTuple, ledger: &Ledger) {
        self.remove(five, ledger);
    }

    fn remove(&mut self, five: FiveTuple, ledger: &Ledger) {
        if let Some(a) = self.allocations.remove(&five) {
            for relay in a.relays.into_iter().flatten() {
                self.by_relay.remove(&relay);
                ledger.remove_relay(relay);
                self.outputs.push_back(Output::Release(relay));
            }
            ledger.release(&a.owner, 1);
            self.metrics.allocations.sub(1);
            self.metrics.channels.sub(a.channels.len() as i64);
            self.metrics.permissions.sub(a.permissions.len() as i64);
        }
    }

    /// Writes an error response to `msg` (see [`Core::error_reply`]).
    fn error(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: Message<'_>,
        out: &mut [u8],
        refusal: Refusal,
        key: Option<&[u8; 16]>,
    ) -> usize {
        let mut unknown = [0u16; 8];
        let n = if refusal == Refusal::UnknownAttribute {
            msg.unknown_comprehension_required(attr::is_known, &mut unknown)
        } else {
            0
        };
        self.error_reply(now, from, Asked::of(&msg), &unknown[..n], out, refusal, key)
    }

    /// Writes an error response. Unauthenticated errors carry only what the client needs (REALM and NONCE
    /// for 401/438), to keep amplification small; `unknown` lists the attributes of a 420.
    #[allow(clippy::too_many_arguments)]
    fn error_reply(
        &mut self,
        now: Now,
        from: FiveTuple,
        asked: Asked,
        unknown: &[u16],
        out: &mut [u8],
        refusal: Refusal,
        key: Option<&[u8; 16]>,
    ) -> usize {
        let (code, reason) = (refusal.code(), refusal.reason());
        tracing::debug!(client = %from.client, method = asked.method.name(), code, reason, "request refused");
        let Ok(mut w) = MessageWriter::new(out, Class::Error, asked.method, &asked.tid) else {
            return 0;
        };
        let mut ok = w.add(&Attribute::ErrorCode { code, reason }).is_ok();
        if refusal == Refusal::UnknownAttribute {
            ok &= w
                .add(&Attribute::UnknownAttributes(
                    peercall_stun::UnknownAttributes::new(unknown),
                ))
                .is_ok();
        }
        if refusal.with_nonce() {
            let nonce = self.credentials.nonce(from.client, now.unix);
            let nonce = std::str::from_utf8(&nonce).expect("nonces are hex");
            ok &= w.add(&Attribute::Realm(self.credentials.realm())).is_ok();
            ok &= w.add(&Attribute::Nonce(nonce)).is_ok();
        }
        if let Some(key) = key {
            if let Some(software) = &self.config.software {
                ok &= w.add(&Attribute::Software(software)).is_ok();
            }
            ok &= w.add_message_integrity(key).is_ok();
        }
        if asked.fingerprint {
            ok &= w.add_fingerprint().is_ok();
        }
        if ok { w.finish() } else { 0 }
    }
}

/// Where a frame of `header` bytes before `payload` starts in `buf`: right in front of the payload when
/// there is room, else at 0 after moving the payload back to `header` (a payload handed over from a
/// client's packet, whose own headers left less room). `None` when `buf` cannot hold the frame.
fn make_room(buf: &mut [u8], payload: Range<usize>, header: usize) -> Option<usize> {
    if let Some(start) = payload.start.checked_sub(header) {
        return Some(start);
    }
    if header + payload.len() > buf.len() {
        return None;
    }
    buf.copy_within(payload, header);
    Some(0)
}

/// The address clients are told for `relay`: its `--external-ip` mapping (1:1 NAT), if one applies.
fn advertise(external: &[ExternalIp], relay: SocketAddr) -> SocketAddr {
    match external.iter().find(|e| e.maps(relay.ip())) {
        Some(e) => SocketAddr::new(e.public, relay.port()),
        None => relay,
    }
}

/// Why no relayed address of `family` could be bound: a missing IPv6 one most likely means no IPv6 relay
/// address is configured, a missing IPv4 one a full port range.
fn unbound(family: Family) -> Refusal {
    match family {
        Family::V6 => Refusal::AddressFamilyNotSupported,
        Family::V4 => Refusal::InsufficientCapacity,
    }
}

fn writer<'b>(
    out: &'b mut [u8],
    class: Class,
    method: Method,
    tid: &TransactionId,
) -> Result<MessageWriter<'b>, Refusal> {
    MessageWriter::new(out, class, method, tid).map_err(|_| Refusal::ServerError)
}

fn finish(
    mut w: MessageWriter<'_>,
    ok: bool,
    key: &[u8; 16],
    fingerprint: bool,
) -> Result<usize, Refusal> {
    let ok =
        ok && w.add_message_integrity(key).is_ok() && (!fingerprint || w.add_fingerprint().is_ok());
    if ok {
        Ok(w.finish())
    } else {
        Err(Refusal::ServerError)
    }
}

/// Transaction ids of Data indications are never answered; a counter salted with the server key keeps
/// them unique without a random number generator in the core.
fn indication_tid(seed: &[u8; 32], counter: u64) -> TransactionId {
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&counter.to_be_bytes());
    tid[8..].copy_from_slice(&seed[..4]);
    tid
}

#[cfg(test)]
mod tests;
