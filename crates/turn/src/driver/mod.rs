//! The driver: sockets in, core decisions out. No protocol logic lives here.
//!
//! UDP runs on shard threads, one per core by default. Each shard owns a [`Core`], an SO_REUSEPORT socket on
//! every UDP listening address and the relay sockets of its allocations, all in one epoll set. The kernel
//! spreads clients over the shards by their address, so a client's requests and ChannelData always reach the
//! shard that holds its allocation. A shard reads up to [`BATCH`] datagrams per `recvmmsg`, runs the core on
//! them under one uncontended lock, and sends the results with `sendmmsg`; the relay path allocates nothing.
//! What the shards must agree on (quotas, relay addresses, reservations) lives in one [`Ledger`].
//!
//! TCP and TLS clients run as tokio tasks; each connection is served by one shard's core (picked by the
//! client's address), and relayed packets towards it go through a bounded queue.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peercall_stun::Family;
use peercall_udp::{Epoll, RecvBatch, SendBuffers, SendQueue, epoll_events, udp_socket};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::policy::PeerPolicy;
use crate::core::{
    Action, Core, CoreConfig, FiveTuple, Ledger, Now, PeerAction, RelayPorts, Transport,
};
use crate::{ExternalIp, TlsFiles, TurnConfig, TurnError, TurnMetrics};

mod stream;
pub use stream::StreamLimits;
pub(crate) use stream::{Framer, StreamRefusal};
use stream::{StreamGate, stream_listener};

/// Largest peer datagram a relay accepts. Media over TURN stays under the path MTU (about 1200-1500 bytes).
/// Larger datagrams are dropped, not truncated.
const RELAY_PAYLOAD_MAX: usize = 4096;
/// Largest client datagram read on a UDP listener: a ChannelData or Send indication carrying the largest
/// payload a relay would pass the other way, plus room for its attributes.
const CLIENT_DATAGRAM_MAX: usize = RELAY_PAYLOAD_MAX + 256;
/// Room for any reply the core writes (it needs at least 1500 bytes).
const REPLY_BUF: usize = 2048;
const INDICATION_BUF: usize = RELAY_PAYLOAD_MAX + 64;
/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;
/// Socket buffers of each shard's listening sockets: bursts from many clients land here.
const LISTENER_SOCKET_BUFFER: usize = 4 << 20;
/// Frames queued towards one TCP/TLS client before further relayed packets are dropped (UDP semantics).
const STREAM_QUEUE: usize = 256;
/// How often a shard expires allocations, permissions and channels.
const TICK: Duration = Duration::from_secs(1);
/// Longest a shard sleeps in epoll, so it notices shutdown.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// Epoll tokens at and above this are relay sockets; below, the index of a listening socket.
const RELAY_TOKEN_BASE: u64 = 1 << 32;

/// Where the server listens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub relay_ips: Vec<IpAddr>,
    /// Shard threads serving UDP.
    pub threads: usize,
}

/// One shard: a core, its sockets and its epoll set.
struct Shard {
    index: usize,
    state: Mutex<State>,
    epoll: Epoll,
    /// This shard's SO_REUSEPORT socket on each UDP listening address (epoll token = index).
    listeners: Vec<(SocketAddr, StdUdpSocket)>,
}

/// A shard's mutable state. The lock is taken once per batch by the shard thread, and by TCP/TLS tasks for
/// their own packets; it is never held across an await.
struct State {
    core: Core,
    relays: HashMap<SocketAddr, Relay>,
    by_token: HashMap<u64, SocketAddr>,
    next_token: u64,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
}

struct Relay {
    socket: StdUdpSocket,
    token: u64,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the core; keep serving with the state as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This shard's socket on UDP listening address `server`.
    fn listener(&self, server: SocketAddr) -> Option<&StdUdpSocket> {
        self.listeners
            .iter()
            .find(|(a, _)| *a == server)
            .map(|(_, s)| s)
    }
}

struct Shared {
    shards: Vec<Shard>,
    metrics: Arc<TurnMetrics>,
    relay_ips: Vec<IpAddr>,
    external: Vec<ExternalIp>,
    ports: (u16, u16),
    tls: Option<(TlsFiles, RwLock<Arc<rustls::ServerConfig>>)>,
    shutdown: CancellationToken,
    stopping: AtomicBool,
    owners: RelayOwners,
    /// Relay sockets bound for EVEN-PORT reservations, waiting (unread) for the Allocate that claims them,
    /// which any shard may handle.
    reserved: Mutex<HashMap<SocketAddr, StdUdpSocket>>,
    /// Open TCP/TLS connections, capped per source and in total.
    streams: Arc<StreamGate>,
    stream_limits: StreamLimits,
}

/// Which shard serves each live relayed address, readable on the relay path without a lock: one byte per
/// port of each relay IP (shard + 1; 0 = not a relay of this server).
struct RelayOwners {
    ips: Vec<IpAddr>,
    owners: Vec<AtomicU8>,
}

impl RelayOwners {
    fn new(ips: &[IpAddr]) -> RelayOwners {
        RelayOwners {
            ips: ips.to_vec(),
            owners: (0..ips.len() * 65_536).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    fn slot(&self, addr: SocketAddr) -> Option<&AtomicU8> {
        let ip = self.ips.iter().position(|ip| *ip == addr.ip())?;
        self.owners.get(ip * 65_536 + usize::from(addr.port()))
    }

    fn owner(&self, addr: SocketAddr) -> Option<usize> {
        let v = self.slot(addr)?.load(Ordering::Acquire);
        (v > 0).then(|| usize::from(v) - 1)
    }

    fn set(&self, addr: SocketAddr, shard: Option<usize>) {
        if let Some(slot) = self.slot(addr) {
            // At most 64 shards (shard_count), so shard + 1 fits a byte.
            slot.store(shard.map_or(0, |s| s as u8 + 1), Ordering::Release);
        }
    }
}

impl Shared {
    fn reserved(&self) -> MutexGuard<'_, HashMap<SocketAddr, StdUdpSocket>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard that serves a TCP/TLS connection.
    fn shard_for(&self, five: &FiveTuple) -> usize {
        usize::from(five.client.port()) % self.shards.len()
    }
}

/// A bound, not yet running, server.
pub struct TurnServer {
    shared: Arc<Shared>,
    tcp: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    listening: Listening,
}

/// A cheap handle to a running server: addresses, metrics, TLS reload, liveness.
#[derive(Clone)]
pub struct TurnHandle {
    shared: Arc<Shared>,
    listening: Listening,
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

fn shard_count(configured: usize) -> usize {
    let n = if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    };
    n.clamp(1, 64)
}

impl TurnServer {
    /// Binds every listening socket (so "port in use" is reported at start, naming the address).
    pub async fn bind(config: TurnConfig) -> Result<TurnServer, TurnError> {
        if config.min_port == 0 || config.min_port > config.max_port {
            return Err(TurnError::BadPortRange(config.min_port, config.max_port));
        }
        let threads = shard_count(config.threads);
        let udp_err = |addr: SocketAddr| {
            move |source| TurnError::Bind {
                transport: "UDP",
                addr,
                source,
            }
        };
        // listeners[shard][i]: shard's socket on the i-th listening address.
        let mut listeners: Vec<Vec<(SocketAddr, StdUdpSocket)>> =
            (0..threads).map(|_| Vec::new()).collect();
        let mut tcp = Vec::new();
        let mut listening = Listening {
            threads,
            ..Listening::default()
        };
        for addr in &config.listen {
            // SO_REUSEPORT would let us join another process's sockets on a taken port and silently share
            // its traffic; a plain bind first refuses a port anyone holds (and picks the port for port 0).
            let probe = StdUdpSocket::bind(addr).map_err(udp_err(*addr))?;
            let local = probe.local_addr().map_err(udp_err(*addr))?;
            drop(probe);
            let first = udp_socket(local, LISTENER_SOCKET_BUFFER, true).map_err(udp_err(local))?;
            listeners[0].push((local, first));
            for shard in listeners.iter_mut().skip(1) {
                let socket =
                    udp_socket(local, LISTENER_SOCKET_BUFFER, true).map_err(udp_err(local))?;
                shard.push((local, socket));
            }
            // TCP on the same port as UDP, as TURN clients expect.
            let tcp_addr = SocketAddr::new(addr.ip(), local.port());
            let listener = TcpListener::bind(tcp_addr)
                .await
                .map_err(|source| TurnError::Bind {
                    transport: "TCP",
                    addr: tcp_addr,
                    source,
                })?;
            listening.udp.push(local);
            listening.tcp.push(tcp_addr);
            tcp.push(listener);
        }
        let tls_config = match &config.tls {
            Some(files) => Some((files.clone(), RwLock::new(load_tls(files)?))),
            None => None,
        };
        let mut tls = Vec::new();
        if tls_config.is_some() {
            for addr in &config.tls_listen {
                let tls_err = |source| TurnError::Bind {
                    transport: "TLS",
                    addr: *addr,
                    source,
                };
                let listener = TcpListener::bind(addr).await.map_err(tls_err)?;
                listening.tls.push(listener.local_addr().map_err(tls_err)?);
                tls.push(listener);
            }
        }
        let relay_ips = if config.relay_ip.is_empty() {
            default_relay_ips(&config.listen)?
        } else {
            config.relay_ip.clone()
        };
        listening.relay_ips = relay_ips.clone();

        let metrics = Arc::new(TurnMetrics::default());
        let core_config = Arc::new(CoreConfig {
            realm: config.realm.clone(),
            users: config.users.clone(),
            auth_secrets: config.auth_secrets.clone(),
            policy: PeerPolicy::new(
                &config.allow_peer,
                &config.deny_peer,
                config.allow_loopback_peers,
            )
            .with_own_addresses(&own_listeners(&listening), own_ips(&config, &relay_ips)),
            user_quota: config.user_quota,
            client_quota: config.client_quota,
            total_quota: config.total_quota,
            max_permissions: config.max_permissions,
            max_channels: config.max_channels,
            default_lifetime: config.default_lifetime,
            max_lifetime: config.max_lifetime,
            unauth_rate_per_sec: config.unauth_rate_per_sec,
            software: config.software.clone(),
            nonce_key: rand::random(),
        });
        let ledger = Arc::new(Ledger::default());
        let mut shards = Vec::with_capacity(threads);
        for (index, shard_listeners) in listeners.into_iter().enumerate() {
            let epoll = Epoll::new().map_err(udp_err(listening.udp[0]))?;
            for (i, (local, socket)) in shard_listeners.iter().enumerate() {
                epoll
                    .add(socket.as_raw_fd(), i as u64)
                    .map_err(udp_err(*local))?;
            }
            shards.push(Shard {
                index,
                state: Mutex::new(State {
                    core: Core::with_ledger(core_config.clone(), metrics.clone(), ledger.clone()),
                    relays: HashMap::new(),
                    by_token: HashMap::new(),
                    next_token: 0,
                    streams: HashMap::new(),
                }),
                epoll,
                listeners: shard_listeners,
            });
        }
        let owners = RelayOwners::new(&relay_ips);
        let streams = Arc::new(StreamGate::new(metrics.clone()));
        let shared = Arc::new(Shared {
            shards,
            owners,
            metrics,
            relay_ips,
            external: config.external_ip.clone(),
            ports: (config.min_port, config.max_port),
            tls: tls_config,
            shutdown: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            reserved: Mutex::new(HashMap::new()),
            streams,
            stream_limits: config.stream_limits,
        });
        Ok(TurnServer {
            shared,
            tcp,
            tls,
            listening,
        })
    }

    pub fn local_addrs(&self) -> Listening {
        self.listening.clone()
    }

    pub fn metrics(&self) -> Arc<TurnMetrics> {
        self.shared.metrics.clone()
    }

    pub fn handle(&self) -> TurnHandle {
        TurnHandle {
            shared: self.shared.clone(),
            listening: self.listening.clone(),
        }
    }

    /// Serves until `shutdown` is cancelled; then closes every socket (allocations end with the process).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TurnError> {
        let mut threads = Vec::new();
        for index in 0..self.shared.shards.len() {
            let shared = self.shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("turn-shard-{index}"))
                .spawn(move || shard_loop(&shared, index));
            match thread {
                Ok(t) => threads.push(t),
                Err(source) => {
                    self.shared.stopping.store(true, Ordering::Release);
                    return Err(TurnError::Bind {
                        transport: "UDP",
                        addr: self
                            .listening
                            .udp
                            .first()
                            .copied()
                            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                        source,
                    });
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.tcp {
            tasks.spawn(stream_listener(
                self.shared.clone(),
                listener,
                Transport::Tcp,
            ));
        }
        for listener in self.tls {
            tasks.spawn(stream_listener(
                self.shared.clone(),
                listener,
                Transport::Tls,
            ));
        }
        shutdown.cancelled().await;
        self.shared.shutdown.cancel();
        self.shared.stopping.store(true, Ordering::Release);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        for shard in &self.shared.shards {
            let mut state = shard.lock();
            state.relays.clear();
            state.by_token.clear();
            state.streams.clear();
        }
        self.shared.reserved().clear();
        Ok(())
    }
}

impl TurnHandle {
    pub fn local_addrs(&self) -> Listening {
        self.listening.clone()
    }

    pub fn metrics(&self) -> Arc<TurnMetrics> {
        self.shared.metrics.clone()
    }

    pub fn is_running(&self) -> bool {
        !self.shared.shutdown.is_cancelled()
    }

    /// Re-reads the TLS certificate and key; new TLS connections use them, existing allocations stay.
    pub fn reload_tls(&self) -> Result<(), TurnError> {
        if let Some((files, current)) = &self.shared.tls {
            let fresh = load_tls(files)?;
            *current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
        Ok(())
    }
}

fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TurnError> {
    let err = |what: &'static str, path: &std::path::Path, message: String| TurnError::Tls {
        what,
        path: path.to_owned(),
        message,
    };
    let cert_pem =
        std::fs::read(&files.cert).map_err(|e| err("certificate", &files.cert, e.to_string()))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| err("key", &files.key, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("certificate", &files.cert, e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| err("key", &files.key, e.to_string()))?
        .ok_or_else(|| err("key", &files.key, "no private key found".into()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("certificate", &files.cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| err("certificate", &files.cert, e.to_string()))?;
    Ok(Arc::new(config))
}

/// Every socket this server listens on (UDP, TCP, TLS).
fn own_listeners(listening: &Listening) -> Vec<SocketAddr> {
    let mut all = listening.udp.clone();
    all.extend(&listening.tcp);
    all.extend(&listening.tls);
    all
}

/// Every IP this server answers on, relays from or advertises: relaying to any of them would reach the server
/// itself (issue: a Binding through a relay to the listening port came back as a Data indication). A wildcard
/// listener answers on every interface address.
fn own_ips(config: &TurnConfig, relay_ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = config
        .listen
        .iter()
        .chain(&config.tls_listen)
        .map(SocketAddr::ip)
        .collect();
    if ips.iter().any(IpAddr::is_unspecified) {
        ips.extend(interface_addresses());
    }
    ips.extend(relay_ips);
    for external in &config.external_ip {
        ips.push(external.public);
        ips.extend(external.private);
    }
    ips
}

fn default_relay_ips(listen: &[SocketAddr]) -> Result<Vec<IpAddr>, TurnError> {
    let mut ips: Vec<IpAddr> = listen
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if ips.is_empty() {
        // Wildcard listener: relay from the first non-loopback IPv4 address, else loopback (a laptop offline).
        let found = interface_addresses()
            .into_iter()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback());
        ips.push(found.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    ips.dedup();
    if ips.is_empty() {
        return Err(TurnError::NoRelayIp);
    }
    Ok(ips)
}

/// Addresses of this machine's interfaces, read locally with getifaddrs (no traffic).
pub fn interface_addresses() -> Vec<IpAddr> {
    use std::net::Ipv6Addr;
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below by freeifaddrs; it is only read in between, and
    // each sockaddr is read as the type its family says.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Binds relay sockets for a core. New sockets are collected and registered with the shard once the core
/// has decided; reserved ones wait in [`Shared::reserved`].
struct DriverPorts<'a> {
    shared: &'a Shared,
    started: Vec<(SocketAddr, StdUdpSocket)>,
}

impl<'a> DriverPorts<'a> {
    fn new(shared: &'a Shared) -> DriverPorts<'a> {
        DriverPorts {
            shared,
            started: Vec::new(),
        }
    }
}

fn bind_relay(addr: SocketAddr) -> Option<StdUdpSocket> {
    // Default socket buffers: the kernel charges them only as datagrams queue, so idle allocations stay cheap.
    udp_socket(addr, 0, false).ok()
}

impl RelayPorts for DriverPorts<'_> {
    fn bind(&mut self, family: Family, even: bool) -> Option<SocketAddr> {
        let ip = *self
            .shared
            .relay_ips
            .iter()
            .find(|ip| Family::of(**ip) == family)?;
        let (min, max) = self.shared.ports;
        let span = u32::from(max - min) + 1;
        let start: u32 = rand::random::<u32>() % span;
        // Bounded: at most 512 tries (distinct ports: the stride is odd and prime), then report no capacity
        // rather than scanning the whole range. The kernel's bind is the arbiter of which ports are free,
        // across shards and processes; other programs' ephemeral ports share the range.
        for i in 0..span.min(512) {
            let mut port = min + ((start + i * 7919) % span) as u16;
            if even && port % 2 == 1 {
                if port == max {
                    continue;
                }
                port += 1;
            }
            let addr = SocketAddr::new(ip, port);
            if let Some(socket) = bind_relay(addr) {
                self.started.push((addr, socket));
                return Some(addr);
            }
        }
        None
    }

    fn bind_at(&mut self, addr: SocketAddr) -> bool {
        match bind_relay(addr) {
            Some(socket) => {
                self.shared.reserved().insert(addr, socket);
                true
            }
            None => false,
        }
    }

    fn claim(&mut self, addr: SocketAddr) -> bool {
        match self.shared.reserved().remove(&addr) {
            Some(socket) => {
                self.started.push((addr, socket));
                true
            }
            None => false,
        }
    }

    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        let mapped = self.shared.external.iter().find(|e| match e.private {
            Some(private) => private == relay.ip(),
            // PUBLIC alone maps the relays of its own family (an IPv4 PUBLIC says nothing of IPv6).
            None => e.public.is_ipv4() == relay.is_ipv4(),
        });
        match mapped {
            Some(e) => SocketAddr::new(e.public, relay.port()),
            None => relay,
        }
    }
}

/// After the core ran: registers the relay sockets it started and closes those whose allocation ended.
fn settle(
    shared: &Shared,
    shard: &Shard,
    state: &mut State,
    started: Vec<(SocketAddr, StdUdpSocket)>,
) {
    for (addr, socket) in started {
        let token = RELAY_TOKEN_BASE + state.next_token;
        state.next_token += 1;
        if shard.epoll.add(socket.as_raw_fd(), token).is_err() {
            // Out of kernel resources for epoll: the allocation stays, but its peers cannot reach it.
            tracing::warn!(relay = %addr, "cannot watch relay socket");
        }
        state.by_token.insert(token, addr);
        state.relays.insert(addr, Relay { socket, token });
        shared.owners.set(addr, Some(shard.index));
    }
    for addr in state.core.take_released() {
        match state.relays.remove(&addr) {
            Some(relay) => {
                state.by_token.remove(&relay.token);
                shard.epoll.remove(relay.socket.as_raw_fd());
                shared.owners.set(addr, None);
            }
            None => {
                shared.reserved().remove(&addr);
            }
        }
    }
}

/// A shard thread's reusable buffers: allocated once, reused for every batch.
struct Buffers {
    from_clients: RecvBatch,
    from_peers: RecvBatch,
    replies: Vec<u8>,
    indications: Vec<u8>,
    send: SendBuffers,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            from_clients: RecvBatch::new(BATCH, CLIENT_DATAGRAM_MAX, 0),
            // 4 bytes of headroom for the ChannelData header, 3 bytes of room for its TCP padding.
            from_peers: RecvBatch::new(BATCH, RELAY_PAYLOAD_MAX + 3, 4),
            replies: vec![0; BATCH * REPLY_BUF],
            indications: vec![0; BATCH * INDICATION_BUF],
            send: SendBuffers::new(BATCH),
        }
    }
}

fn shard_loop(shared: &Shared, index: usize) {
    let shard = &shared.shards[index];
    let mut buffers = Buffers::new();
    let mut events = epoll_events(256);
    let mut next_tick = Instant::now() + TICK;
    while !shared.stopping.load(Ordering::Acquire) {
        let timeout = next_tick
            .saturating_duration_since(Instant::now())
            .min(POLL_TIMEOUT);
        for token in shard.epoll.wait(&mut events, timeout) {
            if token < RELAY_TOKEN_BASE {
                from_clients(shared, shard, token as usize, &mut buffers);
            } else {
                from_peers(shared, shard, token, &mut buffers);
            }
        }
        let t = Instant::now();
        if t >= next_tick {
            next_tick = t + TICK;
            let mut guard = shard.lock();
            let state = &mut *guard;
            state.core.handle_timeout(t);
            settle(shared, shard, state, Vec::new());
        }
    }
}

/// A batch of datagrams from clients on listening socket `i`.
fn from_clients(shared: &Shared, shard: &Shard, i: usize, b: &mut Buffers) {
    let Some((server, socket)) = shard.listeners.get(i) else {
        return;
    };
    let fd = socket.as_raw_fd();
    // Errors here are ICMP reports for earlier sends; they are not fatal.
    let n = b.from_clients.recv(fd).unwrap_or(0);
    if n == 0 {
        return;
    }
    let now = now();
    let mut guard = shard.lock();
    let state = &mut *guard;
    let mut ports = DriverPorts::new(shared);
    let mut queue = b.send.queue();
    let slots = b
        .from_clients
        .received_mut()
        .zip(b.replies.chunks_mut(REPLY_BUF))
        .zip(b.indications.chunks_mut(INDICATION_BUF));
    for ((item, reply), indication) in slots {
        let Some(client) = item.source else { continue };
        if item.truncated {
            shared.metrics.malformed.inc();
            continue;
        }
        let from = FiveTuple {
            client,
            server: *server,
            transport: Transport::Udp,
        };
        let slot = item.slot;
        let (relay, peer, start, len) =
            match state
                .core
                .handle_client(now, from, &slot[..item.len], reply, &mut ports)
            {
                Action::Nothing | Action::Reply(0) => continue,
                Action::Reply(len) => {
                    let reply: &[u8] = reply;
                    queue.push(fd, &reply[..len], client);
                    continue;
                }
                Action::ToPeer { relay, peer, data } => (
                    relay,
                    peer,
                    data.as_ptr() as usize - slot.as_ptr() as usize,
                    data.len(),
                ),
            };
        // The peer may be another allocation of this server (two relay-only clients on one host). A
        // ChannelData header or a DATA attribute header precedes the payload, so there is room to frame it in
        // place for the other allocation's client. Another shard's lock is only tried, so two shards never
        // wait for each other; when it is busy the packet takes the socket.
        if let Some(owner) = shared.owners.owner(peer)
            && start >= 4
        {
            let mut other = None;
            if owner != shard.index {
                other = shared
                    .shards
                    .get(owner)
                    .and_then(|o| o.state.try_lock().ok());
            }
            let target: Option<&mut State> = match other.as_mut() {
                Some(guard) => Some(&mut **guard),
                None if owner == shard.index => Some(&mut *state),
                None => None,
            };
            if let Some(target) = target {
                let buf = &mut slot[start - 4..];
                shared.metrics.relayed_in_process.inc();
                peer_to_client(
                    shard, target, now, relay, peer, buf, len, indication, &mut queue,
                );
                continue;
            }
        }
        if let Some(r) = state.relays.get(&relay) {
            let slot: &[u8] = slot;
            queue.push(r.socket.as_raw_fd(), &slot[start..start + len], peer);
        }
    }
    // Sent before the lock is released: the relay sockets named in the queue stay open until then.
    queue.flush();
    drop(queue);
    settle(shared, shard, state, ports.started);
}

/// A batch of datagrams from peers on the relay socket of epoll `token`.
fn from_peers(shared: &Shared, shard: &Shard, token: u64, b: &mut Buffers) {
    let mut guard = shard.lock();
    let state = &mut *guard;
    let Some(&relay) = state.by_token.get(&token) else {
        return;
    };
    let Some(socket) = state.relays.get(&relay).map(|r| &r.socket) else {
        return;
    };
    let n = b.from_peers.recv(socket.as_raw_fd()).unwrap_or(0);
    if n == 0 {
        return;
    }
    let now = now();
    let mut queue = b.send.queue();
    let indications = b.indications.chunks_mut(INDICATION_BUF);
    for (item, indication) in b.from_peers.received_mut().zip(indications) {
        let Some(peer) = item.source else { continue };
        if item.truncated || item.len > RELAY_PAYLOAD_MAX {
            shared.metrics.malformed.inc();
            continue;
        }
        peer_to_client(
            shard, state, now, peer, relay, item.slot, item.len, indication, &mut queue,
        );
    }
    queue.flush();
}

/// A datagram from `from` arrived at relayed address `to_relay` (held by `target`), on its socket or handed
/// over in process by another allocation of this server: the allocation's core checks its permissions and
/// frames it for its client, and it is queued towards the client. `buf[4..4 + len]` is the payload.
#[allow(clippy::too_many_arguments)]
fn peer_to_client<'d>(
    shard: &Shard,
    target: &mut State,
    now: Now,
    from: SocketAddr,
    to_relay: SocketAddr,
    buf: &'d mut [u8],
    len: usize,
    indication: &'d mut [u8],
    queue: &mut SendQueue<'_, 'd>,
) {
    let action = target
        .core
        .handle_peer(now, to_relay, from, buf, len, indication);
    let (to, bytes): (FiveTuple, &[u8]) = match action {
        PeerAction::Drop => return,
        PeerAction::ChannelData { to, n } => {
            let buf: &[u8] = buf;
            (to, &buf[..n])
        }
        PeerAction::DataIndication { to, n } => {
            let indication: &[u8] = indication;
            (to, &indication[..n])
        }
    };
    // Any shard's socket on the client's server address sends as that address.
    deliver(shard, &target.streams, queue, to, bytes);
}

/// Queues a relayed packet towards a client: on this shard's listening socket for UDP, on the client's
/// bounded stream queue for TCP/TLS (a full queue drops it, as UDP would: a slow client cannot grow memory).
fn deliver<'d>(
    shard: &Shard,
    streams: &HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    queue: &mut SendQueue<'_, 'd>,
    to: FiveTuple,
    bytes: &'d [u8],
) {
    match to.transport {
        Transport::Udp => {
            if let Some(listener) = shard.listener(to.server) {
                queue.push(listener.as_raw_fd(), bytes, to.client);
            }
        }
        Transport::Tcp | Transport::Tls => {
            if let Some(tx) = streams.get(&to) {
                let _ = tx.try_send(bytes.to_vec());
            }
        }
    }
}
