//! Setup: TLS certificates, the server's own addresses (for the relay policy) and the relay and
//! interface addresses a wildcard listener implies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::Listening;
use crate::{TlsFiles, TurnConfig, TurnError};

pub(super) fn shard_count(configured: usize) -> usize {
    let n = if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    };
    n.clamp(1, 64)
}

pub(super) fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TurnError> {
    // TURN clients send no ALPN (RFC 7443's "stun.turn" at most): none is advertised.
    crate::tls::server_config(&files.cert, &files.key, &[]).map_err(TurnError::Tls)
}

/// Every socket this server listens on (UDP, TCP, TLS).
pub(super) fn own_listeners(listening: &Listening) -> Vec<SocketAddr> {
    let mut all = listening.udp.clone();
    all.extend(&listening.tcp);
    all.extend(&listening.tls);
    all
}

/// Every IP this server answers on, relays from or advertises: relaying to any of them would reach the server
/// itself (issue: a Binding through a relay to the listening port came back as a Data indication). A wildcard
/// listener answers on every interface address.
pub(super) fn own_ips(config: &TurnConfig, relay_ips: &[IpAddr]) -> Vec<IpAddr> {
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

pub(super) fn default_relay_ips(listen: &[SocketAddr]) -> Result<Vec<IpAddr>, TurnError> {
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
