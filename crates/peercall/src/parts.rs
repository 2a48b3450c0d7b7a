//! Adapters to the library crates: every use of `peercall_turn`, `peercall_signal` and `peercall_web` is in this
//! file, so a change in their APIs is a change here only.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::anyhow;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Resolved;

/// Which parts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Web client, signaling and STUN/TURN.
    Serve,
    /// STUN/TURN alone.
    Turn,
    /// Web client and signaling alone.
    Signal,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Serve => "serve",
            Mode::Turn => "turn",
            Mode::Signal => "signal",
        }
    }
    pub fn runs_turn(self) -> bool {
        matches!(self, Mode::Serve | Mode::Turn)
    }
    pub fn runs_signal(self) -> bool {
        matches!(self, Mode::Serve | Mode::Signal)
    }
}

/// The running STUN/TURN server.
#[derive(Clone)]
pub struct TurnPart {
    handle: peercall_turn::TurnHandle,
}

impl TurnPart {
    /// No new allocations from now on; existing ones run until they expire (SIGUSR2).
    pub fn drain(&self) {
        self.handle.drain();
    }

    pub fn addrs(&self) -> peercall_turn::Listening {
        self.handle.local_addrs()
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    pub fn metrics_text(&self, out: &mut String) {
        self.handle.metrics().encode_prometheus(out);
        out.push_str(
            "# HELP peercall_turn_draining 1 while this TURN server drains (SIGUSR2): new allocations are refused.\n\
             # TYPE peercall_turn_draining gauge\n",
        );
        out.push_str(if self.handle.is_draining() {
            "peercall_turn_draining 1\n"
        } else {
            "peercall_turn_draining 0\n"
        });
    }

    pub fn reload_tls(&self) -> Result<(), String> {
        self.handle.reload_tls().map_err(|e| e.to_string())
    }

    /// Serves a connection of the HTTPS port that speaks STUN, as the TURNS port would (same caps and metrics).
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
        self.handle
            .adopt_tls_stream(stream, client, server, accepted)
    }
}

/// What browsers are told about TURN (for the banner).
#[derive(Debug, Clone)]
pub struct TurnAdvertSummary {
    pub port: u16,
    pub tls_port: Option<u16>,
    /// TURNS on the HTTPS port too (web and TURN share it).
    pub https_port: Option<u16>,
    pub credential_ttl_secs: u64,
}

/// The signaling service (WebSocket on /ws).
#[derive(Clone)]
pub struct SignalPart {
    inner: peercall_signal::SignalService,
    pub turn_advert: Option<TurnAdvertSummary>,
}

impl SignalPart {
    pub fn router(&self) -> Router {
        self.inner.router()
    }

    /// Tells connected clients the server is going away and closes their sockets.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    pub fn metrics_text(&self, out: &mut String) {
        self.inner.metrics_text(out);
    }

    /// For /healthz.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = self.inner.stats();
        let mut v =
            serde_json::json!({ "connections": s.connections, "rooms": s.rooms, "peers": s.peers });
        if let Some((node, up)) = self.inner.cluster_status() {
            v["redis"] =
                serde_json::json!({ "status": if up { "up" } else { "down" }, "node": node });
        }
        v
    }

    /// `Some(false)` when this node is clustered and Redis cannot be reached.
    pub fn redis_up(&self) -> Option<bool> {
        self.inner.cluster_status().map(|(_, up)| up)
    }
}

/// The embedded browser client: `/`, `/r/{room}` and its assets.
pub fn web_router() -> Router {
    peercall_web::router()
}

/// The running parts; `None` where this mode does not run that part.
pub struct Parts {
    pub turn: Option<TurnPart>,
    pub signal: Option<SignalPart>,
    turn_stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Parts {
    pub fn reload_tls(&self) {
        if let Some(turn) = &self.turn {
            match turn.reload_tls() {
                Ok(()) => {
                    tracing::info!("SIGHUP: TURNS certificate reloaded (if one is configured)")
                }
                Err(e) => tracing::error!(
                    "SIGHUP: TURNS certificate NOT reloaded, the old one stays: {e}"
                ),
            }
        }
    }

    /// Starts shutting down: signaling clients are told, TURN stops.
    pub fn shutdown(&self) {
        if let Some(signal) = &self.signal {
            signal.shutdown();
        }
        self.turn_stop.cancel();
    }

    pub async fn join(self) {
        if let Some(signal) = &self.signal {
            signal.inner.closed().await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds and starts the parts `mode` runs. `https_port`: the web port when it is HTTPS, where TURN is served too.
/// `turns_tls` is a ready TURNS configuration (the ACME certificate's resolver), used when no `--turn-cert` is
/// given.
pub async fn start(
    mode: Mode,
    config: &Resolved,
    https_port: Option<u16>,
    turns_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> anyhow::Result<Parts> {
    let turn_stop = CancellationToken::new();
    let mut tasks = Vec::new();
    // Under `serve` the signaling server mints TURN credentials with the TURN server's own shared secret; when
    // the operator gave none, a random one lives in this process only.
    let mut auth_secrets: Vec<String> = config.auth_secret.iter().map(|s| s.0.clone()).collect();
    if mode == Mode::Serve && auth_secrets.is_empty() {
        auth_secrets.push(random_secret());
    }

    let turn = if mode.runs_turn() {
        let turn_config = peercall_turn::TurnConfig {
            listen: config.listen.clone(),
            tls_listen: config.tls_listen.clone(),
            tls: match (&config.turn_cert, &config.turn_key) {
                (Some(cert), Some(key)) => Some(peercall_turn::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            tls_config: turns_tls,
            relay_ip: config.relay_ip.clone(),
            external_ip: config.external_ip.clone(),
            realm: config.realm.clone(),
            users: config
                .user
                .iter()
                .map(|u| (u.name.clone(), u.password.clone()))
                .collect(),
            auth_secrets: auth_secrets.clone(),
            allow_peer: config.allow_peer.clone(),
            deny_peer: config.deny_peer.clone(),
            allow_loopback_peers: config.allow_loopback_peers,
            min_port: config.min_port,
            max_port: config.max_port,
            user_quota: config.user_quota,
            client_quota: config.client_quota,
            total_quota: config.total_quota,
            max_permissions: config.max_permissions,
            max_channels: config.max_channels,
            stream_limits: peercall_turn::StreamLimits {
                first_message_timeout: Duration::from_secs(config.tcp_first_message_timeout),
                idle_timeout: Duration::from_secs(config.tcp_idle_timeout),
                per_address: config.tcp_per_address,
                total: config.tcp_connections,
            },
            max_lifetime: Duration::from_secs(config.max_lifetime),
            unauth_rate_per_sec: config.unauth_rate,
            threads: config.relay_threads as usize,
            software: Some(format!("peercall {}", env!("CARGO_PKG_VERSION"))),
            ..peercall_turn::TurnConfig::default()
        };
        let server = peercall_turn::TurnServer::bind(turn_config)
            .await
            .map_err(turn_error)?;
        let handle = server.handle();
        let stop = turn_stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.run(stop).await {
                tracing::error!("STUN/TURN server stopped: {e}");
            }
        }));
        Some(TurnPart { handle })
    } else {
        None
    };

    let signal = if mode.runs_signal() {
        let advert = match (&turn, &config.turn_secret) {
            (Some(turn), _) => auth_secrets.first().map(|secret| {
                let addrs = turn.addrs();
                (
                    secret.clone(),
                    TurnAdvertSummary {
                        port: addrs.udp.first().map_or(config.turn_port, SocketAddr::port),
                        tls_port: addrs.tls.first().map(SocketAddr::port),
                        https_port,
                        credential_ttl_secs: config.credential_ttl,
                    },
                )
            }),
            (None, Some(secret)) => Some((
                secret.0.clone(),
                TurnAdvertSummary {
                    port: config.turn_port,
                    tls_port: config.turn_tls_port,
                    https_port: None,
                    credential_ttl_secs: config.credential_ttl,
                },
            )),
            (None, None) => None,
        };
        let signal_config = peercall_signal::SignalConfig {
            max_message_bytes: config.max_message_bytes,
            max_messages_per_sec: config.max_messages_per_sec,
            max_connections_per_ip: config.max_connections_per_ip,
            max_rooms: config.max_rooms,
            max_peers_per_room: config.room_capacity,
            require_room_password: config.require_room_password,
            join_token_secret: config.join_token_secret.as_ref().map(|s| s.0.clone()),
            resume_grace: Duration::from_secs(config.resume_grace),
            ping_interval: Duration::from_secs(config.ping_interval),
            ping_timeout: Duration::from_secs(config.ping_timeout),
            public_host: config.public_host.clone(),
            allowed_origins: config.allowed_origin.clone(),
            trusted_proxies: config.trusted_proxy.clone(),
            max_joins_per_min: config.max_joins_per_min,
            max_new_rooms_per_min: config.max_new_rooms_per_min,
            failed_joins_before_backoff: config.failed_joins_before_backoff,
            max_join_backoff: Duration::from_secs(config.max_join_backoff),
            room_failed_joins_before_delay: config.room_failed_joins_before_delay,
            turn: advert
                .as_ref()
                .map(|(secret, summary)| peercall_signal::TurnAdvert {
                    secret: secret.clone(),
                    port: summary.port,
                    tls_port: summary.tls_port,
                    https_port: summary.https_port,
                    credential_ttl: Duration::from_secs(summary.credential_ttl_secs),
                    servers: config.turn_server.iter().map(|u| u.0.clone()).collect(),
                }),
            ..peercall_signal::SignalConfig::default()
        };
        let service = peercall_signal::SignalService::new(signal_config);
        if let Some(url) = &config.redis {
            service
                .enable_redis(&peercall_signal::redis::RedisSettings {
                    url: url.0.clone(),
                    resume_grace: Duration::from_secs(config.resume_grace),
                })
                .map_err(|e| anyhow!("signaling cluster: {e}"))?;
        }
        Some(SignalPart {
            inner: service,
            turn_advert: advert.map(|(_, summary)| summary),
        })
    } else {
        None
    };
    Ok(Parts {
        turn,
        signal,
        turn_stop,
        tasks,
    })
}

/// One line naming what failed and the flag that changes it.
fn turn_error(e: peercall_turn::TurnError) -> anyhow::Error {
    use peercall_turn::TurnError;
    let hint = match &e {
        TurnError::Bind { transport, .. } if transport.eq_ignore_ascii_case("tls") => {
            " (is another server running? change --tls-listen)"
        }
        TurnError::Bind { .. } => " (is another STUN/TURN server running? change --listen)",
        TurnError::Tls(_) => {
            " (check --turn-cert/--turn-key, or --tls-cert/--tls-key which TURNS uses by default)"
        }
        TurnError::NoRelayIp => "",
        TurnError::BadPortRange(..) => " (check --min-port/--max-port)",
        _ => "",
    };
    anyhow!("STUN/TURN server: {e}{hint}")
}

fn random_secret() -> String {
    use std::fmt::Write;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
