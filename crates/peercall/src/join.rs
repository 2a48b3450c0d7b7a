//! `peercall join ROOM_URL`: the thin tokio driver around `peercall_peer::Engine`. It owns the sockets (one UDP
//! socket per local IPv4 address), the signaling WebSocket (reconnecting with resume), the clock, the
//! recorder and the output; every decision is the engine's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use peercall_peer::record::Recorder;
use peercall_peer::{Clip, Engine, EngineConfig, Event, Output, PeerStatus};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::Resolved;

/// With --expect-peers and no --duration: how long the probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconnect back-off of the signaling connection: first, then doubling up to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Application pings on the signaling connection (they also answer the server's WebSocket pings).
const APP_PING: Duration = Duration::from_secs(10);

/// A room link as a person pastes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLink {
    /// The signaling WebSocket, ws:// or wss://.
    pub ws_url: String,
    pub room: String,
    pub token: Option<String>,
    pub relay: bool,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `https://host/r/room`, `http://localhost:8080/r/room?token=...` (also ws:// and wss://).
pub fn parse_room_link(link: &str) -> Result<RoomLink, String> {
    let link = link.trim();
    let why = |what: &str| {
        format!("{link:?} is not a room link ({what}); expected one like https://HOST/r/ROOM")
    };
    let (scheme, rest) = link.split_once("://").ok_or_else(|| why("no scheme"))?;
    let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(why("the scheme is not http, https, ws or wss")),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(' ') {
        return Err(why("no host"));
    }
    let path = path.trim_end_matches('/');
    let (prefix, room) = path
        .rsplit_once("/r/")
        .ok_or_else(|| why("no /r/ROOM in the path"))?;
    let room = percent_decode(room);
    if room.is_empty()
        || room.len() > 64
        || !room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(why("the room name is not 1-64 letters, digits, - or _"));
    }
    let mut token = None;
    let mut relay = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "token" if !v.is_empty() => token = Some(percent_decode(v)),
            "relay" => relay = v == "1" || v == "true",
            _ => {}
        }
    }
    Ok(RoomLink {
        ws_url: format!("{ws_scheme}://{authority}{prefix}/ws"),
        room,
        token,
        relay,
    })
}

/// What the signaling task tells the main loop.
enum Sig {
    Connected,
    Text(String),
    Lost(String),
    /// The very first connection failed: not a peercall server, or not reachable.
    Failed(String),
}

/// The TLS client of `wss://` signaling and `turns:` relays: the public web roots, plus the certificates of
/// `--ca-file` (a private CA, or a server's self-signed certificate).
fn tls_client_config(
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| anyhow!("--ca-file {}: {e}", path.display()))?;
        if certs.is_empty() {
            bail!("--ca-file {}: no PEM certificate in it", path.display());
        }
        let (added, ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!(
                "--ca-file {}: none of its {ignored} certificates can be used as a trust anchor",
                path.display()
            );
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn describe_ws_error(url: &str, e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!(
            "{url} is not a peercall signaling endpoint (HTTP {} instead of a WebSocket): is this a peercall server?",
            resp.status()
        ),
        tungstenite::Error::Io(io) => format!("cannot reach {url}: {io}"),
        tungstenite::Error::Tls(t) => format!("TLS with {url} failed: {t}"),
        tungstenite::Error::Url(u) => format!("bad signaling address {url}: {u}"),
        other => format!("signaling at {url} failed: {other}"),
    }
}

/// Owns the signaling connection: connects, forwards frames both ways, reconnects after a drop.
async fn signaling_task(
    url: String,
    events: mpsc::Sender<Sig>,
    mut outgoing: mpsc::Receiver<String>,
    tls: Arc<rustls::ClientConfig>,
) {
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let mut ever = false;
    let mut backoff = RECONNECT_FIRST;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                None,
                false,
                Some(connector.clone()),
            ),
        )
        .await;
        let ws = match attempt {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                if !ever {
                    let _ = events.send(Sig::Failed(describe_ws_error(&url, &e))).await;
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
            Err(_) => {
                if !ever {
                    let _ = events
                        .send(Sig::Failed(format!("{url} did not answer within 10 s")))
                        .await;
                    return;
                }
                continue;
            }
        };
        ever = true;
        backoff = RECONNECT_FIRST;
        // Whatever was queued while we were away is stale (the engine sends afresh after `welcome`).
        while outgoing.try_recv().is_ok() {}
        if events.send(Sig::Connected).await.is_err() {
            return;
        }
        let (mut sink, mut stream) = ws.split();
        let mut ping = tokio::time::interval(APP_PING);
        ping.tick().await;
        let reason = loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        if events.send(Sig::Text(t)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        break c.map(|c| format!("closed ({} {})", u16::from(c.code), c.reason))
                            .unwrap_or_else(|| "closed".into());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "closed".into(),
                },
                out = outgoing.recv() => match out {
                    Some(text) => {
                        if let Err(e) = sink.send(Message::Text(text)).await {
                            break e.to_string();
                        }
                    }
                    None => {
                        let _ = sink.close().await;
                        return;
                    }
                },
                _ = ping.tick() => {
                    if let Err(e) = sink.send(Message::Text(r#"{"type":"ping"}"#.to_string())).await {
                        break e.to_string();
                    }
                }
            }
        };
        if events.send(Sig::Lost(reason)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

/// UTC time for file names: 20260101T120000Z.
fn file_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn load_clip(config: &Resolved) -> anyhow::Result<Clip> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut clip = Clip::default();
    if !config.no_video {
        // Several files: one video at several bitrates; the engine picks per peer from its bandwidth estimate.
        let mut videos = Vec::with_capacity(config.video.len());
        for p in &config.video {
            videos.push(
                peercall_peer::media::read_ivf(&read(p)?)
                    .map_err(|e| anyhow!("--video {}: {e}", p.display()))?,
            );
        }
        let mut videos = videos.into_iter();
        clip.video = match videos.next() {
            Some(v) => v,
            None => Clip::test_clip()?.video,
        };
        clip.video_alternatives = videos.collect();
    }
    if !config.no_audio {
        clip.audio = match &config.audio {
            Some(p) => peercall_peer::media::read_ogg_opus(&read(p)?)
                .map_err(|e| anyhow!("--audio {}: {e}", p.display()))?,
            None => Clip::test_clip()?.audio,
        };
    }
    Ok(clip)
}

/// Sends what the engine wants sent: a datagram from one of our sockets, or bytes on the TCP connection to a
/// TURN server (opened on first use; what it reads goes back to the engine through `tcp_tx`).
fn send_out(
    sockets: &HashMap<SocketAddr, Arc<UdpSocket>>,
    tcp_conns: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    tcp_tx: &mpsc::Sender<(SocketAddr, Option<Vec<u8>>)>,
    tls: &Arc<rustls::ClientConfig>,
    t: peercall_peer::Transmit,
) {
    if !t.tcp {
        if let Some(s) = sockets.get(&t.source) {
            let _ = s.try_send_to(&t.contents, t.destination);
        }
        return;
    }
    let server = t.destination;
    let tls_name = t.tls;
    let conn = tcp_conns.entry(server).or_insert_with(|| {
        // Only when the connection is opened: a frame on an open one costs no clone.
        let tls = tls.clone();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let back = tcp_tx.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(Some(stream)) = tokio::time::timeout(
                Duration::from_secs(5),
                connect_stream(server, tls_name, tls),
            )
            .await
            else {
                let _ = back.send((server, None)).await;
                return;
            };
            let (mut read, mut write) = tokio::io::split(stream);
            let reader_back = back.clone();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = reader_back.send((server, None)).await;
                            return;
                        }
                        Ok(n) => {
                            if reader_back
                                .send((server, Some(buf[..n].to_vec())))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            reader.abort();
        });
        tx
    });
    let _ = conn.try_send(t.contents);
}

/// Something to read and write TURN frames on: a TCP or a TLS stream.
trait TurnStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> TurnStream for S {}

/// Connects to a TURN server over TCP, and TLS on top when `tls_name` is set (`turns:`; the certificate must be
/// valid for that name). None on any failure: the engine hears of it as a closed stream.
async fn connect_stream(
    server: SocketAddr,
    tls_name: Option<Arc<str>>,
    tls: Arc<rustls::ClientConfig>,
) -> Option<Box<dyn TurnStream>> {
    let tcp = tokio::net::TcpStream::connect(server).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let Some(name) = tls_name else {
        return Some(Box::new(tcp));
    };
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(name.to_string()) else {
        tracing::warn!("turns: {name} is not a name a certificate can be checked against");
        return None;
    };
    match tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
    {
        Ok(stream) => Some(Box::new(stream)),
        Err(e) => {
            tracing::warn!("turns:{name} at {server}: TLS failed: {e}");
            None
        }
    }
}

/// Whether a local address gets a socket and a host candidate.
fn host_candidate_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            !v6.is_loopback()
                && !v6.is_unspecified()
                && !v6.is_unicast_link_local()
                && !v6.is_multicast()
        }
    }
}

/// Whether the call with this peer had media both ways: it connected, something of theirs arrived, and (when
/// we send) their receiver reports show ours arrived.
pub fn media_both_ways(s: &PeerStatus, sending: bool) -> bool {
    s.ever_connected
        && (s.video_frames_rx > 0 || s.audio_packets_rx > 0)
        && (!sending || s.video_acked || s.audio_acked)
}

struct Printer {
    json: bool,
}

impl Printer {
    fn line(&self, text: String, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }
}

fn fatal_line(code: &str, message: &str, room: &str, had_password: bool) -> String {
    match code {
        "wrong-password" if had_password => format!("wrong password for room {room}"),
        "wrong-password" => format!("room {room} has a password: give it with --password"),
        "room-full" => format!("room {room} is full"),
        "bad-token" => {
            "the link's token is missing, expired or for another room: ask for a new link".into()
        }
        "too-many-joins" => format!("too many join attempts from this address: {message}"),
        _ if message.is_empty() => format!("the server refused the join: {code}"),
        _ => format!("the server refused the join: {code} ({message})"),
    }
}

/// Runs `peercall join`. Ok when the call went as expected (see `--expect-peers`).
pub async fn run(link: &str, config: &Resolved) -> anyhow::Result<()> {
    let mut room = parse_room_link(link).map_err(|e| anyhow!(e))?;
    room.relay |= config.relay;
    let clip = load_clip(config)?;
    let sending = !clip.video.is_empty() || !clip.audio.is_empty();
    let out = Printer { json: config.json };
    let mut recorder = match &config.record {
        Some(dir) => Some(
            Recorder::new(dir, &file_stamp())
                .map_err(|e| anyhow!("--record {}: {e}", dir.display()))?,
        ),
        None => None,
    };

    let start = Instant::now();
    let mut engine = Engine::new(
        EngineConfig {
            room: room.room.clone(),
            name: config.name.clone(),
            password: config.password.as_ref().map(|p| p.0.clone()),
            token: room.token.clone(),
            clip,
            relay_only: room.relay,
            turn_tcp: config.turn_tcp,
            record: recorder.is_some(),
        },
        start,
    );

    engine.seed(rand::random());
    // One socket per local address: IPv4 (loopback included: peers on this machine use it) and IPv6 that can
    // reach beyond the link (link-local needs a scope id a candidate cannot carry; ::1 adds nothing to 127.0.0.1).
    let (udp_tx, mut udp_rx) = mpsc::channel::<(SocketAddr, SocketAddr, Vec<u8>)>(1024);
    let mut sockets: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut ips: Vec<IpAddr> = peercall_turn::interface_addresses()
        .into_iter()
        .filter(host_candidate_address)
        .collect();
    ips.sort();
    ips.dedup();
    for ip in ips {
        let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, 0)).await else {
            continue;
        };
        let Ok(local) = socket.local_addr() else {
            continue;
        };
        let socket = Arc::new(socket);
        sockets.insert(local, socket.clone());
        engine.add_socket(start, local);
        let tx = udp_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if tx.send((local, from, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }
    if sockets.is_empty() {
        bail!("no network address to send media from");
    }

    let (sig_tx, mut sig_rx) = mpsc::channel::<Sig>(256);
    let (out_tx, out_rx) = mpsc::channel::<String>(256);
    let tls = tls_client_config(config.ca_file.as_deref())?;
    tokio::spawn(signaling_task(
        room.ws_url.clone(),
        sig_tx,
        out_rx,
        tls.clone(),
    ));
    let (res_tx, mut res_rx) = mpsc::channel::<(String, Vec<IpAddr>)>(16);
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<(SocketAddr, Option<Vec<u8>>)>(1024);
    let mut tcp_conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();

    let deadline = config
        .duration
        .map(|d| start + Duration::from_secs(d))
        .or_else(|| config.expect_peers.map(|_| start + PROBE_TIMEOUT));
    let stats_every = Duration::from_secs(config.stats_interval);
    let mut next_stats = start + stats_every;
    let mut last_bytes: HashMap<String, (u64, u64, Instant)> = HashMap::new();
    let mut seen: BTreeMap<String, PeerStatus> = BTreeMap::new();
    let mut said: Vec<String> = Vec::new();
    let mut welcomed = false;
    let mut failure: Option<String> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // SIGUSR1: restart ICE with every peer now (to test or to recover by hand after a network change).
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot install the SIGUSR1 handler")?;

    'main: loop {
        while let Some(o) = engine.poll_output() {
            match o {
                Output::Signal(text) => {
                    let _ = out_tx.try_send(text);
                }
                Output::Transmit(t) => send_out(&sockets, &mut tcp_conns, &tcp_tx, &tls, t),
                Output::Resolve(host) => {
                    let tx = res_tx.clone();
                    tokio::spawn(async move {
                        let ips = tokio::net::lookup_host((host.as_str(), 0))
                            .await
                            .map(|a| a.map(|a| a.ip()).collect())
                            .unwrap_or_default();
                        let _ = tx.send((host, ips)).await;
                    });
                }
                Output::Event(e) => match e {
                    Event::Joined { id, peers, resumed } => {
                        welcomed = true;
                        out.line(
                            format!(
                                "joined room {} as {} ({id}){}; {peers} already here",
                                room.room,
                                config.name,
                                if resumed { ", resumed" } else { "" }
                            ),
                            json!({"event": "joined", "room": room.room, "id": id, "peers": peers, "resumed": resumed}),
                        );
                    }
                    Event::PeerJoined { id, name } => out.line(
                        format!("{name} ({id}) joined"),
                        json!({"event": "peer-joined", "id": id, "name": name}),
                    ),
                    Event::PeerLeft { id, name } => out.line(
                        format!("{name} ({id}) left"),
                        json!({"event": "peer-left", "id": id, "name": name}),
                    ),
                    Event::Connected { id, name } => {
                        out.line(
                            format!("connected to {name} ({id})"),
                            json!({"event": "connected", "id": id, "name": name}),
                        );
                        if let Some(text) = &config.say
                            && !said.contains(&id)
                        {
                            said.push(id.clone());
                            engine.say_to(&id, text);
                        }
                    }
                    Event::Disconnected { id, name } => out.line(
                        format!("lost the connection to {name} ({id}); reconnecting"),
                        json!({"event": "disconnected", "id": id, "name": name}),
                    ),
                    Event::Rekeyed { old, id, name } => {
                        // The same person on the same connection: carry what we know of them over.
                        seen.remove(&old);
                        if let Some(b) = last_bytes.remove(&old) {
                            last_bytes.insert(id.clone(), b);
                        }
                        for s in said.iter_mut().filter(|s| **s == old) {
                            *s = id.clone();
                        }
                        out.line(
                            format!("{name} ({old}) is now {id} (the server gave them a new session; same connection)"),
                            json!({"event": "rekeyed", "old": old, "id": id, "name": name}),
                        );
                    }
                    Event::IceRestart { id, reason } => out.line(
                        format!("ICE restart with {id} ({reason})"),
                        json!({"event": "ice-restart", "id": id, "reason": reason}),
                    ),
                    Event::Chat { from, name, text } => out.line(
                        format!("chat {name}: {text}"),
                        json!({"event": "chat", "from": from, "name": name, "text": text}),
                    ),
                    Event::Media {
                        peer,
                        name,
                        kind,
                        rtp,
                        data,
                        contiguous,
                    } => {
                        if let Some(r) = recorder.as_mut()
                            && let Err(e) = r.write(&peer, &name, kind, rtp, &data, contiguous)
                        {
                            failure = Some(format!("recording failed: {e}"));
                            break 'main;
                        }
                    }
                    Event::Fatal { code, message } => {
                        failure = Some(fatal_line(
                            &code,
                            &message,
                            &room.room,
                            config.password.is_some(),
                        ));
                        break 'main;
                    }
                    Event::ServerError { code, message } => {
                        tracing::warn!("signaling error {code}: {message}");
                    }
                    _ => {}
                },
            }
        }

        let now = Instant::now();
        for p in engine.peers() {
            seen.insert(p.id.clone(), p);
        }
        if let Some(n) = config.expect_peers
            && config.duration.is_none()
            && seen
                .values()
                .filter(|s| media_both_ways(s, sending))
                .count()
                >= n
        {
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_stats {
            next_stats = now + stats_every;
            for p in engine.peers() {
                let (rx0, tx0, t0) = last_bytes.get(&p.id).copied().unwrap_or((0, 0, start));
                let secs = now.duration_since(t0).as_secs_f64().max(0.001);
                let in_kbps = (p.bytes_rx.saturating_sub(rx0) as f64 * 8.0 / 1000.0 / secs).round();
                let out_kbps =
                    (p.bytes_tx.saturating_sub(tx0) as f64 * 8.0 / 1000.0 / secs).round();
                last_bytes.insert(p.id.clone(), (p.bytes_rx, p.bytes_tx, now));
                let route = match (p.route, p.relay_transport) {
                    (Some(r), Some(t)) => {
                        format!("{} (to the server over {})", r.as_str(), t.to_uppercase())
                    }
                    (Some(r), None) => r.as_str().to_string(),
                    (None, _) => "-".to_string(),
                };
                let rtt = p.rtt.map(|r| r.as_secs_f64() * 1000.0);
                let kbps = |b: Option<u64>| b.map(|b| (b as f64 / 1000.0).round());
                // With several --video encodings: which one this peer gets, and the estimate that chose it.
                let ladder = match (p.video_encoding, p.video_bps) {
                    ((i, n), Some(bps)) if n > 1 => format!(
                        ", encoding {} of {n} ({:.0} kbit/s), estimate {}",
                        i + 1,
                        bps as f64 / 1000.0,
                        kbps(p.estimate_bps)
                            .map(|e| format!("{e} kbit/s"))
                            .unwrap_or_else(|| "-".into())
                    ),
                    _ => String::new(),
                };
                out.line(
                    format!(
                        "peer {} ({}): {} via {route}, rtt {}, in {in_kbps} kbit/s ({} video frames, {} audio packets), out {out_kbps} kbit/s ({} video frames{ladder})",
                        p.name,
                        p.id,
                        if p.connected { "connected" } else { "not connected" },
                        rtt.map(|r| format!("{r:.0} ms")).unwrap_or_else(|| "-".into()),
                        p.video_frames_rx,
                        p.audio_packets_rx,
                        p.video_frames_tx,
                    ),
                    json!({"event": "stats", "id": p.id, "name": p.name, "connected": p.connected,
                        "route": p.route.map(|r| r.as_str()), "relay_transport": p.relay_transport, "rtt_ms": rtt, "in_kbps": in_kbps,
                        "out_kbps": out_kbps, "video_frames_rx": p.video_frames_rx,
                        "audio_packets_rx": p.audio_packets_rx, "video_frames_tx": p.video_frames_tx,
                        "audio_packets_tx": p.audio_packets_tx, "restarts": p.restarts,
                        "collisions": p.collisions, "estimate_kbps": kbps(p.estimate_bps),
                        "video_kbps": kbps(p.video_bps), "video_encoding": p.video_encoding.0,
                        "video_encodings": p.video_encoding.1, "video_switches": p.video_switches}),
                );
            }
            if let Some(r) = recorder.as_mut() {
                let _ = r.flush();
            }
        }
        let mut wake = engine
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(next_stats)
            .max(now);
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        tokio::select! {
            sig = sig_rx.recv() => {
                let now = Instant::now();
                match sig {
                    Some(Sig::Connected) => engine.signaling_connected(now),
                    Some(Sig::Text(text)) => {
                        if let Err(e) = engine.handle_signal(now, &text) {
                            tracing::debug!("{e}");
                        }
                    }
                    Some(Sig::Lost(reason)) => {
                        engine.signaling_lost(now);
                        if !welcomed {
                            failure = Some(format!("the signaling server closed the connection before we joined: {reason}"));
                            break 'main;
                        }
                        out.line(format!("signaling lost ({reason}); reconnecting"),
                            json!({"event": "signaling-lost", "reason": reason}));
                    }
                    Some(Sig::Failed(why)) => {
                        failure = Some(why);
                        break 'main;
                    }
                    None => {
                        failure = Some("the signaling task ended".into());
                        break 'main;
                    }
                }
            }
            Some((local, from, data)) = udp_rx.recv() => {
                engine.handle_datagram(Instant::now(), from, local, &data);
            }
            Some((host, ips)) = res_rx.recv() => engine.resolved(Instant::now(), &host, &ips),
            Some((server, data)) = tcp_rx.recv() => match data {
                Some(bytes) => engine.handle_stream(Instant::now(), server, &bytes),
                None => {
                    tcp_conns.remove(&server);
                    engine.stream_closed(Instant::now(), server);
                }
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                engine.handle_timeout(Instant::now());
            }
            _ = usr1.recv() => {
                let now = Instant::now();
                for p in engine.peers() {
                    engine.restart_ice(now, &p.id, "SIGUSR1");
                }
            }
            _ = &mut ctrl_c => {
                out.line("Ctrl-C: leaving".into(), json!({"event": "interrupted"}));
                break 'main;
            }
        }
    }

    // Leave cleanly: bye over the data channels, `leave` over signaling, then the files.
    engine.leave(Instant::now());
    while let Some(o) = engine.poll_output() {
        match o {
            Output::Signal(text) => {
                let _ = out_tx.try_send(text);
            }
            Output::Transmit(t) => send_out(&sockets, &mut tcp_conns, &tcp_tx, &tls, t),
            _ => {}
        }
    }
    // Give the signaling task a moment to send `leave`.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(out_tx);
    if let Some(r) = recorder.take() {
        let files = r.finish().map_err(|e| anyhow!("recording: {e}"))?;
        for f in files {
            out.line(
                format!(
                    "recorded {} ({} {}{})",
                    f.path.display(),
                    f.frames,
                    if f.kind == peercall_peer::Kind::Video { "video frames" } else { "audio packets" },
                    if f.seconds > 0.0 { format!(", {:.1} s", f.seconds) } else { String::new() }
                ),
                json!({"event": "recorded", "path": f.path, "frames": f.frames, "seconds": f.seconds,
                    "kind": if f.kind == peercall_peer::Kind::Video { "video" } else { "audio" }}),
            );
        }
    }
    if let Some(why) = failure {
        return Err(anyhow!(why));
    }
    let good = seen
        .values()
        .filter(|s| media_both_ways(s, sending))
        .count();
    let ok = match config.expect_peers {
        Some(n) => good >= n,
        None => good == seen.len(),
    };
    out.line(
        format!("{good} of {} peers had media both ways", seen.len()),
        json!({"event": "summary", "ok": ok, "peers": seen.len(), "media_both_ways": good,
            "expected": config.expect_peers}),
    );
    if !ok {
        match config.expect_peers {
            Some(n) => bail!("expected {n} peer(s) with media both ways, got {good}"),
            None => bail!("{} peer(s) never had media both ways", seen.len() - good),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_on_ipv4_and_routable_ipv6() {
        for (ip, yes) in [
            ("127.0.0.1", true),
            ("10.1.0.2", true),
            ("169.254.3.4", false),
            ("2001:db8::5", true),
            ("fd00::5", true),
            ("fe80::1", false),
            ("::1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(host_candidate_address(&ip), yes, "{ip}");
        }
    }

    #[test]
    fn room_links_as_people_paste_them() {
        let l = parse_room_link("https://call.example.com/r/brave-otter-4821").unwrap();
        assert_eq!(l.ws_url, "wss://call.example.com/ws");
        assert_eq!(l.room, "brave-otter-4821");
        let l = parse_room_link("http://localhost:8080/r/room?token=a.b%2Bc&x=1").unwrap();
        assert_eq!(l.ws_url, "ws://localhost:8080/ws");
        assert_eq!(l.token.as_deref(), Some("a.b+c"));
        let l = parse_room_link(" http://127.0.0.1:9/r/a_b/?relay=1#frag ").unwrap();
        assert!(l.relay);
        assert_eq!(l.room, "a_b");
        let l = parse_room_link("https://h/prefix/r/x").unwrap();
        assert_eq!(l.ws_url, "wss://h/prefix/ws");
        for bad in [
            "",
            "localhost:8080/r/x",
            "ftp://h/r/x",
            "https://h/",
            "https://h/r/",
            "https://h/r/bad room",
            "https:///r/x",
            "https://h/r/%zz%",
        ] {
            assert!(parse_room_link(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn file_stamps_are_utc() {
        let s = file_stamp();
        assert_eq!(s.len(), 16);
        assert!(s.ends_with('Z'));
    }
}
