//! The `peercall` binary: web client, signaling and STUN/TURN in one process, or each part alone.

#![forbid(unsafe_code)]

mod acme;
mod banner;
mod check;
mod config;
mod http;
mod join;
mod parts;
mod shared_port;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};

use crate::config::{
    AcmeFlags, ExternalTurnFlags, HttpFlags, JoinFlags, Layer, LogFlags, LogFormat, Options,
    Resolved, SignalFlags, TurnFlags,
};
use crate::parts::Mode;

const ABOUT: &str = "Peer-to-peer video calls over WebRTC: web client, signaling and STUN/TURN server in one binary.";

const LONG_ABOUT: &str = "\
Peer-to-peer video calls over WebRTC: web client, signaling and STUN/TURN
server in one binary.

With no subcommand peercall runs `serve`: open the printed URL
(http://localhost:8080 by default), create a room, send the link, talk.
Media flows straight between the browsers; peercall's TURN server relays it
only when a direct path is blocked.";

const AFTER_HELP: &str = "\
Examples:
  peercall
      everything: web client on http://localhost:8080, STUN/TURN on 3478
  peercall serve --tls-self-signed
      HTTPS, so phones and laptops on your LAN may use their camera
  peercall serve --config peercall.toml
      settings from a file (every key: peercall.example.toml)
  peercall turn --listen 127.0.0.1:3478 --realm example --user u:p
      a TURN server alone
  peercall signal --turn-secret S --public-host turn.example.com
      web client + signaling; browsers use the TURN server at that host
  peercall serve --print-config
      show the effective settings and where each one comes from

Configuration: flags > PEERCALL_* environment variables > TOML file
(--config or PEERCALL_CONFIG) > defaults. Each setting has all three forms:
--relay-ip, PEERCALL_RELAY_IP, relay-ip = [...]. See docs/configuration.md.

Exit status: 0 after a clean shutdown, 1 when peercall cannot start,
2 for a command-line usage error.";

const TURN_AFTER_HELP: &str = "\
Examples:
  peercall turn --listen 127.0.0.1:3478 --realm example --user u:p --allow-loopback-peers
      a complete local TURN server (for tests)
  peercall turn --auth-secret \"$SECRET\" --relay-ip 10.0.0.5 --external-ip 203.0.113.7/10.0.0.5
      behind a cloud 1:1 NAT, with time-limited credentials
  peercall turn --auth-secret \"$SECRET\" --turn-cert cert.pem --turn-key key.pem
      adds TURNS (TLS) on port 5349

coturn users: --listen is listening-ip + listening-port, --auth-secret is
static-auth-secret with use-auth-secret, --user is user=NAME:PASSWORD,
--external-ip, --relay-ip, --realm, --min-port, --max-port are the same.
/healthz and /metrics are served on --http.";

const SIGNAL_AFTER_HELP: &str = "\
Examples:
  peercall signal --turn-secret \"$SECRET\" --public-host call.example.com
      browsers get turn:call.example.com:3478 with credentials made from
      $SECRET, which must be an --auth-secret of that TURN server (peercall
      turn, or coturn with use-auth-secret)";

/// Peer-to-peer video calls over WebRTC.
#[derive(Parser, Debug)]
#[command(
    name = "peercall",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `peercall` alone is `peercall serve`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
// Parsed once at start and consumed at once: the size of the flag structs does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run everything in one process: web client, signaling and STUN/TURN (the default)
    #[command(after_help = AFTER_HELP)]
    Serve(ServeArgs),
    /// Run the STUN/TURN server alone (health and metrics on --http)
    #[command(after_help = TURN_AFTER_HELP)]
    Turn(TurnArgs),
    /// Run the web client and signaling alone; browsers use an external TURN server (--turn-secret)
    #[command(after_help = SIGNAL_AFTER_HELP)]
    Signal(SignalArgs),
    /// Check, with the settings `serve` would use, that this machine can run it: the name resolves, ports can
    /// be bound, the relay range is free, the certificate is valid for the host; exit status 0 only when all is well
    Check(ServeArgs),
    /// Join a room as a native WebRTC peer: send a clip, record, probe a call (no browser needed)
    #[command(after_help = JOIN_AFTER_HELP)]
    Join(JoinArgs),
}

const JOIN_AFTER_HELP: &str = "\
Examples:
  peercall join https://call.example.com/r/brave-otter-4821
      join with the embedded test clip (a moving pattern and a tone)
  peercall join http://localhost:8080/r/room --record calls/
      record every participant as IVF (VP8) and Ogg (Opus)
  peercall join URL --duration 10 --expect-peers 1 --json
      a synthetic call probe for monitoring: exit status 0 only when one
      peer connected with media both ways

Exit status: 0 when every expected peer (--expect-peers, else everyone who
was there) connected with media both ways; 1 otherwise or on an error (one
line on stderr: a bad link, not a peercall server, a wrong password, a full
room, a file that is not VP8/Opus); 2 for a command-line usage error.";

#[derive(Args, Debug)]
struct JoinArgs {
    /// The room link, as the browser shows it: https://HOST/r/ROOM (http://, ws:// and wss:// work too; a
    /// ?token=... is used as the join token, &relay=1 is --relay)
    #[arg(value_name = "ROOM_URL")]
    url: String,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    join: JoinFlags,
    #[command(flatten)]
    log: LogFlags,
}

/// Flags every running subcommand has.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Configuration")]
struct Common {
    /// TOML configuration file; flags and PEERCALL_* variables override it [env: PEERCALL_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML, with where each value came from, and exit
    #[arg(long)]
    print_config: bool,
}

#[derive(Args, Debug, Default)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    http: HttpFlags,
    #[command(flatten)]
    acme: AcmeFlags,
    #[command(flatten)]
    signal: SignalFlags,
    #[command(flatten)]
    turn: TurnFlags,
    #[command(flatten)]
    log: LogFlags,
}

#[derive(Args, Debug, Default)]
struct TurnArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    turn: TurnFlags,
    #[command(flatten)]
    http: HttpFlags,
    #[command(flatten)]
    log: LogFlags,
}

#[derive(Args, Debug, Default)]
struct SignalArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    http: HttpFlags,
    #[command(flatten)]
    acme: AcmeFlags,
    #[command(flatten)]
    signal: SignalFlags,
    #[command(flatten)]
    external: ExternalTurnFlags,
    #[command(flatten)]
    log: LogFlags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mode, common, flags) = match cli.command {
        None => split_serve(cli.serve),
        Some(Command::Serve(args)) => split_serve(args),
        Some(Command::Check(args)) => {
            let (_, common, o) = split_serve(args);
            return match run_check(common, o) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("peercall: error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Turn(args)) => {
            let mut o = Options::default();
            args.turn.apply(&mut o);
            args.http.apply(&mut o);
            args.log.apply(&mut o);
            (Mode::Turn, args.common, o)
        }
        Some(Command::Signal(args)) => {
            let mut o = Options::default();
            args.http.apply(&mut o);
            args.acme.apply(&mut o);
            args.signal.apply(&mut o);
            args.external.apply(&mut o);
            args.log.apply(&mut o);
            (Mode::Signal, args.common, o)
        }
        Some(Command::Join(args)) => {
            let mut o = Options::default();
            args.join.apply(&mut o);
            args.log.apply(&mut o);
            return match run_join(&args.url, args.common, o) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("peercall: error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match run(mode, common, flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line with its causes; never a panic or a backtrace.
            eprintln!("peercall: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn split_serve(args: ServeArgs) -> (Mode, Common, Options) {
    let mut o = Options::default();
    args.http.apply(&mut o);
    args.acme.apply(&mut o);
    args.signal.apply(&mut o);
    args.turn.apply(&mut o);
    args.log.apply(&mut o);
    (Mode::Serve, args.common, o)
}

fn peercall_env() -> anyhow::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("PEERCALL_") {
            let value = value
                .into_string()
                .map_err(|_| anyhow!("environment variable {name}: not valid UTF-8"))?;
            env.push((name.to_owned(), value));
        }
    }
    Ok(env)
}

/// `peercall check`: the findings on stdout; true when none failed.
fn run_check(common: Common, flags: Options) -> anyhow::Result<bool> {
    let env = peercall_env()?;
    let config = config::load(flags, common.config, &env, &|path| {
        std::fs::read_to_string(path)
    })?;
    let findings = check::run(&config, true);
    print!("{}", check::render(&findings));
    Ok(findings.iter().all(|f| f.status != check::Status::Fail))
}

/// `peercall join`: settings as for the servers, then the native peer on a small runtime.
fn run_join(url: &str, common: Common, flags: Options) -> anyhow::Result<()> {
    let env = peercall_env()?;
    let mut config = config::load(flags, common.config, &env, &|path| {
        std::fs::read_to_string(path)
    })?;
    if common.print_config {
        print!(
            "# effective configuration of `peercall join`\n{}",
            config.to_annotated_toml()
        );
        return Ok(());
    }
    // The peer's own lines go to stdout; logs only say what went wrong unless asked for more.
    if config.provenance.layer("log_level") == Layer::Default {
        config.log_level = "warn".into();
    }
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("peercall-join")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(join::run(url, &config));
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

fn run(mode: Mode, common: Common, flags: Options) -> anyhow::Result<()> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("PEERCALL_") {
            let value = value
                .into_string()
                .map_err(|_| anyhow!("environment variable {name}: not valid UTF-8"))?;
            env.push((name.to_owned(), value));
        }
    }
    let config = config::load(flags, common.config, &env, &|path| {
        std::fs::read_to_string(path)
    })?;
    if common.print_config {
        print!(
            "# effective configuration of `peercall {}`\n{}",
            mode.name(),
            config.to_annotated_toml()
        );
        return Ok(());
    }
    init_logging(&config)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("peercall")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(mode, config));
    // Tasks still running (a client that did not go away) must not hold the process.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

fn init_logging(config: &Resolved) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    // --log-level as a flag wins; otherwise RUST_LOG; otherwise PEERCALL_LOG_LEVEL, the file, or "info".
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match rust_log {
        Some(v) if config.provenance.layer("log_level") != Layer::Flag => EnvFilter::try_new(&v)
            .map_err(|e| anyhow!("RUST_LOG={v:?} is not a valid log filter: {e}"))?,
        _ => EnvFilter::try_new(&config.log_level).map_err(|e| {
            anyhow!(
                "log-level {:?} is not a valid log filter: {e}",
                config.log_level
            )
        })?,
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow!("cannot start logging: {e}"))
}

/// How long requests in flight get once shutdown starts, and the hard deadline for the whole shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(2);
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How long the banner waits for the first ACME outcome (an unreachable CA fails well within it).
const ACME_BANNER_WAIT: Duration = Duration::from_secs(3);

/// Raises the soft limit on open files to the hard one: every relay socket, TURN TCP/TLS connection and
/// WebSocket is a descriptor, and the usual soft limit of 1,024 is far below the default quotas. Returns what
/// the limit is now, for the banner.
fn raise_open_file_limit() -> banner::FileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return banner::FileLimit {
            now: limit.current,
            raised_from: None,
        };
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(
                from = ?limit.current,
                to = ?limit.maximum,
                "raised the open file limit"
            );
            banner::FileLimit {
                now: limit.maximum,
                raised_from: limit.current,
            }
        }
        Err(e) => {
            tracing::warn!(
                "cannot raise the open file limit from {:?} ({e}): connections past it will be refused",
                limit.current
            );
            banner::FileLimit {
                now: limit.current,
                raised_from: None,
            }
        }
    }
}

async fn serve(mode: Mode, config: Resolved) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // HTTPS and TURNS both use rustls with ring; make it the process default too (a second install is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut usr2 =
        signal(SignalKind::user_defined2()).context("cannot install the SIGUSR2 handler")?;

    let files = raise_open_file_limit();
    // `--domain`: the state directory is read (a cached certificate is served at once); the CA is contacted
    // only once the listeners are up, since it connects back to them.
    let acme = if config.domain.is_empty() || !mode.runs_signal() {
        None
    } else {
        Some(std::sync::Arc::new(acme::Acme::prepare(&config)?))
    };
    let turns_tls = match &acme {
        Some(acme) if mode.runs_turn() && config.turn_cert.is_none() => Some(acme.turns_config()?),
        _ => None,
    };
    // The HTTP port first: "port in use" and certificate errors before anything else starts.
    let bound = http::bind(mode, &config, acme.clone())?;
    let parts = parts::start(mode, &config, bound.https_port(), turns_tls).await?;
    let http = http::serve(mode, bound, &parts, &config);
    if let Some(acme) = &acme {
        acme.start(http.redirect_addr.is_some());
        // When an order is due now, give it a moment, so the banner says how it went.
        acme.settle(ACME_BANNER_WAIT).await;
    }
    println!("{}", banner::render(mode, &config, &parts, &http, &files));
    tracing::info!(mode = mode.name(), http = %http.addr, "peercall {} ready", env!("CARGO_PKG_VERSION"));

    let reason = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading TLS certificates");
                http.reload_tls();
                parts.reload_tls();
            }
            _ = usr2.recv() => match &parts.turn {
                Some(turn) => {
                    turn.drain();
                    tracing::warn!("SIGUSR2: TURN draining: new allocations are refused (508, clients try another server), existing ones keep relaying until they expire");
                }
                None => tracing::warn!("SIGUSR2: no TURN server in this process to drain"),
            },
        }
    };
    tracing::info!(
        "{reason}: shutting down (no new connections; signaling clients are told; TURN stops)"
    );
    http.stop_accepting(HTTP_GRACE);
    parts.shutdown();
    let finished = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        tokio::join!(http.join(), parts.join());
    });
    tokio::select! {
        result = finished => {
            if result.is_err() {
                tracing::warn!("shutdown took longer than {} s; exiting anyway", SHUTDOWN_DEADLINE.as_secs());
            }
        }
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting now"),
        _ = int.recv() => tracing::warn!("second SIGINT: exiting now"),
    }
    tracing::info!("stopped");
    Ok(())
}
