//! Local ICE candidates: host candidates of the caller's sockets, server-reflexive ones from STUN Binding
//! requests to the `stun:` servers of `welcome`, relayed ones from TURN allocations ([`crate::turn`]): one per
//! transport the servers offer (`turn:` over UDP, `turn:...?transport=tcp`, `turns:` over TLS), as a browser
//! gathers them, so a network that blocks UDP or allows only HTTPS out still gets a relay. Also the
//! demultiplexing of what arrives from those servers. Sans-IO.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use peercall_stun::{
    Class, Message, MessageWriter, Method, TransactionId, XorMappedAddress, classify,
};
use serde_json::Value;
use str0m::Candidate;

use crate::engine::Transmit;
use crate::turn::{TurnClient, TurnInput};

/// The type of one of our candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// An address of one of our sockets.
    Host,
    /// Our address as a STUN server saw it (behind a NAT).
    Srflx,
    /// An address on a TURN server that relays for us.
    Relay,
}

/// One entry of `iceServers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `turn:` and `turns:` URLs (others are ignored).
    pub urls: Vec<String>,
    /// TURN user name (time-limited, from the signaling server).
    pub username: Option<String>,
    /// TURN password that goes with `username`.
    pub credential: Option<String>,
}

impl IceServer {
    /// `iceServers` as the server sends it (RTCConfiguration shape); malformed entries are skipped.
    pub fn parse_list(v: &Value) -> Vec<IceServer> {
        let Some(list) = v.as_array() else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|s| {
                let urls = match s.get("urls") {
                    Some(Value::String(u)) => vec![u.clone()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect(),
                    _ => return None,
                };
                Some(IceServer {
                    urls,
                    username: s
                        .get("username")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    credential: s
                        .get("credential")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Stun,
    Turn,
}

/// How a TURN server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// A parsed `stun:host:port`, `turn:host:port?transport=udp|tcp` or `turns:host:port?transport=tcp` URL
/// (RFC 7064, RFC 7065).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    scheme: Scheme,
    host: String,
    port: u16,
    transport: Transport,
}

fn parse_url(url: &str) -> Option<Url> {
    let (scheme, rest) = url.split_once(':')?;
    let (scheme, tls) = match scheme {
        "stun" => (Scheme::Stun, false),
        "turn" => (Scheme::Turn, false),
        "turns" => (Scheme::Turn, true),
        _ => return None,
    };
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = match (scheme, tls, query.contains("transport=tcp")) {
        (Scheme::Turn, true, _) => Transport::Tls,
        (Scheme::Turn, false, true) => Transport::Tcp,
        _ => Transport::Udp,
    };
    let default_port = if tls { "5349" } else { "3478" };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(default_port))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), default_port),
        }
    };
    Some(Url {
        scheme,
        host,
        port: port.parse().ok()?,
        transport,
    })
}

/// One TURN allocation and what belongs to it.
#[derive(Debug)]
struct Relay {
    transport: Transport,
    client: TurnClient,
    /// Over TCP/TLS: bytes read from the connection, not yet a whole frame.
    stream_buf: Vec<u8>,
    /// Its relay candidate has been handed out.
    announced: bool,
}

#[derive(Debug)]
struct Probe {
    local: SocketAddr,
    server: SocketAddr,
    bytes: Vec<u8>,
    sent_at: Instant,
    tries: u32,
}

/// What an incoming datagram was, as far as the gatherer is concerned.
#[derive(Debug)]
pub enum Handled {
    /// An answer to our STUN/TURN requests: nothing for the connections.
    Consumed,
    /// Peer data that came through our TURN relay.
    Relayed {
        /// The remote peer that sent it.
        peer: SocketAddr,
        /// Our relayed address it was sent to.
        relay: SocketAddr,
        /// The payload, unwrapped from the Data indication or ChannelData frame.
        data: Vec<u8>,
    },
    /// Not ours: ICE/DTLS/RTP for the connections.
    NotMine,
}

/// Sans-IO gathering of our ICE candidates: host candidates of our sockets, server-reflexive ones from STUN
/// Binding requests, relay ones from TURN allocations (one per transport); also owns those TURN clients,
/// so relayed traffic passes through it.
pub struct Gatherer {
    relay_only: bool,
    turn_tcp: bool,
    sockets: Vec<SocketAddr>,
    urls: Vec<(Url, Option<String>, Option<String>)>,
    resolved: HashMap<String, Vec<IpAddr>>,
    resolve_out: VecDeque<String>,
    asked: Vec<String>,
    probes: HashMap<TransactionId, Probe>,
    probed: Vec<(SocketAddr, SocketAddr)>,
    candidates: Vec<(Candidate, LocalKind)>,
    fresh: Vec<Candidate>,
    /// At most one allocation per transport, on the first server offering it.
    relays: Vec<Relay>,
    permissions: Vec<IpAddr>,
    out: VecDeque<Transmit>,
    seed: u64,
}

impl Gatherer {
    /// A gatherer with no sockets and no servers yet. `relay_only` keeps only relay candidates; `turn_tcp`
    /// reaches TURN servers over TCP/TLS only (see [`crate::EngineConfig`]).
    pub fn new(relay_only: bool, turn_tcp: bool) -> Gatherer {
        Gatherer {
            relay_only,
            turn_tcp,
            sockets: Vec::new(),
            urls: Vec::new(),
            resolved: HashMap::new(),
            resolve_out: VecDeque::new(),
            asked: Vec::new(),
            probes: HashMap::new(),
            probed: Vec::new(),
            candidates: Vec::new(),
            fresh: Vec::new(),
            relays: Vec::new(),
            permissions: Vec::new(),
            out: VecDeque::new(),
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&x.to_le_bytes());
        t[8..].copy_from_slice(&((x >> 17) as u32).to_le_bytes());
        t
    }

    /// Seeds the transaction ids (the caller passes some randomness: the engine has none of its own).
    pub fn seed(&mut self, seed: u64) {
        self.seed = seed | 1;
    }

    /// Registers one of our UDP sockets (its host candidate, and a source for STUN/TURN requests).
    pub fn add_socket(&mut self, now: Instant, addr: SocketAddr) {
        if self.sockets.contains(&addr) {
            return;
        }
        self.sockets.push(addr);
        if !self.relay_only
            && let Ok(c) = Candidate::host(addr, "udp")
        {
            self.candidates.push((c.clone(), LocalKind::Host));
            self.fresh.push(c);
        }
        self.start(now);
    }

    /// Replaces the STUN/TURN servers (the signaling server's `ice-servers` list); URLs that do not parse are
    /// skipped.
    pub fn set_ice_servers(&mut self, now: Instant, servers: &[IceServer]) {
        let mut urls = Vec::new();
        for s in servers {
            for u in &s.urls {
                if let Some(url) = parse_url(u) {
                    urls.push((url, s.username.clone(), s.credential.clone()));
                }
            }
        }
        // A refresh: new credentials for the running allocations.
        for relay in &mut self.relays {
            if let Some((_, Some(u), Some(p))) = urls
                .iter()
                .find(|(u, _, _)| u.scheme == Scheme::Turn && u.transport == relay.transport)
            {
                relay.client.set_credentials(u, p);
            }
        }
        self.urls = urls;
        self.start(now);
    }

    /// The addresses `host` (from [`Gatherer::poll_resolve`]) resolved to; empty when it did not resolve,
    /// and then that server is not used.
    pub fn resolved(&mut self, now: Instant, host: &str, ips: &[IpAddr]) {
        self.resolved.insert(host.to_string(), ips.to_vec());
        self.start(now);
    }

    fn server_addr(&mut self, url: &Url, family_v4: bool) -> Option<SocketAddr> {
        let ips: Vec<IpAddr> = if let Ok(ip) = url.host.parse::<IpAddr>() {
            vec![ip]
        } else if let Some(ips) = self.resolved.get(&url.host) {
            ips.clone()
        } else {
            if !self.asked.contains(&url.host) {
                self.asked.push(url.host.clone());
                self.resolve_out.push_back(url.host.clone());
            }
            return None;
        };
        ips.into_iter()
            .find(|ip| ip.is_ipv4() == family_v4)
            .map(|ip| SocketAddr::new(ip, url.port))
    }

    /// The socket to reach `server` from: loopback for a loopback server, else the first other one.
    fn socket_for(&self, server: SocketAddr) -> Option<SocketAddr> {
        let same_family = self
            .sockets
            .iter()
            .filter(|s| s.is_ipv4() == server.is_ipv4());
        if server.ip().is_loopback() {
            return same_family.clone().find(|s| s.ip().is_loopback()).copied();
        }
        same_family.clone().find(|s| !s.ip().is_loopback()).copied()
    }

    /// Starts whatever the servers and sockets known so far allow: STUN probes and the TURN allocation.
    fn start(&mut self, now: Instant) {
        let urls = self.urls.clone();
        for (url, user, pass) in urls {
            let Some(server) = self.server_addr(&url, true) else {
                continue;
            };
            let Some(local) = self.socket_for(server) else {
                continue;
            };
            match url.scheme {
                Scheme::Stun if !self.relay_only => {
                    if self.probed.contains(&(local, server)) || server.ip().is_loopback() {
                        continue; // our own address to ourselves: nothing to learn
                    }
                    self.probed.push((local, server));
                    let tid = self.next_tid();
                    let mut buf = vec![0u8; 64];
                    let Ok(mut w) =
                        MessageWriter::new(&mut buf, Class::Request, Method::BINDING, &tid)
                    else {
                        continue;
                    };
                    if w.add_fingerprint().is_err() {
                        continue;
                    }
                    let n = w.finish();
                    buf.truncate(n);
                    self.out.push_back(Transmit {
                        source: local,
                        destination: server,
                        contents: buf.clone(),
                        tcp: false,
                        tls: None,
                    });
                    self.probes.insert(
                        tid,
                        Probe {
                            local,
                            server,
                            bytes: buf,
                            sent_at: now,
                            tries: 1,
                        },
                    );
                }
                Scheme::Turn => {
                    let udp = url.transport == Transport::Udp;
                    if (udp && self.turn_tcp)
                        || self.relays.iter().any(|r| r.transport == url.transport)
                    {
                        continue;
                    }
                    let (Some(u), Some(p)) = (user, pass) else {
                        continue;
                    };
                    let seed = self.next_tid();
                    let seed = u64::from_le_bytes(seed[..8].try_into().unwrap_or([1; 8]));
                    let mut client = TurnClient::new(now, local, server, &u, &p, seed, !udp);
                    if url.transport == Transport::Tls {
                        client = client.with_tls(&url.host);
                    }
                    for ip in &self.permissions {
                        client.permit(now, *ip);
                    }
                    self.relays.push(Relay {
                        transport: url.transport,
                        client,
                        stream_buf: Vec::new(),
                        announced: false,
                    });
                }
                Scheme::Stun => {}
            }
        }
        self.pump_turn();
    }

    fn pump_turn(&mut self) {
        for relay in &mut self.relays {
            while let Some(t) = relay.client.poll_transmit() {
                self.out.push_back(t);
            }
            if !relay.announced
                && let Some(addr) = relay.client.relay()
            {
                relay.announced = true;
                // Two transports to one server may come back with one relayed address only if the server
                // reuses ports across allocations, which it must not; skip a duplicate all the same.
                if !self.candidates.iter().any(|(c, _)| c.addr() == addr)
                    && let Ok(c) = Candidate::relayed(addr, relay.client.local, "udp")
                {
                    self.candidates.push((c.clone(), LocalKind::Relay));
                    self.fresh.push(c);
                }
            }
        }
    }

    /// A remote candidate's address: our TURN allocation must permit it.
    pub fn want_permission(&mut self, now: Instant, addr: SocketAddr) {
        if self.permissions.contains(&addr.ip()) {
            return;
        }
        self.permissions.push(addr.ip());
        for relay in &mut self.relays {
            relay.client.permit(now, addr.ip());
        }
        self.pump_turn();
    }

    /// Every local candidate so far (for a new connection).
    pub fn candidates(&self) -> Vec<Candidate> {
        self.candidates.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Candidates found since the last call (for connections that exist already).
    pub fn take_new_candidates(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.fresh)
    }

    /// The type of our candidate at `addr`.
    pub fn kind_of(&self, addr: SocketAddr) -> Option<LocalKind> {
        self.candidates
            .iter()
            .find(|(c, _)| c.addr() == addr)
            .map(|(_, k)| *k)
    }

    /// How the TURN server of our relayed address `addr` is reached ("udp", "tcp" or "tls"), as a browser's
    /// `relayProtocol`.
    pub fn relay_transport(&self, addr: SocketAddr) -> Option<&'static str> {
        self.relays
            .iter()
            .find(|r| r.client.relay() == Some(addr))
            .map(|r| r.transport.as_str())
    }

    /// A datagram a connection wants sent: straight out of a socket, or through the relay when its source is
    /// our relayed address.
    pub fn wrap_transmit(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    ) -> Option<Transmit> {
        if let Some(relay) = self
            .relays
            .iter_mut()
            .find(|r| r.client.relay() == Some(source))
        {
            relay.client.send(now, destination, &contents);
            self.pump_turn();
            return None;
        }
        if !self.sockets.contains(&source) {
            return None;
        }
        Some(Transmit {
            source,
            destination,
            contents,
            tcp: false,
            tls: None,
        })
    }

    /// Offers a received datagram: answers to our requests and relayed data are taken, the rest is
    /// [`Handled::NotMine`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> Handled {
        // Answers to our STUN probes first: the STUN server is often the TURN server itself, on the same address
        // and socket as an allocation, and a Binding response handed to the TURN client would be lost (and with it
        // the server-reflexive candidate that lets two cone NATs connect directly).
        if classify(data) == peercall_stun::PacketKind::Stun
            && let Ok(msg) = Message::parse(data)
            && msg.method() == Method::BINDING
            && matches!(msg.class(), Class::Success | Class::Error)
            && let Some(probe) = self.probes.remove(msg.transaction_id())
        {
            if msg.class() == Class::Success
                && let Some(Ok(XorMappedAddress(mapped))) = msg.decode::<XorMappedAddress>()
                && !self.candidates.iter().any(|(c, _)| c.addr() == mapped)
                && let Ok(c) = Candidate::server_reflexive(mapped, probe.local, "udp")
            {
                self.candidates.push((c.clone(), LocalKind::Srflx));
                self.fresh.push(c);
            }
            let _ = probe.server;
            return Handled::Consumed;
        }
        if let Some(turn) = self
            .relays
            .iter_mut()
            .map(|r| &mut r.client)
            .find(|t| !t.is_tcp() && source == t.server && destination == t.local)
        {
            let r = turn.handle_input(now, data);
            let relay = turn.relay();
            self.pump_turn();
            return match (r, relay) {
                (TurnInput::Data { peer, data }, Some(relay)) => {
                    Handled::Relayed { peer, relay, data }
                }
                _ => Handled::Consumed,
            };
        }
        Handled::NotMine
    }

    /// Bytes from the TCP connection to the TURN server: split into STUN and ChannelData frames; returns the
    /// peer data among them as (peer, relay address, bytes).
    pub fn handle_stream(
        &mut self,
        now: Instant,
        server: SocketAddr,
        data: &[u8],
    ) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let Some(relay) = self
            .relays
            .iter_mut()
            .find(|r| r.client.is_tcp() && r.client.server == server)
        else {
            return out;
        };
        relay.stream_buf.extend_from_slice(data);
        loop {
            match peercall_stun::stream_frame_len(&relay.stream_buf) {
                Ok(Some(n)) if n <= relay.stream_buf.len() => {
                    let frame: Vec<u8> = relay.stream_buf.drain(..n).collect();
                    if let (TurnInput::Data { peer, data }, Some(addr)) =
                        (relay.client.handle_input(now, &frame), relay.client.relay())
                    {
                        out.push((peer, addr, data));
                    }
                }
                Ok(_) => break,
                Err(_) => {
                    // Not STUN framing: the stream is unusable.
                    relay.stream_buf.clear();
                    relay.client.closed();
                    break;
                }
            }
        }
        self.pump_turn();
        out
    }

    /// The TCP connection to the TURN server is gone.
    pub fn stream_closed(&mut self, server: SocketAddr) {
        for relay in &mut self.relays {
            if relay.client.is_tcp() && relay.client.server == server {
                relay.stream_buf.clear();
                relay.client.closed();
            }
        }
    }

    /// Retransmits unanswered Binding probes (up to 4 tries, backing off from 500 ms) and drives the TURN
    /// clients' timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for (tid, p) in self.probes.iter_mut() {
            if now >= p.sent_at + Duration::from_millis(500) * 2u32.pow(p.tries - 1) {
                if p.tries >= 4 {
                    dead.push(*tid);
                    continue;
                }
                p.tries += 1;
                p.sent_at = now;
                self.out.push_back(Transmit {
                    source: p.local,
                    destination: p.server,
                    contents: p.bytes.clone(),
                    tcp: false,
                    tls: None,
                });
            }
        }
        for tid in dead {
            self.probes.remove(&tid);
        }
        for relay in &mut self.relays {
            for ip in &self.permissions {
                relay.client.permit(now, *ip);
            }
            relay.client.handle_timeout(now);
        }
        self.pump_turn();
    }

    /// When [`Gatherer::handle_timeout`] is due next; `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self
            .relays
            .iter()
            .filter_map(|r| r.client.poll_timeout())
            .min();
        for p in self.probes.values() {
            let due = p.sent_at + Duration::from_millis(500) * 2u32.pow(p.tries - 1);
            t = Some(t.map_or(due, |t| t.min(due)));
        }
        t
    }

    /// The next datagram or stream frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pump_turn();
        self.out.pop_front()
    }

    /// A server host name to resolve; the answer goes to [`Gatherer::resolved`].
    pub fn poll_resolve(&mut self) -> Option<String> {
        self.resolve_out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("turn:127.0.0.1:3478?transport=udp"),
            Some(Url {
                scheme: Scheme::Turn,
                host: "127.0.0.1".into(),
                port: 3478,
                transport: Transport::Udp,
            })
        );
        assert_eq!(
            parse_url("turn:h:3478?transport=tcp").map(|u| u.transport),
            Some(Transport::Tcp)
        );
        assert_eq!(
            parse_url("turns:call.example.com:443?transport=tcp"),
            Some(Url {
                scheme: Scheme::Turn,
                host: "call.example.com".into(),
                port: 443,
                transport: Transport::Tls,
            })
        );
        assert_eq!(parse_url("turns:h").map(|u| u.port), Some(5349));
        assert_eq!(parse_url("http://h"), None);
        assert_eq!(parse_url("stun:example.org").map(|u| u.port), Some(3478));
        assert_eq!(
            parse_url("stun:[::1]:3479").map(|u| u.host),
            Some("::1".into())
        );
        assert_eq!(parse_url("stun:h:notaport"), None);
    }

    fn servers(urls: &[&str]) -> Vec<IceServer> {
        vec![IceServer {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: Some("u".into()),
            credential: Some("p".into()),
        }]
    }

    /// The STUN server and the TURN server on one address and one local socket (how peercall hands them
    /// out): the Binding answer still makes a server-reflexive candidate, it is not eaten by the TURN client.
    #[test]
    fn a_binding_answer_from_the_turn_servers_address_makes_a_srflx_candidate() {
        let now = Instant::now();
        let local: SocketAddr = "10.1.0.2:40000".parse().unwrap();
        let server: SocketAddr = "203.0.113.11:3478".parse().unwrap();
        let mut g = Gatherer::new(false, false);
        g.add_socket(now, local);
        g.set_ice_servers(
            now,
            &servers(&[
                "stun:203.0.113.11:3478",
                "turn:203.0.113.11:3478?transport=udp",
            ]),
        );
        let mut probe = None;
        while let Some(t) = g.poll_transmit() {
            let msg = Message::parse(&t.contents).unwrap();
            if msg.method() == Method::BINDING {
                probe = Some(t.contents.clone());
            }
        }
        let request = Message::parse(probe.as_deref().expect("a Binding request")).unwrap();
        let mapped: SocketAddr = "198.51.100.18:40000".parse().unwrap();
        let mut buf = vec![0u8; 128];
        let mut w = MessageWriter::response(&mut buf, &request, Class::Success).unwrap();
        w.add(&XorMappedAddress(mapped)).unwrap();
        let n = w.finish();
        assert!(matches!(
            g.handle_datagram(now, server, local, &buf[..n]),
            Handled::Consumed
        ));
        assert_eq!(g.kind_of(mapped), Some(LocalKind::Srflx));
    }

    /// One allocation per transport, as a browser: UDP, TCP and TLS; `--turn-tcp` leaves UDP out.
    #[test]
    fn one_allocation_per_transport() {
        let now = Instant::now();
        let urls = [
            "turn:203.0.113.11:3478?transport=udp",
            "turn:203.0.113.11:3478?transport=tcp",
            "turns:203.0.113.11:443?transport=tcp",
            "turn:203.0.113.12:3478?transport=udp",
        ];
        for (turn_tcp, expected) in [
            (
                false,
                vec![(false, None), (true, None), (true, Some("203.0.113.11"))],
            ),
            (true, vec![(true, None), (true, Some("203.0.113.11"))]),
        ] {
            let mut g = Gatherer::new(true, turn_tcp);
            g.add_socket(now, "10.1.0.2:40000".parse().unwrap());
            g.set_ice_servers(now, &servers(&urls));
            let mut seen = Vec::new();
            while let Some(t) = g.poll_transmit() {
                seen.push((t.tcp, t.tls.as_deref().map(str::to_string)));
            }
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(tcp, tls)| (tcp, tls.map(str::to_string)))
                .collect();
            assert_eq!(seen, expected, "--turn-tcp {turn_tcp}");
        }
    }
}
