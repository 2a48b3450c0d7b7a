//! A sans-IO TURN client (RFC 8656) over UDP or TCP on `peercall-stun`: one allocation with long-term credentials
//! (the `iceServers` of `welcome`), Refresh before it expires, CreatePermission for every peer address,
//! ChannelBind and ChannelData for peers we talk to (Send/Data indications until the channel is bound).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use peercall_stun::{
    ChannelData, Class, Data, ErrorCode, Lifetime, Message, MessageWriter, Method, Nonce,
    PacketKind, Realm, RequestedTransport, TransactionId, Username, XorPeerAddress,
    XorRelayedAddress, classify, long_term_key_md5, write_channel_data,
};

use crate::engine::Transmit;

/// Requested allocation lifetime; refreshed at 80 % of what the server grants.
const LIFETIME: u32 = 600;
/// Permissions last 300 s on the server; refreshed after this.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channel bindings last 600 s; refreshed after this.
const CHANNEL_REFRESH: Duration = Duration::from_secs(480);
/// First retransmission of a request over UDP (doubles each time).
const RTO: Duration = Duration::from_millis(500);
const MAX_TRIES: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    Allocate,
    Refresh,
    Permission(IpAddr),
    Bind(SocketAddr, u16),
}

#[derive(Debug)]
struct Pending {
    req: Req,
    bytes: Vec<u8>,
    sent_at: Instant,
    tries: u32,
    /// Sent again after a 401/438 with fresh realm/nonce.
    retried_auth: bool,
}

/// Where the allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnState {
    /// An Allocate is in flight (first try, or again with credentials after the 401).
    Allocating,
    /// The server granted a relay.
    Allocated {
        /// The relayed transport address: where peers send to reach us.
        relay: SocketAddr,
    },
    /// Allocation failed for good (refused, wrong credentials, no answer); see `TurnClient::error`.
    Failed,
}

#[derive(Debug)]
/// A sans-IO TURN client (RFC 8656) for one allocation on one server: allocates, refreshes, installs
/// permissions and channels for ICE peers, and frames and unframes relayed data.
pub struct TurnClient {
    /// The TURN server's address.
    pub server: SocketAddr,
    /// Our socket address the server is reached from.
    pub local: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    state: TurnState,
    refresh_at: Option<Instant>,
    permissions: HashMap<IpAddr, Option<Instant>>,
    channels: HashMap<SocketAddr, (u16, Option<Instant>)>,
    by_channel: HashMap<u16, SocketAddr>,
    next_channel: u16,
    pending: HashMap<TransactionId, Pending>,
    out: VecDeque<Transmit>,
    tid_seed: u64,
    /// Over a TCP connection to the server: no retransmissions, ChannelData padded to 4 bytes.
    tcp: bool,
    /// `turns:`: the name the server's certificate must be valid for (shared by every transmit, hence the Arc).
    tls: Option<std::sync::Arc<str>>,
    /// Why the allocation failed, for the user, once the state is `Failed`.
    pub error: Option<String>,
}

/// What an incoming datagram from the server was.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnInput {
    /// A response or something else for the client itself.
    Consumed,
    /// Data from a peer through the relay.
    Data {
        /// The peer that sent it.
        peer: SocketAddr,
        /// The payload, unwrapped from its Data indication or ChannelData frame.
        data: Vec<u8>,
    },
}

impl TurnClient {
    /// Starts allocating: the first Allocate (without credentials; the server answers 401 with its realm).
    pub fn new(
        now: Instant,
        local: SocketAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
        seed: u64,
        tcp: bool,
    ) -> TurnClient {
        let mut c = TurnClient {
            server,
            local,
            username: username.to_string(),
            password: password.to_string(),
            realm: None,
            nonce: None,
            state: TurnState::Allocating,
            refresh_at: None,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_channel: HashMap::new(),
            next_channel: 0x4000,
            pending: HashMap::new(),
            out: VecDeque::new(),
            tid_seed: seed | 1,
            tcp,
            tls: None,
            error: None,
        };
        c.request(now, Req::Allocate, false);
        c
    }

    /// Whether this allocation is reached over TCP.
    pub fn is_tcp(&self) -> bool {
        self.tcp
    }

    /// Over TLS (`turns:`), the certificate checked against `server_name`: only meaningful with `tcp`; every
    /// transmit then asks the caller for a TLS connection.
    pub fn with_tls(mut self, server_name: &str) -> TurnClient {
        let name: std::sync::Arc<str> = server_name.into();
        // The Allocate queued by `new` goes out over TLS too.
        for t in &mut self.out {
            t.tls = Some(name.clone());
        }
        self.tls = Some(name);
        self
    }

    /// Where the allocation stands now.
    #[cfg(test)]
    pub(crate) fn state(&self) -> TurnState {
        self.state
    }

    /// The relayed address, once allocated.
    pub fn relay(&self) -> Option<SocketAddr> {
        match self.state {
            TurnState::Allocated { relay } => Some(relay),
            _ => None,
        }
    }

    /// New credentials (an `ice-servers` refresh): used from the next request on.
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.username = username.to_string();
        self.password = password.to_string();
    }

    fn tid(&mut self) -> TransactionId {
        // xorshift: transaction ids need to be unpredictable enough to not collide, not secret.
        let mut x = self.tid_seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.tid_seed = x;
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&x.to_le_bytes());
        t[8..].copy_from_slice(&(x.rotate_left(29) as u32).to_le_bytes());
        t
    }

    fn encode(&mut self, req: Req, tid: &TransactionId) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 512];
        let method = match req {
            Req::Allocate => Method::ALLOCATE,
            Req::Refresh => Method::REFRESH,
            Req::Permission(_) => Method::CREATE_PERMISSION,
            Req::Bind(..) => Method::CHANNEL_BIND,
        };
        let mut w = MessageWriter::new(&mut buf, Class::Request, method, tid).ok()?;
        match req {
            Req::Allocate => {
                w.add(&RequestedTransport(17)).ok()?;
                w.add(&Lifetime(LIFETIME)).ok()?;
            }
            Req::Refresh => {
                let lifetime = if self.state == TurnState::Failed {
                    0
                } else {
                    LIFETIME
                };
                w.add(&Lifetime(lifetime)).ok()?;
            }
            Req::Permission(ip) => w.add(&XorPeerAddress(SocketAddr::new(ip, 0))).ok()?,
            Req::Bind(peer, channel) => {
                w.add(&peercall_stun::ChannelNumber(channel)).ok()?;
                w.add(&XorPeerAddress(peer)).ok()?;
            }
        }
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            w.add(&Username(&self.username)).ok()?;
            w.add(&Realm(realm)).ok()?;
            w.add(&Nonce(nonce)).ok()?;
            let key = long_term_key_md5(&self.username, realm, &self.password);
            w.add_message_integrity(&key).ok()?;
        }
        w.add_fingerprint().ok()?;
        let n = w.finish();
        buf.truncate(n);
        Some(buf)
    }

    fn request(&mut self, now: Instant, req: Req, retried_auth: bool) {
        let tid = self.tid();
        let Some(bytes) = self.encode(req, &tid) else {
            return;
        };
        self.emit(bytes.clone());
        self.pending.insert(
            tid,
            Pending {
                req,
                bytes,
                sent_at: now,
                tries: 1,
                retried_auth,
            },
        );
    }

    /// Ask the server to let `ip` send to us (needed before any data flows either way).
    pub fn permit(&mut self, now: Instant, ip: IpAddr) {
        if self.permissions.contains_key(&ip) || self.state == TurnState::Failed {
            return;
        }
        self.permissions.insert(ip, None);
        if self.relay().is_some() {
            self.request(now, Req::Permission(ip), false);
        }
    }

    /// Relays `data` to `peer`: ChannelData when a channel is bound, a Send indication before.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        if self.relay().is_none() {
            return;
        }
        self.permit(now, peer.ip());
        match self.channels.get(&peer).copied() {
            Some((channel, Some(_))) => {
                let mut buf = vec![0u8; data.len() + 8];
                if let Ok(n) = write_channel_data(&mut buf, channel, data, self.tcp) {
                    buf.truncate(n);
                    self.emit(buf);
                }
                return;
            }
            Some((_, None)) => {}
            None => {
                if self.next_channel <= 0x7FFE {
                    let channel = self.next_channel;
                    self.next_channel += 1;
                    self.channels.insert(peer, (channel, None));
                    self.by_channel.insert(channel, peer);
                    self.request(now, Req::Bind(peer, channel), false);
                }
            }
        }
        let tid = self.tid();
        let mut buf = vec![0u8; data.len() + 64];
        let Ok(mut w) = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, &tid) else {
            return;
        };
        if w.add(&XorPeerAddress(peer)).is_err() || w.add(&Data(data)).is_err() {
            return;
        }
        let n = w.finish();
        buf.truncate(n);
        self.emit(buf);
    }

    fn emit(&mut self, contents: Vec<u8>) {
        self.out.push_back(Transmit {
            source: self.local,
            destination: self.server,
            contents,
            tcp: self.tcp,
            tls: self.tls.clone(),
        });
    }

    /// The TCP connection to the server is gone: so is the allocation.
    pub fn closed(&mut self) {
        if self.state != TurnState::Failed {
            self.fail("the TCP connection to the TURN server closed");
        }
    }

    /// A datagram from the server.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> TurnInput {
        match classify(data) {
            PacketKind::ChannelData => {
                if let Ok(cd) = ChannelData::parse(data)
                    && let Some(peer) = self.by_channel.get(&cd.channel)
                {
                    return TurnInput::Data {
                        peer: *peer,
                        data: cd.data.to_vec(),
                    };
                }
                TurnInput::Consumed
            }
            PacketKind::Stun => {
                let Ok(msg) = Message::parse(data) else {
                    return TurnInput::Consumed;
                };
                if msg.class() == Class::Indication && msg.method() == Method::DATA {
                    if let (Some(Ok(XorPeerAddress(peer))), Some(Ok(Data(d)))) =
                        (msg.decode::<XorPeerAddress>(), msg.decode::<Data>())
                    {
                        return TurnInput::Data {
                            peer,
                            data: d.to_vec(),
                        };
                    }
                    return TurnInput::Consumed;
                }
                let tid = *msg.transaction_id();
                let Some(p) = self.pending.remove(&tid) else {
                    return TurnInput::Consumed;
                };
                match msg.class() {
                    Class::Success => self.on_success(now, p.req, &msg),
                    Class::Error => self.on_error(now, p, &msg),
                    _ => {}
                }
                TurnInput::Consumed
            }
            PacketKind::Other => TurnInput::Consumed,
        }
    }

    fn on_success(&mut self, now: Instant, req: Req, msg: &Message<'_>) {
        match req {
            Req::Allocate => {
                let Some(Ok(XorRelayedAddress(relay))) = msg.decode::<XorRelayedAddress>() else {
                    self.fail("the TURN server's Allocate answer has no relayed address");
                    return;
                };
                let lifetime = match msg.decode::<Lifetime>() {
                    Some(Ok(Lifetime(l))) => l,
                    _ => LIFETIME,
                };
                self.state = TurnState::Allocated { relay };
                self.refresh_at = Some(now + Duration::from_secs(u64::from(lifetime) * 4 / 5));
                let ips: Vec<IpAddr> = self.permissions.keys().copied().collect();
                for ip in ips {
                    self.request(now, Req::Permission(ip), false);
                }
            }
            Req::Refresh => {
                let lifetime = match msg.decode::<Lifetime>() {
                    Some(Ok(Lifetime(l))) => l,
                    _ => LIFETIME,
                };
                self.refresh_at = Some(now + Duration::from_secs(u64::from(lifetime) * 4 / 5));
            }
            Req::Permission(ip) => {
                self.permissions.insert(ip, Some(now + PERMISSION_REFRESH));
            }
            Req::Bind(peer, channel) => {
                self.channels
                    .insert(peer, (channel, Some(now + CHANNEL_REFRESH)));
            }
        }
    }

    fn on_error(&mut self, now: Instant, p: Pending, msg: &Message<'_>) {
        let code = match msg.decode::<ErrorCode>() {
            Some(Ok(e)) => e.code,
            _ => 0,
        };
        if (code == 401 || code == 438) && !p.retried_auth {
            if let Some(Ok(Realm(r))) = msg.decode::<Realm>() {
                self.realm = Some(r.to_string());
            }
            if let Some(Ok(Nonce(n))) = msg.decode::<Nonce>() {
                self.nonce = Some(n.to_string());
            }
            if self.realm.is_some() && self.nonce.is_some() {
                self.request(now, p.req, true);
                return;
            }
        }
        match p.req {
            Req::Allocate => self.fail(&format!("the TURN server refused the allocation ({code})")),
            Req::Refresh if code == 437 => {
                self.state = TurnState::Allocating;
                self.request(now, Req::Allocate, false);
            }
            Req::Permission(ip) => {
                tracing::debug!("TURN permission for {ip} refused ({code})");
            }
            Req::Bind(peer, channel) => {
                tracing::debug!("TURN channel {channel} for {peer} refused ({code})");
            }
            Req::Refresh => {}
        }
    }

    fn fail(&mut self, why: &str) {
        tracing::warn!("TURN {}: {why}", self.server);
        self.state = TurnState::Failed;
        self.error = Some(why.to_string());
    }

    /// Retransmissions and refreshes that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut give_up = Vec::new();
        let mut again = Vec::new();
        for (tid, p) in self.pending.iter_mut() {
            let rto = RTO * 2u32.pow(p.tries.saturating_sub(1).min(5));
            if self.tcp {
                // Reliable transport: no retransmission; an answer that does not come in 10 s will not come.
                if now >= p.sent_at + Duration::from_secs(10) {
                    give_up.push((*tid, p.req));
                }
                continue;
            }
            if now >= p.sent_at + rto {
                if p.tries >= MAX_TRIES {
                    give_up.push((*tid, p.req));
                    continue;
                }
                p.tries += 1;
                p.sent_at = now;
                again.push(p.bytes.clone());
            }
        }
        for bytes in again {
            self.emit(bytes);
        }
        for (tid, req) in give_up {
            self.pending.remove(&tid);
            if req == Req::Allocate {
                self.fail("the TURN server does not answer");
            }
        }
        if self.relay().is_none() {
            return;
        }
        if self.refresh_at.is_some_and(|t| now >= t) {
            self.refresh_at = None;
            self.request(now, Req::Refresh, false);
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, t)| t.is_some_and(|t| now >= t))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            self.permissions.insert(ip, None);
            self.request(now, Req::Permission(ip), false);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, (_, t))| t.is_some_and(|t| now >= t))
            .map(|(peer, (ch, _))| (*peer, *ch))
            .collect();
        for (peer, ch) in due {
            // Keep using the channel while the rebind is out: the server's binding lasts 600 s.
            if let Some(entry) = self.channels.get_mut(&peer) {
                entry.1 = entry.1.map(|_| now + CHANNEL_REFRESH);
            }
            self.request(now, Req::Bind(peer, ch), false);
        }
    }

    /// When `handle_timeout` is due next: a retransmission, or a refresh of the allocation, a permission
    /// or a channel. `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.refresh_at;
        let mut min = |x: Instant| t = Some(t.map_or(x, |t: Instant| t.min(x)));
        for p in self.pending.values() {
            if self.tcp {
                min(p.sent_at + Duration::from_secs(10));
            } else {
                min(p.sent_at + RTO * 2u32.pow(p.tries.saturating_sub(1).min(5)));
            }
        }
        for v in self.permissions.values().flatten() {
            min(*v);
        }
        for (_, v) in self.channels.values() {
            if let Some(v) = v {
                min(*v);
            }
        }
        t
    }

    /// The next datagram (or stream frame) for the server, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercall_stun::MessageIntegrity;

    fn answer(req: &[u8], class: Class, f: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
        let msg = Message::parse(req).unwrap();
        let mut buf = vec![0u8; 512];
        let mut w = MessageWriter::response(&mut buf, &msg, class).unwrap();
        f(&mut w);
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn over_tls_every_transmit_asks_for_tls_the_first_allocate_too() {
        let now = Instant::now();
        let local: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let server: SocketAddr = "203.0.113.11:443".parse().unwrap();
        let mut c =
            TurnClient::new(now, local, server, "u", "p", 42, true).with_tls("turn.example.com");
        let first = c.poll_transmit().unwrap();
        assert!(first.tcp);
        assert_eq!(first.tls.as_deref(), Some("turn.example.com"));
    }

    #[test]
    fn allocates_with_long_term_auth_then_binds_a_channel() {
        let now = Instant::now();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let mut c = TurnClient::new(now, local, server, "u", "p", 42, false);
        let first = c.poll_transmit().unwrap();
        assert_eq!(first.destination, server);
        assert!(
            Message::parse(&first.contents)
                .unwrap()
                .get(0x0008)
                .is_none()
        );
        let e401 = answer(&first.contents, Class::Error, |w| {
            w.add(&ErrorCode::new(401)).unwrap();
            w.add(&Realm("test")).unwrap();
            w.add(&Nonce("n1")).unwrap();
        });
        assert_eq!(c.handle_input(now, &e401), TurnInput::Consumed);
        let second = c.poll_transmit().unwrap();
        let msg = Message::parse(&second.contents).unwrap();
        let key = long_term_key_md5("u", "test", "p");
        msg.verify_integrity(&key).unwrap();
        assert!(matches!(msg.decode::<MessageIntegrity>(), Some(Ok(_))));
        let relay: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let ok = answer(&second.contents, Class::Success, |w| {
            w.add(&XorRelayedAddress(relay)).unwrap();
            w.add(&Lifetime(600)).unwrap();
        });
        c.handle_input(now, &ok);
        assert_eq!(c.relay(), Some(relay));
        let peer: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        c.send(now, peer, b"hello");
        let perm = c.poll_transmit().unwrap();
        let bind = c.poll_transmit().unwrap();
        let ind = c.poll_transmit().unwrap();
        assert_eq!(
            Message::parse(&perm.contents).unwrap().method(),
            Method::CREATE_PERMISSION
        );
        assert_eq!(
            Message::parse(&bind.contents).unwrap().method(),
            Method::CHANNEL_BIND
        );
        assert_eq!(
            Message::parse(&ind.contents).unwrap().method(),
            Method::SEND
        );
        let bound = answer(&bind.contents, Class::Success, |_| {});
        c.handle_input(now, &bound);
        c.send(now, peer, b"again");
        let cd = c.poll_transmit().unwrap();
        assert_eq!(ChannelData::parse(&cd.contents).unwrap().data, b"again");
        // Data back through the channel.
        let mut back = vec![0u8; 16];
        let n = write_channel_data(&mut back, 0x4000, b"pong", false).unwrap();
        assert_eq!(
            c.handle_input(now, &back[..n]),
            TurnInput::Data {
                peer,
                data: b"pong".to_vec()
            }
        );
        // `ice-servers` brought new credentials: the refresh, due at 80 % of the lifetime, uses them.
        c.set_credentials("u2", "p2");
        c.handle_timeout(now + Duration::from_secs(481));
        let mut refresh = None;
        while let Some(t) = c.poll_transmit() {
            if Message::parse(&t.contents).unwrap().method() == Method::REFRESH {
                refresh = Some(t.contents);
            }
        }
        let refresh = refresh.expect("a Refresh request");
        let msg = Message::parse(&refresh).unwrap();
        assert_eq!(msg.decode::<Username>(), Some(Ok(Username("u2"))));
        msg.verify_integrity(&long_term_key_md5("u2", "test", "p2"))
            .unwrap();
    }

    #[test]
    fn gives_up_when_the_server_is_silent() {
        let now = Instant::now();
        let mut c = TurnClient::new(
            now,
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:3478".parse().unwrap(),
            "u",
            "p",
            1,
            false,
        );
        let mut t = now;
        for _ in 0..20 {
            t += Duration::from_secs(20);
            c.handle_timeout(t);
        }
        assert_eq!(c.state(), TurnState::Failed);
    }
}
