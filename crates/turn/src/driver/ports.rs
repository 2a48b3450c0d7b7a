//! Relay ports: binding relay sockets for the cores (random ports in the range, EVEN-PORT reservations held
//! for any shard), which shard owns each relayed address, and settling a core's decisions into the shard's
//! sockets and epoll set.

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};

use peercall_stun::Family;
use peercall_udp::udp_socket;

use super::{RELAY_TOKEN_BASE, Relay, Shard, Shared, State};
use crate::ExternalIp;
use crate::core::RelayPorts;

/// Which shard serves each live relayed address, readable on the relay path without a lock: one byte per
/// port of each relay IP (shard + 1; 0 = not a relay of this server).
pub(super) struct RelayOwners {
    ips: Vec<IpAddr>,
    owners: Vec<AtomicU8>,
}

impl RelayOwners {
    pub(super) fn new(ips: &[IpAddr]) -> RelayOwners {
        RelayOwners {
            ips: ips.to_vec(),
            owners: (0..ips.len() * 65_536).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    fn slot(&self, addr: SocketAddr) -> Option<&AtomicU8> {
        let ip = self.ips.iter().position(|ip| *ip == addr.ip())?;
        self.owners.get(ip * 65_536 + usize::from(addr.port()))
    }

    pub(super) fn owner(&self, addr: SocketAddr) -> Option<usize> {
        let v = self.slot(addr)?.load(Ordering::Acquire);
        (v > 0).then(|| usize::from(v) - 1)
    }

    pub(super) fn set(&self, addr: SocketAddr, shard: Option<usize>) {
        if let Some(slot) = self.slot(addr) {
            // At most 64 shards (shard_count), so shard + 1 fits a byte.
            slot.store(shard.map_or(0, |s| s as u8 + 1), Ordering::Release);
        }
    }
}

/// Binds relay sockets for a core. New sockets are collected and registered with the shard once the core
/// has decided; reserved ones wait in [`Shared::reserved`].
pub(super) struct DriverPorts<'a> {
    shared: &'a Shared,
    pub(super) started: Vec<(SocketAddr, StdUdpSocket)>,
}

impl<'a> DriverPorts<'a> {
    pub(super) fn new(shared: &'a Shared) -> DriverPorts<'a> {
        DriverPorts {
            shared,
            started: Vec::new(),
        }
    }
}

pub(super) fn bind_relay(addr: SocketAddr) -> Option<StdUdpSocket> {
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
        advertise(&self.shared.external, relay)
    }
}

/// The address clients are told for `relay`: its `--external-ip` mapping (1:1 NAT), if one applies.
fn advertise(external: &[ExternalIp], relay: SocketAddr) -> SocketAddr {
    match external.iter().find(|e| e.maps(relay.ip())) {
        Some(e) => SocketAddr::new(e.public, relay.port()),
        None => relay,
    }
}

/// After the core ran: registers the relay sockets it started and closes those whose allocation ended.
pub(super) fn settle(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_map_each_relay_port_to_its_shard_and_nothing_else() {
        let ips: Vec<IpAddr> = vec![
            "203.0.113.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        let owners = RelayOwners::new(&ips);
        let a: SocketAddr = "203.0.113.1:50000".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
        assert_eq!(owners.owner(a), None, "not a relay yet");
        owners.set(a, Some(0));
        owners.set(b, Some(3));
        assert_eq!((owners.owner(a), owners.owner(b)), (Some(0), Some(3)));
        // Same port on another IP, a neighbouring port, an address not ours: none of them is a relay.
        assert_eq!(owners.owner("203.0.113.2:50000".parse().unwrap()), None);
        assert_eq!(owners.owner("203.0.113.1:50001".parse().unwrap()), None);
        owners.set("198.51.100.1:1".parse().unwrap(), Some(1)); // ignored, not a relay IP
        assert_eq!(owners.owner("198.51.100.1:1".parse().unwrap()), None);
        owners.set(a, None);
        assert_eq!(owners.owner(a), None, "released");
        assert_eq!(owners.owner(b), Some(3));
    }

    #[test]
    fn relays_are_advertised_through_their_external_mapping() {
        let relay: SocketAddr = "10.0.0.5:50000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::5]:50000".parse().unwrap();
        let public_only: Vec<ExternalIp> = vec!["203.0.113.7".parse().unwrap()];
        assert_eq!(
            advertise(&public_only, relay),
            "203.0.113.7:50000".parse().unwrap()
        );
        assert_eq!(
            advertise(&public_only, v6),
            v6,
            "an IPv4 mapping says nothing of IPv6"
        );
        let pair: Vec<ExternalIp> = vec!["203.0.113.7/10.0.0.9".parse().unwrap()];
        assert_eq!(
            advertise(&pair, relay),
            relay,
            "mapped only from its private half"
        );
        assert_eq!(advertise(&[], relay), relay);
    }
}
