//! `peercall check`: with the settings `serve` would use, checks what makes a public server fail at start or
//! fail its users (a name that does not resolve, a taken or privileged port, a relay range in use, a certificate
//! that does not load, has expired or names another host), and says for each what a person must fix.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, ServerName};

use crate::config::{HttpTls, Resolved};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but worth a look; does not fail the check.
    Warn,
    Fail,
}

/// One finding: what was checked, how it came out, and (unless OK) what to do.
#[derive(Debug, Clone)]
pub struct Finding {
    pub status: Status,
    pub what: String,
    pub fix: Option<String>,
}

fn ok(what: impl Into<String>) -> Finding {
    Finding {
        status: Status::Ok,
        what: what.into(),
        fix: None,
    }
}

fn warn(what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        status: Status::Warn,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        status: Status::Fail,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

/// Renders the findings, one per line with the fix indented below; the last line sums up.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let tag = match f.status {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let _ = writeln!(out, "{tag}  {}", f.what);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "      -> {fix}");
        }
    }
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    let warned = findings.iter().filter(|f| f.status == Status::Warn).count();
    if failed == 0 {
        let _ = writeln!(
            out,
            "all checks passed{}",
            if warned > 0 {
                format!(" ({warned} warning(s) above)")
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            out,
            "{failed} check(s) failed: fix what the lines marked FAIL say, then run `peercall check` again"
        );
    }
    out
}

/// Every check, in the order a person would fix things. `turn`: whether TURN runs (serve, turn).
pub fn run(config: &Resolved, turn: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let host = config.public_host.clone();
    if let Some(host) = &host {
        findings.push(resolve(host, config));
    }
    let https = !matches!(config.http_tls(), HttpTls::Off);
    let web = if https {
        "HTTPS: web client, signaling and TURNS"
    } else {
        "HTTP: web client and signaling"
    };
    findings.push(tcp_port(config.http, web, "--http"));
    if let Some(m) = config.metrics_listen {
        findings.push(tcp_port(m, "metrics", "--metrics-listen"));
    }
    if turn {
        for l in &config.listen {
            findings.push(udp_port(*l, "STUN/TURN over UDP", "--listen"));
            findings.push(tcp_port(*l, "STUN/TURN over TCP", "--listen"));
        }
        if config.turn_cert.is_some() {
            for l in &config.tls_listen {
                findings.push(tcp_port(*l, "TURNS (TURN over TLS)", "--tls-listen"));
            }
        }
        findings.extend(relay_range(config));
    }
    match config.http_tls() {
        HttpTls::Off => findings.push(if config.http.ip().is_loopback() {
            ok("no HTTPS (fine on loopback: browsers allow the camera on localhost)")
        } else {
            warn(
                "no HTTPS: browsers allow the camera only over HTTPS (or on localhost), and no TURNS on the web port",
                "give --domain with --acme-email, or --tls-cert/--tls-key, or --tls-self-signed on a LAN",
            )
        }),
        HttpTls::SelfSigned => findings.push(warn(
            "HTTPS with a self-signed certificate: every browser warns before the page opens",
            "on a public server use a certificate for the domain (--domain, or --tls-cert/--tls-key)",
        )),
        HttpTls::Files { cert, key } => {
            findings.extend(certificate(&cert, &key, host.as_deref(), "--tls-cert/--tls-key"));
        }
        HttpTls::Acme => findings.push(acme_certificate(config)),
    }
    if turn
        && let (Some(cert), Some(key)) = (&config.turn_cert, &config.turn_key)
        && Some(cert) != config.tls_cert.as_ref()
    {
        findings.extend(certificate(
            cert,
            key,
            host.as_deref(),
            "--turn-cert/--turn-key",
        ));
    }
    findings.push(file_limit());
    findings
}

/// `--domain`: what the state directory holds, without contacting the CA (serve obtains or renews it).
fn acme_certificate(config: &Resolved) -> Finding {
    let acme = match crate::acme::Acme::prepare(config) {
        Ok(acme) => acme,
        Err(e) => {
            return fail(
                format!("automatic HTTPS cannot start: {e:#}"),
                "fix --state-dir (it must be a directory peercall can write)",
            );
        }
    };
    let days = |not_after: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        (not_after - now) / 86_400
    };
    match acme.state() {
        crate::acme::CertState::Valid(v)
        | crate::acme::CertState::Failing { valid: Some(v), .. } => {
            let left = days(v.not_after);
            if left < 0 {
                warn(
                    "the cached certificate has expired",
                    "start `peercall serve`: it orders a new one (port 443 must be reachable from the internet)",
                )
            } else {
                ok(format!(
                    "certificate for {} cached in the state directory, {left} days left (renewed automatically)",
                    config.domain.join(", ")
                ))
            }
        }
        _ => warn(
            format!("no certificate for {} yet", config.domain.join(", ")),
            "start `peercall serve`: it obtains one from the CA (DNS must point here, port 443 reachable from the internet)",
        ),
    }
}

/// The public host resolves, and to an address of this machine (or its --external-ip).
fn resolve(host: &str, config: &Resolved) -> Finding {
    let addrs: Vec<IpAddr> = match (host, 0).to_socket_addrs() {
        Ok(a) => a.map(|a| a.ip()).collect(),
        Err(e) => {
            return fail(
                format!("{host} does not resolve ({e})"),
                format!(
                    "create a DNS A (and AAAA) record for {host} pointing at this server's public address, \
                     wait for it to spread, or fix --public-host/--domain"
                ),
            );
        }
    };
    let list = addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mine = crate::tls::interface_addresses();
    let ours = addrs
        .iter()
        .any(|a| mine.contains(a) || config.external_ip.iter().any(|e| e.public == *a));
    if ours {
        ok(format!(
            "{host} resolves to {list}, an address of this server"
        ))
    } else {
        warn(
            format!(
                "{host} resolves to {list}, which is neither an address of this machine nor an --external-ip"
            ),
            "if this server is behind a 1:1 NAT (a cloud VM), give --external-ip PUBLIC/PRIVATE; otherwise the DNS \
             record points elsewhere: fix it",
        )
    }
}

fn bind_problem(e: &std::io::Error, addr: SocketAddr, proto: &str, flag: &str) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {} ({proto}) on {} is taken by another program (see `ss -lntup | grep :{}`): stop it, or change {flag}",
            addr.port(),
            addr.ip(),
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "port {} is below 1024: run peercall with CAP_NET_BIND_SERVICE (dist/peercall.service does), or \
             `setcap cap_net_bind_service=+ep $(command -v peercall)`, or change {flag}",
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: change {flag}",
            addr.ip()
        ),
        _ => format!("cannot bind {addr} ({proto}): {e}; change {flag}"),
    }
}

fn tcp_port(addr: SocketAddr, what: &str, flag: &str) -> Finding {
    match TcpListener::bind(addr) {
        Ok(_) => ok(format!("{addr}/tcp can be bound ({what}, {flag})")),
        Err(e) => fail(
            format!("cannot listen on {addr}/tcp for {what} ({flag}): {e}"),
            bind_problem(&e, addr, "TCP", flag),
        ),
    }
}

fn udp_port(addr: SocketAddr, what: &str, flag: &str) -> Finding {
    match UdpSocket::bind(addr) {
        Ok(_) => ok(format!("{addr}/udp can be bound ({what}, {flag})")),
        Err(e) => fail(
            format!("cannot listen on {addr}/udp for {what} ({flag}): {e}"),
            bind_problem(&e, addr, "UDP", flag),
        ),
    }
}

/// Ports of the relay range sampled per relay address: enough to see a range another program holds, few
/// enough to finish at once.
const RELAY_SAMPLES: u32 = 64;

/// The relay range: a sample of its ports can be bound on each relay address; it is large enough for the
/// allocation quota; the kernel does not hand out its ports to other programs' outgoing connections.
fn relay_range(config: &Resolved) -> Vec<Finding> {
    let (min, max) = (config.min_port, config.max_port);
    let size = u32::from(max) - u32::from(min) + 1;
    let mut findings = Vec::new();
    let ips: Vec<IpAddr> = if config.relay_ip.is_empty() {
        let specific: Vec<IpAddr> = config
            .listen
            .iter()
            .map(|l| l.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        if specific.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            specific
        }
    } else {
        config.relay_ip.clone()
    };
    let samples = size.min(RELAY_SAMPLES);
    for ip in ips {
        let mut taken = Vec::new();
        for i in 0..samples {
            // Evenly spread over the range, both ends included.
            let offset = if samples > 1 {
                u64::from(i) * u64::from(size - 1) / u64::from(samples - 1)
            } else {
                0
            };
            let port = u16::try_from(u64::from(min) + offset).unwrap_or(max);
            if let Err(e) = UdpSocket::bind(SocketAddr::new(ip, port)) {
                if e.kind() != std::io::ErrorKind::AddrInUse {
                    findings.push(fail(
                        format!("cannot open relay sockets on {ip}: {e}"),
                        bind_problem(&e, SocketAddr::new(ip, port), "UDP", "--relay-ip"),
                    ));
                    taken.clear();
                    break;
                }
                taken.push(port);
            }
        }
        let range = format!("relay ports {min}-{max} on {ip} (--min-port/--max-port)");
        findings.push(if taken.is_empty() {
            ok(format!("{range}: {samples} sampled ports free"))
        } else if taken.len() as u32 == samples {
            fail(
                format!("{range}: all {samples} sampled ports are taken"),
                "another program (another TURN server?) uses this range: stop it or choose another range",
            )
        } else {
            warn(
                format!(
                    "{range}: {} of {samples} sampled ports are taken (e.g. {})",
                    taken.len(),
                    taken[0]
                ),
                "other programs use part of the range; allocations use the free ports, but a range of its own is safer",
            )
        });
    }
    if size < config.total_quota {
        findings.push(warn(
            format!(
                "the relay range has {size} ports, fewer than --total-quota {} allocations",
                config.total_quota
            ),
            "widen --min-port/--max-port (and the firewall rule for them) or lower --total-quota",
        ));
    }
    if let Some((lo, hi)) = ephemeral_range()
        && lo <= max
        && min <= hi
    {
        findings.push(warn(
            format!(
                "the kernel's ephemeral ports {lo}-{hi} overlap the relay range: outgoing connections of any program \
                 may take relay ports"
            ),
            format!(
                "move the relay range (e.g. --min-port 49152 --max-port 65535 with \
                 `sysctl net.ipv4.ip_local_port_range=\"32768 {}\"`), or ignore on a machine that makes few connections",
                49151
            ),
        ));
    }
    findings
}

fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    Some((it.next()?.ok()?, it.next()?.ok()?))
}

const DAY: u64 = 86_400;
/// Fewer days than this left on a certificate is a warning.
const RENEW_WARNING_DAYS: i64 = 14;

/// The certificate and key load (as `serve` loads them), the leaf is valid now and for `host`, and how long for.
fn certificate(cert: &Path, key: &Path, host: Option<&str>, flags: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Err(e) = crate::tls::server_config_from_files(cert, key) {
        findings.push(fail(
            format!("the certificate does not load: {e:#}"),
            format!(
                "fix {flags}: PEM files, the key matching the certificate, readable by peercall"
            ),
        ));
        return findings;
    }
    let Some(leaf) = std::fs::read(cert)
        .ok()
        .and_then(|pem| rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok())
    else {
        findings.push(fail(
            format!("{} holds no readable certificate", cert.display()),
            format!("fix {flags}"),
        ));
        return findings;
    };
    findings.push(validity(&leaf, cert));
    if let Some(host) = host {
        findings.push(names(&leaf, host, cert, flags));
    }
    findings
}

fn validity(leaf: &CertificateDer<'_>, path: &Path) -> Finding {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) else {
        return fail(
            format!(
                "{} is not an X.509 certificate peercall can read",
                path.display()
            ),
            "give the certificate file in PEM, leaf first",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let days_left = (not_after - now).div_euclid(DAY as i64);
    let until = parsed.validity().not_after.to_string();
    if now < not_before {
        fail(
            format!(
                "the certificate {} is not valid yet (from {})",
                path.display(),
                parsed.validity().not_before
            ),
            "check this machine's clock (timedatectl), or wait",
        )
    } else if now >= not_after {
        fail(
            format!("the certificate {} expired on {until}", path.display()),
            "renew it (certbot renew, or use --domain with --acme-email for automatic certificates), then SIGHUP \
             or restart peercall",
        )
    } else if days_left < RENEW_WARNING_DAYS {
        warn(
            format!(
                "the certificate {} expires in {days_left} day(s), on {until}",
                path.display()
            ),
            "renew it soon; peercall re-reads certificate files on SIGHUP (systemctl reload peercall)",
        )
    } else {
        ok(format!(
            "the certificate {} is valid for {days_left} more days (until {until})",
            path.display()
        ))
    }
}

fn names(leaf: &CertificateDer<'_>, host: &str, path: &Path, flags: &str) -> Finding {
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return fail(
            format!("{host} is not a host name or address"),
            "fix --public-host/--domain",
        );
    };
    let valid = webpki::EndEntityCert::try_from(leaf)
        .map(|end| end.verify_is_valid_for_subject_name(&name).is_ok())
        .unwrap_or(false);
    if valid {
        ok(format!(
            "the certificate {} is valid for {host}",
            path.display()
        ))
    } else {
        let listed = x509_parser::parse_x509_certificate(leaf)
            .ok()
            .and_then(|(_, c)| {
                c.subject_alternative_name().ok().flatten().map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            })
            .unwrap_or_default();
        fail(
            format!(
                "the certificate {} is not valid for {host} (it names: {})",
                path.display(),
                if listed.is_empty() {
                    "nothing"
                } else {
                    &listed
                }
            ),
            format!("get a certificate for {host}, or fix {flags} or --public-host/--domain"),
        )
    }
}

/// What the open-file limit allows (the soft limit is raised to the hard one at start).
fn file_limit() -> Finding {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    match limit.maximum {
        None => ok("open files: no hard limit"),
        Some(n) if n < 4096 => warn(
            format!(
                "open files: the hard limit is {n}, room for only about {} relay allocations and connections",
                n.saturating_sub(64)
            ),
            "raise it: LimitNOFILE=1048576 in the systemd unit (dist/peercall.service has it), or /etc/security/limits.conf",
        ),
        Some(n) => ok(format!(
            "open files: up to {n} (the hard limit), room for about {} relay allocations and connections",
            n.saturating_sub(64)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_says_fail_and_fix_and_sums_up() {
        let text = render(&[
            ok("a"),
            warn("b", "do b"),
            fail("port 443 taken", "stop it"),
        ]);
        assert!(text.contains("OK    a\n"), "{text}");
        assert!(text.contains("WARN  b\n      -> do b\n"), "{text}");
        assert!(
            text.contains("FAIL  port 443 taken\n      -> stop it\n"),
            "{text}"
        );
        assert!(text.contains("1 check(s) failed"), "{text}");
        assert!(
            render(&[ok("a"), warn("b", "c")]).contains("all checks passed (1 warning(s) above)")
        );
    }
}
