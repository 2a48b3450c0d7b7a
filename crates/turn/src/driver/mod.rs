//! The driver: sockets in, core decisions out. No protocol logic lives here.
//!
//! UDP runs on shard threads, one per core by default. Each shard owns a [`Core`], an SO_REUSEPORT socket on
//! every UDP listening address and the relay sockets of its allocations, all in one epoll set. The kernel
//! spreads clients over the shards by their address, so a client's requests and ChannelData always reach the
//! shard that holds its allocation. A shard reads up to [`BATCH`] datagrams per `recvmmsg`, runs the core on
//! them under one uncontended lock, and sends the results with `sendmmsg`; the relay path allocates nothing.
//! What the shards must agree on (quotas, relay addresses, reservations) lives in one [`Ledger`], which the
//! driver passes to each core call. The cores open no sockets: an Allocate a core admits comes back as
//! [`crate::core::Action::Bind`], the driver binds (see `ports`) and hands the result back before the answer
//! goes out.
//!
//! TCP and TLS clients run as tokio tasks; each connection is served by one shard's core (picked by the
//! client's address), and relayed packets towards it go through a bounded queue.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peercall_udp::{Epoll, udp_socket};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::policy::PeerPolicy;
use crate::core::{Core, CoreConfig, FiveTuple, Ledger, Now, Transport};
use crate::{TlsFiles, TurnConfig, TurnError, TurnMetrics};

mod ports;
mod setup;
mod stream;
mod udp;
use ports::{RelayHost, RelaySockets, Started};
pub use setup::interface_addresses;
use setup::{default_relay_ips, load_tls, own_ips, own_listeners, shard_count};
pub use stream::StreamLimits;
pub(crate) use stream::{Framer, StreamRefusal};
use stream::{StreamGate, adopt_tls_stream, stream_listener};
use udp::shard_loop;

/// Largest peer datagram a relay accepts. Media over TURN stays under the path MTU (about 1200-1500 bytes).
/// Larger datagrams are dropped, not truncated.
const RELAY_PAYLOAD_MAX: usize = 4096;
/// Largest client datagram read on a UDP listener: a ChannelData or Send indication carrying the largest
/// payload a relay would pass the other way, plus room for its attributes.
const CLIENT_DATAGRAM_MAX: usize = RELAY_PAYLOAD_MAX + 256;
/// Room for any reply the core writes (it needs at least 1500 bytes).
const REPLY_BUF: usize = 2048;
/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;
/// Socket buffers of each shard's listening sockets: bursts from many clients land here.
const LISTENER_SOCKET_BUFFER: usize = 4 << 20;
/// Frames queued towards one TCP/TLS client before further relayed packets are dropped (UDP semantics).
const STREAM_QUEUE: usize = 256;
/// Longest a shard sleeps in epoll, so it notices shutdown.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// Epoll tokens at and above this are relay sockets; below, the index of a listening socket.
const RELAY_TOKEN_BASE: u64 = 1 << 32;

/// Where the server listens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    /// Bound UDP STUN/TURN addresses, one per `listen` address (with the chosen port when 0 was asked).
    pub udp: Vec<SocketAddr>,
    /// TCP addresses: the same IP and port as each UDP one.
    pub tcp: Vec<SocketAddr>,
    /// TURNS addresses; empty without a certificate.
    pub tls: Vec<SocketAddr>,
    /// Addresses relay sockets are bound on (`relay_ip`, or derived from the listening addresses).
    pub relay_ips: Vec<IpAddr>,
    /// Shard threads serving UDP.
    pub threads: usize,
}

/// One shard: a core, its sockets and its epoll set.
struct Shard {
    index: usize,
    /// This shard's own counters (its core's and its thread's), summed with the others for `/metrics`.
    metrics: Arc<TurnMetrics>,
    state: Mutex<State>,
    epoll: Epoll,
    /// This shard's SO_REUSEPORT socket on each UDP listening address (epoll token = index).
    listeners: Vec<(SocketAddr, StdUdpSocket)>,
}

/// A shard's mutable state. The lock is taken once per batch by the shard thread, and by TCP/TLS tasks for
/// their own packets; it is never held across an await.
struct State {
    core: Core,
    relays: RelaySockets,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
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

    /// After this shard's core ran: serves the relay sockets bound for it and closes those it released.
    fn settle(&self, shared: &Shared, state: &mut State, started: Started) {
        let State { core, relays, .. } = state;
        let outputs = std::iter::from_fn(|| core.poll_output());
        ports::settle(
            &shared.relay,
            self.index,
            &self.epoll,
            relays,
            started,
            outputs,
        );
    }
}

struct Shared {
    shards: Vec<Shard>,
    metrics: Arc<TurnMetrics>,
    /// Relay IPs and ports, which shard owns each relayed address, sockets held for reservations.
    relay: RelayHost,
    /// The TURNS configuration, and the files to re-read it from on reload (none for a configuration given
    /// ready-made, whose resolver renews itself).
    tls: Option<(Option<TlsFiles>, RwLock<Arc<rustls::ServerConfig>>)>,
    shutdown: CancellationToken,
    stopping: AtomicBool,
    /// Open TCP/TLS connections, capped per source and in total.
    streams: Arc<StreamGate>,
    stream_limits: StreamLimits,
    /// The quota ledger every shard's core admits allocations against (also where draining is switched on),
    /// passed to each core call.
    ledger: Ledger,
}

impl Shared {
    fn metrics(&self) -> TurnMetrics {
        TurnMetrics::sum(
            std::iter::once(&*self.metrics).chain(self.shards.iter().map(|s| &*s.metrics)),
        )
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
        let tls_config = match (&config.tls, &config.tls_config) {
            (Some(files), _) => Some((Some(files.clone()), RwLock::new(load_tls(files)?))),
            (None, Some(ready)) => Some((None, RwLock::new(ready.clone()))),
            (None, None) => None,
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
            external_ip: config.external_ip.clone(),
        });
        let mut shards = Vec::with_capacity(threads);
        for (index, shard_listeners) in listeners.into_iter().enumerate() {
            let epoll = Epoll::new().map_err(udp_err(listening.udp[0]))?;
            for (i, (local, socket)) in shard_listeners.iter().enumerate() {
                epoll
                    .add(socket.as_raw_fd(), i as u64)
                    .map_err(udp_err(*local))?;
            }
            let shard_metrics = Arc::new(TurnMetrics::default());
            shards.push(Shard {
                index,
                metrics: shard_metrics.clone(),
                state: Mutex::new(State {
                    core: Core::new(core_config.clone(), shard_metrics),
                    relays: RelaySockets::default(),
                    streams: HashMap::new(),
                }),
                epoll,
                listeners: shard_listeners,
            });
        }
        let streams = Arc::new(StreamGate::new(metrics.clone()));
        let shared = Arc::new(Shared {
            ledger: Ledger::default(),
            shards,
            metrics,
            relay: RelayHost::new(relay_ips, (config.min_port, config.max_port)),
            tls: tls_config,
            shutdown: CancellationToken::new(),
            stopping: AtomicBool::new(false),
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

    /// A handle for the running server, to take before [`run`](Self::run) consumes this one.
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
            state.streams.clear();
        }
        self.shared.relay.reserved().clear();
        Ok(())
    }
}

impl TurnHandle {
    /// Where the server listens: the bound addresses (real ports when port 0 was asked) and relay addresses.
    pub fn local_addrs(&self) -> Listening {
        self.listening.clone()
    }

    /// The server's metrics: the shards' counters and the TCP/TLS side's, added up now.
    pub fn metrics(&self) -> TurnMetrics {
        self.shared.metrics()
    }

    /// Whether the server still serves: `false` once the shutdown token passed to
    /// [`TurnServer::run`] was cancelled.
    pub fn is_running(&self) -> bool {
        !self.shared.shutdown.is_cancelled()
    }

    /// Drains this TURN server: new allocations are refused with 508 Insufficient Capacity (clients move to
    /// another server of the fleet); existing allocations, permissions and channels keep relaying and may be
    /// refreshed until they expire. STUN Binding is still answered.
    pub fn drain(&self) {
        self.shared.ledger.set_draining(true);
    }

    /// Whether [`TurnHandle::drain`] was called (the `peercall_turn_draining` gauge).
    pub fn is_draining(&self) -> bool {
        self.shared.ledger.is_draining()
    }

    /// Serves a TLS connection accepted by another listener whose first bytes are STUN (TURN on peercall's
    /// HTTPS port): `stream` is the decrypted stream, with any bytes already read put back in front; `client`
    /// and `server` are its TCP addresses; `accepted` is when the TCP connection was accepted. It is treated
    /// exactly as a connection on the TURNS port: the same per-address and total caps, first-message and idle
    /// deadlines and metrics. Runs on a task of its own (call inside the tokio runtime); `false` when a
    /// connection cap or shutdown refused it.
    pub fn adopt_tls_stream<S>(
        &self,
        stream: S,
        client: SocketAddr,
        server: SocketAddr,
        accepted: tokio::time::Instant,
    ) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let five = FiveTuple {
            client,
            server,
            transport: Transport::Tls,
        };
        adopt_tls_stream(&self.shared, stream, five, accepted)
    }

    /// Re-reads the TLS certificate and key; new TLS connections use them, existing allocations stay.
    pub fn reload_tls(&self) -> Result<(), TurnError> {
        if let Some((Some(files), current)) = &self.shared.tls {
            let fresh = load_tls(files)?;
            *current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
        Ok(())
    }
}
