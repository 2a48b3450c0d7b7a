//! The tokio driver: sockets in, core decisions out. No protocol logic lives here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peercall_stun::{Family, stream_frame_len};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::policy::PeerPolicy;
use crate::core::{Action, Core, CoreConfig, FiveTuple, Now, PeerAction, RelayPorts, Transport};
use crate::{ExternalIp, TlsFiles, TurnConfig, TurnError, TurnMetrics};

/// Large enough for any UDP datagram plus a ChannelData header.
const BUF: usize = 65_536 + 8;
/// Largest peer datagram a relay accepts. Media over TURN stays under the path MTU (about 1200-1500 bytes);
/// a small per-allocation buffer keeps 10,000 allocations cheap. Larger datagrams are dropped, not truncated.
const RELAY_PAYLOAD_MAX: usize = 4096;
/// ChannelData header in front of the payload, padding, and room for a Data indication's attributes.
const RELAY_BUF: usize = RELAY_PAYLOAD_MAX + 4 + 3;
const INDICATION_BUF: usize = RELAY_PAYLOAD_MAX + 64;
/// Frames queued towards one TCP/TLS client before further relayed packets are dropped (UDP semantics).
const STREAM_QUEUE: usize = 256;

/// Where the server listens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub relay_ips: Vec<IpAddr>,
}

/// Mutable state shared by the driver's tasks. The lock is held only while the core decides, never across
/// an await or a socket call.
struct State {
    core: Core,
    relays: HashMap<SocketAddr, RelaySocket>,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    stop: CancellationToken,
}

struct Shared {
    state: Mutex<State>,
    metrics: Arc<TurnMetrics>,
    udp_listeners: HashMap<SocketAddr, Arc<UdpSocket>>,
    relay_ips: Vec<IpAddr>,
    external: Vec<ExternalIp>,
    ports: (u16, u16),
    tls: Option<(TlsFiles, RwLock<Arc<rustls::ServerConfig>>)>,
    shutdown: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the core; keep serving with the state as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

impl TurnServer {
    /// Binds every listening socket (so "port in use" is reported at start, naming the address).
    pub async fn bind(config: TurnConfig) -> Result<TurnServer, TurnError> {
        if config.min_port == 0 || config.min_port > config.max_port {
            return Err(TurnError::BadPortRange(config.min_port, config.max_port));
        }
        let mut udp_listeners = HashMap::new();
        let mut tcp = Vec::new();
        let mut listening = Listening::default();
        for addr in &config.listen {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| TurnError::Bind {
                    transport: "UDP",
                    addr: *addr,
                    source,
                })?;
            let local = socket.local_addr().map_err(|source| TurnError::Bind {
                transport: "UDP",
                addr: *addr,
                source,
            })?;
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
            udp_listeners.insert(local, Arc::new(socket));
            tcp.push(listener);
        }
        let tls_config = match &config.tls {
            Some(files) => Some((files.clone(), RwLock::new(load_tls(files)?))),
            None => None,
        };
        let mut tls = Vec::new();
        if tls_config.is_some() {
            for addr in &config.tls_listen {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| TurnError::Bind {
                        transport: "TLS",
                        addr: *addr,
                        source,
                    })?;
                let local = listener.local_addr().map_err(|source| TurnError::Bind {
                    transport: "TLS",
                    addr: *addr,
                    source,
                })?;
                listening.tls.push(local);
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
        let core_config = CoreConfig {
            realm: config.realm.clone(),
            users: config.users.clone(),
            auth_secrets: config.auth_secrets.clone(),
            policy: PeerPolicy::new(
                &config.allow_peer,
                &config.deny_peer,
                config.allow_loopback_peers,
            ),
            user_quota: config.user_quota,
            total_quota: config.total_quota,
            default_lifetime: config.default_lifetime,
            max_lifetime: config.max_lifetime,
            unauth_rate_per_sec: config.unauth_rate_per_sec,
            software: config.software.clone(),
            nonce_key: rand::random(),
        };
        let core = Core::new(Arc::new(core_config), metrics.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                relays: HashMap::new(),
                streams: HashMap::new(),
            }),
            metrics,
            udp_listeners,
            relay_ips,
            external: config.external_ip.clone(),
            ports: (config.min_port, config.max_port),
            tls: tls_config,
            shutdown: CancellationToken::new(),
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
        let mut tasks = tokio::task::JoinSet::new();
        for socket in self.shared.udp_listeners.values() {
            tasks.spawn(udp_listener(self.shared.clone(), socket.clone()));
        }
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
        tasks.spawn(timers(self.shared.clone()));
        shutdown.cancelled().await;
        self.shared.shutdown.cancel();
        let relays: Vec<RelaySocket> = self.shared.lock().relays.drain().map(|(_, r)| r).collect();
        for r in relays {
            r.stop.cancel();
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
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

/// Binds relay sockets for the core. New sockets are collected and started once the lock is released.
struct DriverPorts<'a> {
    shared: &'a Shared,
    started: Vec<(SocketAddr, Arc<UdpSocket>, CancellationToken)>,
    in_use: &'a HashMap<SocketAddr, RelaySocket>,
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
        // Bounded: at most 64 tries, then report no capacity rather than scanning the whole range.
        for i in 0..span.min(64) {
            let mut port = min + ((start + i * 7919) % span) as u16;
            if even && port % 2 == 1 {
                if port == max {
                    continue;
                }
                port += 1;
            }
            let addr = SocketAddr::new(ip, port);
            if self.bind_at(addr) {
                return Some(addr);
            }
        }
        None
    }

    fn bind_at(&mut self, addr: SocketAddr) -> bool {
        if self.in_use.contains_key(&addr) || self.started.iter().any(|(a, _, _)| *a == addr) {
            return false;
        }
        let Ok(std_socket) = StdUdpSocket::bind(addr) else {
            return false;
        };
        if std_socket.set_nonblocking(true).is_err() {
            return false;
        }
        let Ok(socket) = UdpSocket::from_std(std_socket) else {
            return false;
        };
        self.started
            .push((addr, Arc::new(socket), CancellationToken::new()));
        true
    }

    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        let mapped = self
            .shared
            .external
            .iter()
            .find(|e| e.private.is_none_or(|p| p == relay.ip()));
        match mapped {
            Some(e) => SocketAddr::new(e.public, relay.port()),
            None => relay,
        }
    }
}

/// Runs the core on one client packet and returns what to send where, with the lock released.
enum Out {
    Nothing,
    Reply(usize),
    ToPeer {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
        start: usize,
        len: usize,
    },
}

fn client_packet(shared: &Arc<Shared>, from: FiveTuple, packet: &[u8], out: &mut [u8]) -> Out {
    let mut guard = shared.lock();
    let state = &mut *guard;
    let mut ports = DriverPorts {
        shared,
        started: Vec::new(),
        in_use: &state.relays,
    };
    let action = state
        .core
        .handle_client(now(), from, packet, out, &mut ports);
    let started = std::mem::take(&mut ports.started);
    let result = match action {
        Action::Nothing => Out::Nothing,
        Action::Reply(0) => Out::Nothing,
        Action::Reply(n) => Out::Reply(n),
        Action::ToPeer { relay, peer, data } => {
            let start = data.as_ptr() as usize - packet.as_ptr() as usize;
            match state.relays.get(&relay) {
                Some(r) => Out::ToPeer {
                    socket: r.socket.clone(),
                    peer,
                    start,
                    len: data.len(),
                },
                None => Out::Nothing,
            }
        }
    };
    for (addr, socket, stop) in started {
        state.relays.insert(
            addr,
            RelaySocket {
                socket: socket.clone(),
                stop: stop.clone(),
            },
        );
        tokio::spawn(relay_task(shared.clone(), addr, socket, stop));
    }
    result
}

async fn udp_listener(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let server = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; 2048];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here on Linux; they are not fatal.
            Err(_) => continue,
        };
        let from = FiveTuple {
            client,
            server,
            transport: Transport::Udp,
        };
        match client_packet(&shared, from, &buf[..n], &mut out) {
            Out::Nothing => {}
            Out::Reply(len) => {
                let _ = socket.send_to(&out[..len], client).await;
            }
            Out::ToPeer {
                socket: relay,
                peer,
                start,
                len,
            } => {
                let _ = relay.send_to(&buf[start..start + len], peer).await;
            }
        }
    }
}

async fn relay_task(
    shared: Arc<Shared>,
    relay: SocketAddr,
    socket: Arc<UdpSocket>,
    stop: CancellationToken,
) {
    // One extra byte tells an oversized datagram (which recv_from would silently truncate) from a full one.
    let mut buf = vec![0u8; RELAY_BUF + 1];
    let mut out = vec![0u8; INDICATION_BUF];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf[4..4 + RELAY_PAYLOAD_MAX + 1]) => r,
        };
        let Ok((len, peer)) = received else { continue };
        if len > RELAY_PAYLOAD_MAX {
            shared.metrics.malformed.inc();
            continue;
        }
        let (action, stream) = {
            let mut state = shared.lock();
            let action = state
                .core
                .handle_peer(now(), relay, peer, &mut buf, len, &mut out);
            let to = match &action {
                PeerAction::ChannelData { to, .. } | PeerAction::DataIndication { to, .. } => {
                    Some(*to)
                }
                PeerAction::Drop => None,
            };
            let stream = to
                .filter(|t| t.transport != Transport::Udp)
                .and_then(|t| state.streams.get(&t).cloned());
            (action, stream)
        };
        let (to, bytes) = match action {
            PeerAction::Drop => continue,
            PeerAction::ChannelData { to, n } => (to, &buf[..n]),
            PeerAction::DataIndication { to, n } => (to, &out[..n]),
        };
        match to.transport {
            Transport::Udp => {
                if let Some(listener) = shared.udp_listeners.get(&to.server) {
                    let _ = listener.send_to(bytes, to.client).await;
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(tx) = stream {
                    // A full queue drops the packet, as UDP would: a slow client cannot grow our memory.
                    let _ = tx.try_send(bytes.to_vec());
                }
            }
        }
    }
}

async fn timers(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let released: Vec<RelaySocket> = {
            let mut state = shared.lock();
            state.core.handle_timeout(Instant::now());
            let gone = state.core.take_released();
            gone.iter()
                .filter_map(|addr| state.relays.remove(addr))
                .collect()
        };
        for r in released {
            r.stop.cancel();
        }
    }
}

async fn stream_listener(shared: Arc<Shared>, listener: TcpListener, transport: Transport) {
    loop {
        let Ok((stream, client)) = listener.accept().await else {
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let five = FiveTuple {
            client,
            server,
            transport,
        };
        if transport == Transport::Tls {
            let Some((_, config)) = &shared.tls else {
                continue;
            };
            let config = config.read().unwrap_or_else(|p| p.into_inner()).clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                if let Ok(Ok(tls)) = handshake {
                    stream_connection(shared, five, tls).await;
                }
            });
        } else {
            tokio::spawn(stream_connection(shared, five, stream));
        }
    }
}

/// One TCP/TLS client: frames in (RFC 8656 §12.5 framing), replies and relayed packets out.
async fn stream_connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    shared: Arc<Shared>,
    five: FiveTuple,
    stream: S,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    shared.lock().streams.insert(five, tx.clone());
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; BUF];
    let mut filled = 0;
    let mut out = vec![0u8; 2048];
    'read: loop {
        let n = match reader.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        filled += n;
        loop {
            let frame_len = match stream_frame_len(&buf[..filled]) {
                Ok(Some(len)) if len <= buf.len() => len,
                Ok(Some(_)) | Err(_) => break 'read, // garbage on the stream: close it
                Ok(None) => break,
            };
            if filled < frame_len {
                break;
            }
            match client_packet(&shared, five, &buf[..frame_len], &mut out) {
                Out::Nothing => {}
                Out::Reply(len) => {
                    if tx.send(out[..len].to_vec()).await.is_err() {
                        break 'read;
                    }
                }
                Out::ToPeer {
                    socket,
                    peer,
                    start,
                    len,
                } => {
                    let _ = socket.send_to(&buf[start..start + len], peer).await;
                }
            }
            buf.copy_within(frame_len..filled, 0);
            filled -= frame_len;
        }
    }
    let released = {
        let mut state = shared.lock();
        state.streams.remove(&five);
        state.core.connection_closed(five);
        let gone = state.core.take_released();
        gone.iter()
            .filter_map(|addr| state.relays.remove(addr))
            .collect::<Vec<_>>()
    };
    for r in released {
        r.stop.cancel();
    }
    drop(tx);
    let _ = writer_task.await;
}
