//! The startup banner: what runs, every URL and port to use, and hints. Printed on stdout (logs go to stderr).

use std::net::{IpAddr, SocketAddr};

use crate::config::Resolved;
use crate::http::HttpServer;
use crate::parts::{Mode, Parts};

/// The open-file limit at start (after raising the soft limit to the hard one); `None` is unlimited.
pub struct FileLimit {
    pub now: Option<u64>,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

/// Descriptors kept for what every server holds: listening sockets (one per UDP shard), epoll sets, the
/// runtime, logs, certificate reads.
const RESERVED_FDS: u64 = 64;

/// What the open-file limit allows, in words: each relay allocation holds a UDP socket (a dual IPv4+IPv6 one
/// two), each TURN TCP/TLS connection and each browser's WebSocket one descriptor.
pub fn file_limit_line(files: &FileLimit) -> String {
    let raised = files
        .raised_from
        .map(|from| format!(" (soft limit raised from {from})"))
        .unwrap_or_default();
    match files.now {
        None => "open files   unlimited: relay allocations and connections are bounded by the quotas only"
            .to_owned(),
        Some(n) => {
            let room = n.saturating_sub(RESERVED_FDS);
            let hint = if n < 4096 {
                "; low for a public server: raise LimitNOFILE (systemd) or ulimit -Hn"
            } else {
                ""
            };
            format!(
                "open files   {n}{raised}: room for about {room} relay allocations, TURN TCP/TLS connections \
                 and WebSockets together{hint}"
            )
        }
    }
}

pub fn render(
    mode: Mode,
    config: &Resolved,
    parts: &Parts,
    http: &HttpServer,
    files: &FileLimit,
) -> String {
    let scheme = if http.tls { "https" } else { "http" };
    let ws = if http.tls { "wss" } else { "ws" };
    let base = format!("{scheme}://{}", url_host_port(http.addr));
    let mut lines = vec![format!(
        "peercall {} ({}): {}",
        env!("CARGO_PKG_VERSION"),
        mode.name(),
        match mode {
            Mode::Serve => "web client, signaling and STUN/TURN",
            Mode::Turn => "STUN/TURN server",
            Mode::Signal => "web client and signaling",
        }
    )];
    let mut notes = Vec::new();

    if let Some(signal) = &parts.signal {
        // With --domain, the name the certificate is for: the one address browsers accept it on.
        let web = match (&http.acme, http.addr.port()) {
            (Some(acme), 443) => format!("https://{}", acme.domains[0]),
            (Some(acme), port) => format!("https://{}:{port}", acme.domains[0]),
            (None, _) => base.clone(),
        };
        lines.push(format!("  web client   {web}/   <- open this in a browser"));
        if http.addr.ip().is_unspecified() {
            for ip in lan_addresses(http.addr.ip()) {
                lines.push(format!(
                    "               {scheme}://{}/",
                    url_host_port(SocketAddr::new(ip, http.addr.port()))
                ));
            }
        }
        let ws_base = format!("{ws}://{}", url_host_port(http.addr));
        lines.push(format!("  signaling    {ws_base}/ws"));
        match &signal.turn_advert {
            Some(advert) => lines.push(format!(
                "  ICE servers  browsers get stun/turn on port {}{}, credentials valid {} s ({})",
                advert.port,
                match (
                    advert.tls_port,
                    advert.https_port.filter(|h| Some(*h) != advert.tls_port)
                ) {
                    (Some(t), Some(h)) => format!(", turns on {t} and on the HTTPS port {h}"),
                    (Some(t), None) => format!(" and turns on {t}"),
                    (None, Some(h)) => format!(" and turns on the HTTPS port {h}"),
                    (None, None) => String::new(),
                },
                advert.credential_ttl_secs,
                match (&config.public_host, mode) {
                    (Some(h), _) => format!("host {h}"),
                    (None, _) => "host: the one the browser used".to_owned(),
                }
            )),
            None => {
                lines.push("  ICE servers  no TURN: browsers get no relay (give --turn-secret of your TURN server)".into());
            }
        }
    }
    match http.metrics_addr {
        Some(m) => {
            let m = format!("http://{}", url_host_port(m));
            lines.push(format!(
                "  health       {base}/healthz   metrics {m}/metrics (details: {m}/healthz)"
            ));
        }
        None if config.metrics_token.is_some() => lines.push(format!(
            "  health       {base}/healthz   metrics {base}/metrics (loopback, or with --metrics-token)"
        )),
        None => lines.push(format!(
            "  health       {base}/healthz   metrics {base}/metrics (loopback clients only)"
        )),
    }

    if let Some(turn) = &parts.turn {
        let a = turn.addrs();
        lines.push(format!(
            "  STUN/TURN    udp {}   tcp {}",
            join(&a.udp),
            join(&a.tcp)
        ));
        // TURN is served on the HTTPS port too (shared_port), whatever the TURNS listener does.
        let on_https = if http.tls {
            format!(" and on the HTTPS port {}", url_host_port(http.addr))
        } else {
            String::new()
        };
        if a.tls.is_empty() && !http.tls {
            lines.push("  TURNS        off (no certificate: give --domain, --turn-cert/--turn-key, or --tls-cert/--tls-key)".into());
        } else if a.tls.is_empty() {
            lines.push(format!("  TURNS        on the HTTPS port {} (no TURNS port: give --turn-cert/--turn-key, or --tls-cert/--tls-key)", url_host_port(http.addr)));
        } else {
            lines.push(format!("  TURNS        tls {}{on_https}", join(&a.tls)));
        }
        let relays: Vec<String> = a.relay_ips.iter().map(IpAddr::to_string).collect();
        lines.push(format!(
            "  relay        from {} ports {}-{}, realm \"{}\", {} UDP thread{}",
            relays.join(", "),
            config.min_port,
            config.max_port,
            config.realm,
            a.threads,
            if a.threads == 1 { "" } else { "s" }
        ));
        let auth = match (config.auth_secret.len(), config.user.len(), mode) {
            (0, 0, Mode::Serve) => "shared secret made at start, known only to this process's signaling".to_owned(),
            (0, 0, _) => "NO credentials configured: every TURN request will be refused (give --user or --auth-secret)".to_owned(),
            (secrets, users, _) => {
                let mut parts = Vec::new();
                if secrets > 0 {
                    parts.push(format!("{secrets} shared secret(s)"));
                }
                if users > 0 {
                    parts.push(format!("{users} static user(s)"));
                }
                parts.join(" and ")
            }
        };
        lines.push(format!("  TURN auth    {auth}"));
        if config.allow_loopback_peers || !config.allow_peer.is_empty() {
            notes.push(
                "relaying to loopback or private ranges is ALLOWED by --allow-loopback-peers/--allow-peer".to_owned(),
            );
        }
        let unmapped_private: Vec<String> = a
            .relay_ips
            .iter()
            .filter(|ip| is_private(ip) && !config.external_ip.iter().any(|e| e.maps(**ip)))
            .map(IpAddr::to_string)
            .collect();
        if !unmapped_private.is_empty() {
            notes.push(format!(
                "the relay address {} is private: browsers outside this network cannot reach it. On a cloud VM or \
                 behind a 1:1 NAT, give --external-ip PUBLIC/{}",
                unmapped_private.join(", "),
                unmapped_private[0]
            ));
        }
        if a.relay_ips.iter().all(IpAddr::is_loopback)
            && a.udp.iter().any(|u| !u.ip().is_loopback())
        {
            notes.push("the relay address is loopback: only this machine can use the relay; give --relay-ip".into());
        }
    }

    lines.push(format!("  {}", file_limit_line(files)));

    if let Some((fingerprint, names)) = &http.self_signed {
        lines.push(format!(
            "  certificate  self-signed for {}",
            names.join(", ")
        ));
        lines.push(format!("               SHA-256 {fingerprint}"));
        notes.push("browsers warn about a self-signed certificate: compare the fingerprint, then accept it".into());
    }
    if let Some(acme) = &http.acme {
        lines.push(format!(
            "  certificate  for {} from {} ({} challenge), for HTTPS{}",
            acme.domains.join(", "),
            crate::acme::ca_name(&acme.directory),
            match acme.challenge() {
                crate::config::AcmeChallenge::Http01 => "HTTP-01",
                _ => "TLS-ALPN-01",
            },
            if parts
                .turn
                .as_ref()
                .is_some_and(|t| !t.addrs().tls.is_empty())
                && config.turn_cert.is_none()
            {
                " and TURNS"
            } else {
                ""
            }
        ));
        lines.push(format!("               {}", acme.state().describe()));
        lines.push(format!(
            "               account key and certificates in {}",
            acme.state_dir.display()
        ));
    }
    if let Some(redirect) = http.redirect_addr {
        lines.push(format!(
            "  redirect     http://{}/ -> {scheme}://...{}",
            url_host_port(redirect),
            if http.acme.is_some() {
                " (and ACME HTTP-01)"
            } else {
                ""
            }
        ));
    }
    if !http.tls && parts.signal.is_some() && !http.addr.ip().is_loopback() {
        notes.push(
            "browsers allow the camera only over HTTPS or on localhost: for other devices use --tls-self-signed \
             or --tls-cert/--tls-key"
                .into(),
        );
    }
    for note in notes {
        lines.push(format!("  note         {note}"));
    }
    lines.push("  stop with Ctrl-C or SIGTERM; SIGHUP reloads the TLS certificates".to_owned());
    lines.join("\n")
}

fn url_host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("localhost:{}", addr.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
        ip => format!("{ip}:{}", addr.port()),
    }
}

/// This machine's non-loopback addresses of the family the wildcard listens on (IPv4 only for 0.0.0.0).
fn lan_addresses(wildcard: IpAddr) -> Vec<IpAddr> {
    crate::tls::interface_addresses()
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => wildcard.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}

fn join(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "-".to_owned();
    }
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A private (RFC 1918, shared CGNAT space, IPv6 unique-local) address: reachable only inside its network.
fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_limit_line_says_what_the_limit_allows() {
        let line = file_limit_line(&FileLimit {
            now: Some(20_000),
            raised_from: Some(256),
        });
        assert!(
            line.contains("20000 (soft limit raised from 256)"),
            "{line}"
        );
        assert!(line.contains("about 19936 relay allocations"), "{line}");
        assert!(!line.contains("low for"), "{line}");
        let low = file_limit_line(&FileLimit {
            now: Some(1024),
            raised_from: None,
        });
        assert!(
            low.contains("LimitNOFILE") && !low.contains("raised"),
            "{low}"
        );
        assert!(
            file_limit_line(&FileLimit {
                now: None,
                raised_from: None
            })
            .contains("unlimited")
        );
    }

    #[test]
    fn private_relay_addresses_need_an_external_mapping() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for private in [
            "10.200.0.10",
            "172.16.0.1",
            "192.168.1.2",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert!(is_private(&ip(private)), "{private}");
        }
        for public in ["203.0.113.10", "127.0.0.1", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(&ip(public)), "{public}");
        }
        let pair: peercall_turn::ExternalIp = "203.0.113.20/10.200.0.10".parse().expect("pair");
        assert!(pair.maps(ip("10.200.0.10")));
        assert!(!pair.maps(ip("10.200.0.11")));
        let alone: peercall_turn::ExternalIp = "203.0.113.20".parse().expect("public");
        assert!(alone.maps(ip("10.200.0.10")) && !alone.maps(ip("fd00::1")));
    }
}
