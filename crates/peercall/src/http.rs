//! The HTTP(S) port: web client, signaling WebSocket, `/healthz` and `/metrics`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::request::Parts as RequestParts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::task::JoinHandle;

use crate::acme::Acme;
use crate::config::{HttpTls, Layer, Resolved};
use crate::parts::{Mode, Parts, SignalPart, TurnPart};
use crate::tls;

/// The bound, not yet serving, HTTP port (bound first, so "port in use" is the first error a user sees).
pub struct Bound {
    listener: std::net::TcpListener,
    pub addr: SocketAddr,
    tls: Option<TlsSource>,
    /// `--metrics-listen`: /metrics and the detailed /healthz for anyone who reaches it.
    metrics: Option<(std::net::TcpListener, SocketAddr)>,
    /// `--http-redirect`: plain HTTP redirected to HTTPS, and ACME HTTP-01.
    redirect: Option<(std::net::TcpListener, SocketAddr)>,
    acme: Option<Arc<Acme>>,
}

enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
        config: Arc<rustls::ServerConfig>,
    },
    SelfSigned(tls::SelfSigned),
    /// `--domain`: the ACME resolver's certificate, renewed in place.
    Acme(Arc<rustls::ServerConfig>),
}

/// Binds the HTTP port and loads its certificate. Errors name the address or file and the flag to change.
pub fn bind(mode: Mode, config: &Resolved, acme: Option<Arc<Acme>>) -> anyhow::Result<Bound> {
    let what = if mode.runs_signal() {
        "the web client and signaling"
    } else {
        "/healthz and /metrics"
    };
    let (wanted, listener) = match health_only_default(mode, config) {
        // `peercall turn` without --http: its health port follows the TURN listen address, and a second
        // `peercall turn` on the same host (another --listen port) takes any free port instead of failing.
        Some(wanted) => match std::net::TcpListener::bind(wanted) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = SocketAddr::new(wanted.ip(), 0);
                tracing::warn!(
                    "{wanted} is taken (another peercall?): /healthz and /metrics use a free port instead, see the banner; give --http to choose one"
                );
                (any, std::net::TcpListener::bind(any))
            }
            bound => (wanted, bound),
        },
        None => (config.http, std::net::TcpListener::bind(config.http)),
    };
    let listener = listener.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (is another peercall or web server running? change --http)"
        } else {
            " (change --http)"
        };
        anyhow!("cannot listen on {wanted} for {what}: {e}{hint}")
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot configure the HTTP socket")?;
    let addr = listener
        .local_addr()
        .context("cannot read the HTTP socket address")?;
    let metrics = match config.metrics_listen {
        None => None,
        Some(at) => {
            let l = std::net::TcpListener::bind(at).map_err(|e| {
                anyhow!(
                    "cannot listen on {at} for /metrics and /healthz: {e} (change --metrics-listen)"
                )
            })?;
            l.set_nonblocking(true)
                .context("cannot configure the metrics socket")?;
            let a = l
                .local_addr()
                .context("cannot read the metrics socket address")?;
            Some((l, a))
        }
    };
    let tls = match config.http_tls() {
        HttpTls::Off => None,
        HttpTls::Files { cert, key } => {
            let server_config = tls::server_config_from_files(&cert, &key)?;
            Some(TlsSource::Files {
                cert,
                key,
                config: server_config,
            })
        }
        HttpTls::SelfSigned => Some(TlsSource::SelfSigned(tls::self_signed()?)),
        HttpTls::Acme => match &acme {
            Some(acme) => Some(TlsSource::Acme(acme.https_config(tls::HTTP_ALPN)?)),
            None => {
                return Err(anyhow!(
                    "--domain is not supported by `peercall {}`",
                    mode.name()
                ));
            }
        },
    };
    let redirect = match config.http_redirect {
        None => None,
        Some(at) => match std::net::TcpListener::bind(at) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .context("cannot configure the redirect socket")?;
                let a = l
                    .local_addr()
                    .context("cannot read the redirect socket address")?;
                Some((l, a))
            }
            // The port 80 that `--domain` alone asks for may be another web server's: HTTPS works without it.
            Err(e) if crate::acme::redirect_is_default(config) => {
                tracing::warn!(
                    "cannot listen on {at} to redirect plain HTTP to HTTPS: {e}; going on without (give --http-redirect to choose another address)"
                );
                None
            }
            Err(e) => {
                return Err(anyhow!(
                    "cannot listen on {at} to redirect plain HTTP to HTTPS: {e} (change --http-redirect)"
                ));
            }
        },
    };
    Ok(Bound {
        listener,
        addr,
        tls,
        metrics,
        redirect,
        acme,
    })
}

impl Bound {
    /// The port when it is HTTPS: TURN is served there too (see `shared_port`).
    pub fn https_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|_| self.addr.port())
    }
}

/// Under `peercall turn` with --http left at its default: the default port on the first TURN listen
/// address's IP (not every interface, when TURN was told to listen on one).
fn health_only_default(mode: Mode, config: &Resolved) -> Option<SocketAddr> {
    if mode != Mode::Turn || config.provenance.layer("http") != Layer::Default {
        return None;
    }
    let ip = config.listen.first().map(|l| l.ip())?;
    Some(SocketAddr::new(ip, config.http.port()))
}

/// The running HTTP server.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// For `--tls-self-signed`: the certificate's SHA-256 fingerprint and the names it covers.
    pub self_signed: Option<(String, Vec<String>)>,
    /// The `--metrics-listen` address, when there is one.
    pub metrics_addr: Option<SocketAddr>,
    /// The `--http-redirect` address, when it is bound.
    pub redirect_addr: Option<SocketAddr>,
    /// `--domain`: the ACME certificate's state.
    pub acme: Option<Arc<Acme>>,
    redirect_handle: axum_server::Handle,
    redirect_task: Option<JoinHandle<()>>,
    handle: axum_server::Handle,
    metrics_handle: axum_server::Handle,
    reload: Option<(RustlsConfig, PathBuf, PathBuf)>,
    shutting_down: Arc<AtomicBool>,
    task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Stops accepting connections; requests in flight get `grace` to finish.
    pub fn stop_accepting(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.handle.graceful_shutdown(Some(grace));
        self.metrics_handle.graceful_shutdown(Some(grace));
        self.redirect_handle.graceful_shutdown(Some(grace));
    }

    /// Re-reads `--tls-cert/--tls-key` (SIGHUP); new connections use the new certificate.
    pub fn reload_tls(&self) {
        if let Some((rustls_config, cert, key)) = &self.reload {
            match tls::server_config_from_files(cert, key) {
                Ok(fresh) => {
                    rustls_config.reload_from_config(fresh);
                    tracing::info!("SIGHUP: HTTPS certificate reloaded from {}", cert.display());
                }
                Err(e) => tracing::error!(
                    "SIGHUP: HTTPS certificate NOT reloaded, the old one stays: {e:#}"
                ),
            }
        }
    }

    pub async fn join(self) {
        let _ = self.task.await;
        if let Some(task) = self.metrics_task {
            let _ = task.await;
        }
        if let Some(task) = self.redirect_task {
            let _ = task.await;
        }
    }
}

#[derive(Clone)]
struct AppState {
    mode: Mode,
    turn: Option<TurnPart>,
    signal: Option<SignalPart>,
    http_addr: SocketAddr,
    tls: bool,
    started: Instant,
    started_unix: f64,
    shutting_down: Arc<AtomicBool>,
    /// Who may see /metrics and the detailed /healthz on this listener.
    access: Access,
    /// Requests for /metrics refused by `access`.
    refused: Arc<AtomicU64>,
    /// `--domain`: the ACME certificate's state.
    acme: Option<Arc<Acme>>,
}

#[derive(Clone)]
struct Access {
    /// The `--metrics-listen` port: everyone who reaches it.
    everyone: bool,
    /// Loopback clients without proxy headers (the main port when there is no `--metrics-listen`).
    loopback: bool,
    /// SHA-256 of `--metrics-token`.
    token: Option<[u8; 32]>,
}

impl Access {
    fn allows(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
        if self.everyone {
            return true;
        }
        if let Some(want) = &self.token
            && let Some(given) = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
        {
            // Digests compared, not the token: the time taken says nothing about the token's bytes.
            use sha2::Digest;
            let given: [u8; 32] = sha2::Sha256::digest(given.trim().as_bytes()).into();
            if &given == want {
                return true;
            }
        }
        self.loopback
            && peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
            && !peercall_signal::guard::has_forwarding_headers(headers)
    }

    /// The answer to a request for /metrics that `allows` refused.
    fn refusal(&self) -> Response {
        let (code, text) = if self.token.is_some() {
            (
                StatusCode::UNAUTHORIZED,
                "/metrics needs Authorization: Bearer with the --metrics-token of this server, or use its \
                 --metrics-listen address.\n",
            )
        } else {
            (
                StatusCode::FORBIDDEN,
                "/metrics is served to loopback clients, on --metrics-listen, or with --metrics-token; \
                 this request is none of these.\n",
            )
        };
        let mut response = (
            code,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response();
        if self.token.is_some() {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"peercall metrics\""),
            );
        }
        response
    }
}

/// Serves the bound port: `/healthz`, `/metrics`, and under serve/signal the signaling WebSocket and web client.
pub fn serve(mode: Mode, bound: Bound, parts: &Parts, config: &Resolved) -> HttpServer {
    let shutting_down = Arc::new(AtomicBool::new(false));
    let token = config.metrics_token.as_ref().map(|t| {
        use sha2::Digest;
        <[u8; 32]>::from(sha2::Sha256::digest(t.0.as_bytes()))
    });
    let refused = Arc::new(AtomicU64::new(0));
    let state = AppState {
        mode,
        turn: parts.turn.clone(),
        signal: parts.signal.clone(),
        http_addr: bound.addr,
        tls: bound.tls.is_some(),
        started: Instant::now(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        shutting_down: shutting_down.clone(),
        access: Access {
            everyone: false,
            loopback: bound.metrics.is_none(),
            token,
        },
        refused,
        acme: bound.acme.clone(),
    };
    let metrics_handle = axum_server::Handle::new();
    let (metrics_addr, metrics_task) = match bound.metrics {
        None => (None, None),
        Some((listener, addr)) => {
            let mut metrics_state = state.clone();
            metrics_state.access.everyone = true;
            let app = Router::new()
                .route("/healthz", get(healthz))
                .route("/metrics", get(metrics))
                .with_state(metrics_state)
                .into_make_service_with_connect_info::<SocketAddr>();
            let server = axum_server::from_tcp(listener).handle(metrics_handle.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!("metrics HTTP server stopped: {e}");
                }
            });
            (Some(addr), Some(task))
        }
    };
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Some(signal) = &parts.signal {
        app = app.merge(signal.router());
    }
    if parts.signal.is_some() {
        app = app
            .merge(crate::parts::web_router())
            .route("/qr", get(qr_code));
    }
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let redirect_handle = axum_server::Handle::new();
    let (redirect_addr, redirect_task) = match bound.redirect {
        None => (None, None),
        Some((listener, addr)) => {
            let target = RedirectTarget {
                https_port: bound.addr.port(),
                fallback_host: config.domain.first().cloned(),
                acme: bound.acme.clone(),
            };
            let app = Router::new()
                .route("/.well-known/acme-challenge/{token}", get(http01))
                .fallback(redirect_to_https)
                .with_state(Arc::new(target));
            let server = axum_server::from_tcp(listener).handle(redirect_handle.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = server.serve(app.into_make_service()).await {
                    tracing::error!("HTTP redirect server stopped: {e}");
                }
            });
            (Some(addr), Some(task))
        }
    };

    let (task, self_signed, reload) = match bound.tls {
        None => {
            // TCP_NODELAY, as the TLS path sets it (shared_port): signaling is small writes (a candidate after
            // an offer), and Nagle holds each one back until the one before is acknowledged.
            let server = axum_server::from_tcp(bound.listener)
                .acceptor(axum_server::accept::NoDelayAcceptor::new())
                .handle(handle.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = server.serve(make_service).await {
                    tracing::error!("HTTP server stopped: {e}");
                }
            });
            (task, None, None)
        }
        Some(source) => {
            let (server_config, self_signed, files) = match source {
                TlsSource::Files { cert, key, config } => (config, None, Some((cert, key))),
                TlsSource::SelfSigned(s) => (s.config, Some((s.fingerprint, s.names)), None),
                TlsSource::Acme(config) => (config, None, None),
            };
            let rustls_config = RustlsConfig::from_config(server_config);
            // One port for web and TURN: after the handshake, STUN goes to TURN (see shared_port).
            let acceptor = crate::shared_port::SharedPort::new(
                RustlsAcceptor::new(rustls_config.clone()),
                parts.turn.clone(),
                Duration::from_secs(config.tcp_first_message_timeout),
            );
            let server = axum_server::from_tcp(bound.listener)
                .acceptor(acceptor)
                .handle(handle.clone());
            let reload = files.map(|(cert, key)| (rustls_config, cert, key));
            let task = tokio::spawn(async move {
                if let Err(e) = server.serve(make_service).await {
                    tracing::error!("HTTPS server stopped: {e}");
                }
            });
            (task, self_signed, reload)
        }
    };
    HttpServer {
        addr: bound.addr,
        tls: reload.is_some() || self_signed.is_some() || bound.acme.is_some(),
        self_signed,
        metrics_addr,
        redirect_addr,
        acme: bound.acme,
        redirect_handle,
        redirect_task,
        handle,
        metrics_handle,
        reload,
        shutting_down,
        task,
        metrics_task,
    }
}

/// Where `--http-redirect` sends plain-HTTP requests.
struct RedirectTarget {
    https_port: u16,
    /// For a request without a Host header: the first `--domain`.
    fallback_host: Option<String>,
    acme: Option<Arc<Acme>>,
}

/// `GET /.well-known/acme-challenge/TOKEN` on the redirect port: ACME HTTP-01 (RFC 8555 §8.3).
async fn http01(
    State(target): State<Arc<RedirectTarget>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match target
        .acme
        .as_ref()
        .and_then(|acme| acme.http01_key_authorization(&token))
    {
        Some(key_authorization) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
    }
}

/// Every other request on the redirect port: a permanent redirect to the same path over HTTPS.
async fn redirect_to_https(
    State(target): State<Arc<RedirectTarget>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_without_port)
        .filter(|h| valid_host(h))
        .map(str::to_owned)
        .or_else(|| target.fallback_host.clone());
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "a Host header is needed\n").into_response();
    };
    let port = match target.https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    match axum::http::HeaderValue::from_str(&location) {
        Ok(value) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, value)],
            "",
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request target\n").into_response(),
    }
}

/// `example.com:80` → `example.com`; `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A host name or address literal, nothing that could change the meaning of the redirect URL.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

/// The socket address of the client, when the server runs with connect info.
fn peer_of(request: &RequestParts) -> Option<SocketAddr> {
    request
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

async fn healthz(State(state): State<AppState>, request: RequestParts) -> impl IntoResponse {
    let detailed = state.access.allows(peer_of(&request), &request.headers);
    let shutting_down = state.shutting_down.load(Ordering::SeqCst);
    let mut healthy = !shutting_down;
    let turn = match &state.turn {
        Some(turn) => {
            let up = turn.is_running();
            healthy &= up;
            let a = turn.addrs();
            serde_json::json!({
                "status": if up { "up" } else { "down" },
                "udp": a.udp, "tcp": a.tcp, "tls": a.tls, "relay_ips": a.relay_ips,
            })
        }
        None => serde_json::json!({ "status": "not running" }),
    };
    let signaling = match &state.signal {
        Some(signal) => {
            let mut v = signal.stats_json();
            v["status"] = "up".into();
            v["url"] = format!(
                "{}://{}/ws",
                if state.tls { "wss" } else { "ws" },
                state.http_addr
            )
            .into();
            v
        }
        None => serde_json::json!({ "status": "not running" }),
    };
    let web = if state.signal.is_some() {
        serde_json::json!({ "status": "up" })
    } else {
        serde_json::json!({ "status": "not running" })
    };
    // Redis down: this node still serves its calls (so it stays in the load balancer), but cannot admit
    // cross-node joins: "degraded", still 200.
    let redis_down = state
        .signal
        .as_ref()
        .and_then(SignalPart::redis_up)
        .is_some_and(|up| !up);
    let status = if shutting_down {
        "shutting down"
    } else if healthy && redis_down {
        "degraded"
    } else if healthy {
        "ok"
    } else {
        "unavailable"
    };
    let body = if !detailed {
        // The public answer: whether it works, nothing about how or where.
        serde_json::json!({ "status": status })
    } else {
        serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": state.mode.name(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "parts": {
            "http": { "status": "up", "address": state.http_addr, "tls": state.tls },
            "web": web,
            "signaling": signaling,
            "turn": turn,
        },
        "certificate": state.acme.as_ref().map(|acme| acme.state().json()),
        })
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
}

async fn metrics(State(state): State<AppState>, request: RequestParts) -> Response {
    if !state.access.allows(peer_of(&request), &request.headers) {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return state.access.refusal();
    }
    let mut out = String::with_capacity(8192);
    process_metrics(&state, &mut out);
    if let Some(turn) = &state.turn {
        turn.metrics_text(&mut out);
    }
    if let Some(signal) = &state.signal {
        signal.metrics_text(&mut out);
    }
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        out,
    )
        .into_response()
}

fn process_metrics(state: &AppState, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP peercall_build_info peercall version and mode; always 1."
    );
    let _ = writeln!(out, "# TYPE peercall_build_info gauge");
    let _ = writeln!(
        out,
        "peercall_build_info{{version=\"{}\",mode=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        state.mode.name()
    );
    let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "peercall_uptime_seconds",
        "Seconds since peercall started.",
        "gauge",
        format!("{:.3}", state.started.elapsed().as_secs_f64()),
    );
    gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
        "gauge",
        format!("{:.3}", state.started_unix),
    );
    if let Some((cpu, rss)) = proc_self_stat() {
        gauge(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
            "counter",
            format!("{cpu:.2}"),
        );
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes.",
            "gauge",
            rss.to_string(),
        );
    }
    if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit, raised to the hard one at start).",
            "gauge",
            max.to_string(),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "Open file descriptors.",
            "gauge",
            fds.count().to_string(),
        );
    }
    let _ = writeln!(
        out,
        "# HELP peercall_part_up Whether a part of peercall runs and is healthy (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE peercall_part_up gauge");
    let _ = writeln!(out, "peercall_part_up{{part=\"http\"}} 1");
    if let Some(turn) = &state.turn {
        let _ = writeln!(
            out,
            "peercall_part_up{{part=\"turn\"}} {}",
            u8::from(turn.is_running())
        );
    }
    if state.signal.is_some() {
        let _ = writeln!(out, "peercall_part_up{{part=\"signaling\"}} 1");
    }
    let _ = writeln!(
        out,
        "# HELP peercall_metrics_refused_total Requests for /metrics on --http refused (not loopback, no token)."
    );
    let _ = writeln!(out, "# TYPE peercall_metrics_refused_total counter");
    let _ = writeln!(
        out,
        "peercall_metrics_refused_total {}",
        state.refused.load(Ordering::Relaxed)
    );
}

/// CPU seconds and resident bytes of this process (the process CPU clock and /proc/self/statm, through rustix's
/// safe API: this crate has no unsafe code).
fn proc_self_stat() -> Option<(f64, u64)> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let cpu = t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
    // statm's second field is the resident set, in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((cpu, rss_pages * rustix::param::page_size() as u64))
}

/// Longest text `/qr` renders: a room link is its origin, `/r/` and at most 64 characters of room name.
const MAX_QR_TEXT: usize = 300;

#[derive(serde::Deserialize)]
struct QrQuery {
    text: String,
}

/// `GET /qr?text=<room link>`: the invite dialog's QR code, as SVG. Only links to a room of this server are
/// rendered (`http(s)://<the Host this request came to>/r/<valid room>`, nothing after the room name), so the
/// server is no QR generator for arbitrary text or other sites' links.
async fn qr_code(
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<QrQuery>,
) -> Response {
    // HTTP/1.1 names the host in `Host`; HTTP/2 (browsers over TLS) in the `:authority` of the request URI.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let plain = |code: StatusCode, text: &'static str| {
        (
            code,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response()
    };
    if let Err(why) = room_link_of(&query.text, host) {
        return plain(StatusCode::BAD_REQUEST, why);
    }
    match qr_svg(&query.text) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "private, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
            ],
            svg,
        )
            .into_response(),
        None => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode this link as a QR code\n",
        ),
    }
}

/// Checks that `text` is a link to a room of the server reached as `host`; the error says what is wrong.
fn room_link_of(text: &str, host: Option<&str>) -> Result<(), &'static str> {
    if text.len() > MAX_QR_TEXT {
        return Err("/qr renders room links of this server only; this text is too long\n");
    }
    let host = host.ok_or("/qr needs a Host header\n")?;
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("/qr renders room links of this server only (http:// or https://)\n")?;
    let room = rest
        .strip_prefix(host)
        .and_then(|r| r.strip_prefix("/r/"))
        .ok_or("/qr renders room links of this server only (another host or path)\n")?;
    if !peercall_signal::protocol::valid_room(room) {
        return Err("/qr renders room links of this server only (not a valid room name)\n");
    }
    Ok(())
}

/// The QR code of `text` as an SVG document (medium error correction, quiet zone included).
fn qr_svg(text: &str) -> Option<String> {
    use qrcode::render::svg;
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

#[cfg(test)]
mod qr_tests {
    use super::*;

    #[test]
    fn only_room_links_of_this_host() {
        let host = Some("call.example.org:8443");
        assert!(room_link_of("https://call.example.org:8443/r/team-standup", host).is_ok());
        assert!(room_link_of("http://call.example.org:8443/r/a_B-9", host).is_ok());
        for bad in [
            "https://evil.example/r/team",
            "https://call.example.org:8443.evil.example/r/team",
            "https://call.example.org:8443/x/team",
            "https://call.example.org:8443/r/",
            "https://call.example.org:8443/r/team?x=1",
            "https://call.example.org:8443/r/team/more",
            "https://call.example.org:8443/r/bad%20name",
            "ftp://call.example.org:8443/r/team",
            "call.example.org:8443/r/team",
        ] {
            assert!(room_link_of(bad, host).is_err(), "{bad}");
        }
        assert!(room_link_of("https://call.example.org:8443/r/team", None).is_err());
        let long = format!(
            "https://call.example.org:8443/r/{}",
            "a".repeat(MAX_QR_TEXT)
        );
        assert!(room_link_of(&long, host).is_err());
    }

    #[test]
    fn renders_svg() {
        let svg = qr_svg("https://call.example.org/r/team").unwrap();
        assert!(svg.contains("<svg") && svg.contains("<path"));
        assert!(!svg.contains("<script"));
    }
}
