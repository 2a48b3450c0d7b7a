//! Relay ports: binding the relay sockets an Allocate asks for (random ports in the range, EVEN-PORT
//! reservations held for any shard), which shard owns each relayed address, and settling a core's decisions
//! into the shard's sockets and epoll set.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use peercall_stun::Family;
use peercall_udp::{Epoll, udp_socket};

use super::RELAY_TOKEN_BASE;
use crate::core::{Action, Bound, Core, FiveTuple, Ledger, Now, Output, RelayRequest};

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

/// Relay sockets bound for an Allocate, to be served by the shard that asked once the core has answered.
pub(super) type Started = Vec<(SocketAddr, StdUdpSocket)>;

/// Where relay sockets are bound (the relay IPs and the port range) and what every shard must see of them:
/// the owner of each relayed address and the sockets held for EVEN-PORT reservations.
pub(super) struct RelayHost {
    ips: Vec<IpAddr>,
    ports: (u16, u16),
    pub(super) owners: RelayOwners,
    /// Relay sockets bound for EVEN-PORT reservations, waiting (unread) for the Allocate that claims them,
    /// which any shard may handle.
    reserved: Mutex<HashMap<SocketAddr, StdUdpSocket>>,
}

impl RelayHost {
    pub(super) fn new(ips: Vec<IpAddr>, ports: (u16, u16)) -> RelayHost {
        RelayHost {
            owners: RelayOwners::new(&ips),
            ips,
            ports,
            reserved: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn reserved(&self) -> MutexGuard<'_, HashMap<SocketAddr, StdUdpSocket>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new relay socket of `family` (on an even port when `even`), or `None` when the family has no relay
    /// IP or no port of the range is free.
    fn bind(&self, family: Family, even: bool) -> Option<(SocketAddr, StdUdpSocket)> {
        let ip = *self.ips.iter().find(|ip| Family::of(**ip) == family)?;
        let (min, max) = self.ports;
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
                return Some((addr, socket));
            }
        }
        None
    }

    /// Binds what an Allocate asks for: fresh sockets go to `started`, a port held for a reservation to
    /// [`RelayHost::reserved`]; a claimed reservation's socket moves from there to `started`.
    pub(super) fn satisfy(&self, request: RelayRequest, started: &mut Started) -> Bound {
        let mut bound = Bound::default();
        match request {
            RelayRequest::Fresh {
                v4,
                v6,
                even,
                reserve_next,
            } => {
                for (slot, family, wanted) in [(0, Family::V4, v4), (1, Family::V6, v6)] {
                    if let Some((addr, socket)) = wanted.then(|| self.bind(family, even)).flatten()
                    {
                        bound.relays[slot] = Some(addr);
                        started.push((addr, socket));
                    }
                }
                let next = bound.relays[0]
                    .or(bound.relays[1])
                    .and_then(|r| Some(SocketAddr::new(r.ip(), r.port().checked_add(1)?)));
                if reserve_next
                    && let Some(next) = next
                    && let Some(socket) = bind_relay(next)
                {
                    self.reserved().insert(next, socket);
                    bound.reserved = Some(next);
                }
            }
            RelayRequest::Reserved(addr) => {
                if let Some(socket) = self.reserved().remove(&addr) {
                    bound.relays[usize::from(addr.is_ipv6())] = Some(addr);
                    started.push((addr, socket));
                }
            }
        }
        bound
    }
}

pub(super) fn bind_relay(addr: SocketAddr) -> Option<StdUdpSocket> {
    // Default socket buffers: the kernel charges them only as datagrams queue, so idle allocations stay cheap.
    udp_socket(addr, 0, false).ok()
}

/// Feeds a client packet to `core`; an admitted Allocate gets its relay sockets bound here and its answer
/// from the core at once, so the caller sees a reply like any other. Sockets bound go to `started`, for
/// [`settle`].
#[allow(clippy::too_many_arguments)]
pub(super) fn client_packet(
    host: &RelayHost,
    core: &mut Core,
    ledger: &Ledger,
    now: Now,
    from: FiveTuple,
    packet: &[u8],
    out: &mut [u8],
    started: &mut Started,
) -> Action {
    match core.handle_client(now, from, packet, out, ledger) {
        Action::Bind(request) => {
            let bound = host.satisfy(request, started);
            core.handle_bound(now, bound, out, ledger)
        }
        action => action,
    }
}

/// The relay sockets one shard serves, by relayed address and by epoll token.
#[derive(Default)]
pub(super) struct RelaySockets {
    sockets: HashMap<SocketAddr, Relay>,
    by_token: HashMap<u64, SocketAddr>,
    next_token: u64,
}

struct Relay {
    socket: StdUdpSocket,
    token: u64,
}

impl RelaySockets {
    /// The socket of relayed address `addr`.
    pub(super) fn get(&self, addr: SocketAddr) -> Option<&StdUdpSocket> {
        self.sockets.get(&addr).map(|r| &r.socket)
    }

    /// The relayed address watched under epoll `token`.
    pub(super) fn by_token(&self, token: u64) -> Option<SocketAddr> {
        self.by_token.get(&token).copied()
    }

    /// Closes every socket (at shutdown).
    pub(super) fn clear(&mut self) {
        self.sockets.clear();
        self.by_token.clear();
    }
}

/// After a core ran: shard `index` starts serving the relay sockets bound for it (watched in `epoll`, owned
/// in `host`), then closes those the core released (`outputs`): its own, or a reservation's held in `host`.
pub(super) fn settle(
    host: &RelayHost,
    index: usize,
    epoll: &Epoll,
    relays: &mut RelaySockets,
    started: Started,
    outputs: impl IntoIterator<Item = Output>,
) {
    for (addr, socket) in started {
        let token = RELAY_TOKEN_BASE + relays.next_token;
        relays.next_token += 1;
        if epoll.add(socket.as_raw_fd(), token).is_err() {
            // Out of kernel resources for epoll: the allocation stays, but its peers cannot reach it.
            tracing::warn!(relay = %addr, "cannot watch relay socket");
        }
        relays.by_token.insert(token, addr);
        relays.sockets.insert(addr, Relay { socket, token });
        host.owners.set(addr, Some(index));
    }
    for Output::Release(addr) in outputs {
        match relays.sockets.remove(&addr) {
            Some(relay) => {
                relays.by_token.remove(&relay.token);
                epoll.remove(relay.socket.as_raw_fd());
                host.owners.set(addr, None);
            }
            None => {
                host.reserved().remove(&addr);
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

    /// A window of loopback ports around one the kernel just handed out: most of them are free.
    fn window(span: u16) -> (u16, u16) {
        let probe = StdUdpSocket::bind("127.0.0.1:0").expect("bind a probe");
        let port = probe.local_addr().expect("probe address").port();
        let min = port.saturating_sub(span / 2).max(1024);
        (min, min.saturating_add(span))
    }

    fn loopback_host(ports: (u16, u16)) -> RelayHost {
        RelayHost::new(vec!["127.0.0.1".parse().unwrap()], ports)
    }

    fn fresh(v4: bool, v6: bool, even: bool, reserve_next: bool) -> RelayRequest {
        RelayRequest::Fresh {
            v4,
            v6,
            even,
            reserve_next,
        }
    }

    /// An EVEN-PORT R=1 bind whose next port was free too (other programs share loopback ports: a few
    /// tries).
    fn even_pair(host: &RelayHost, started: &mut Started) -> Bound {
        for _ in 0..20 {
            let mut attempt = Vec::new();
            let bound = host.satisfy(fresh(true, false, true, true), &mut attempt);
            if bound.reserved.is_some() {
                started.extend(attempt);
                return bound;
            }
        }
        panic!("no two free neighbouring ports in the window")
    }

    #[test]
    fn satisfy_binds_in_the_range_holds_the_next_port_and_hands_a_reservation_over_once() {
        let (min, max) = window(200);
        let host = loopback_host((min, max));
        let mut started = Vec::new();
        // EVEN-PORT R=1: an even port of the range, and the one after it held for the reservation.
        let bound = even_pair(&host, &mut started);
        let relay = bound.relays[0].expect("a free port in the window");
        assert!(
            (min..=max).contains(&relay.port()) && relay.port().is_multiple_of(2),
            "{relay}"
        );
        assert_eq!(bound.relays[1], None, "no IPv6 relay IP, no IPv6 address");
        let next = bound.reserved.expect("the next port is free");
        assert_eq!(next, SocketAddr::new(relay.ip(), relay.port() + 1));
        assert_eq!(started.len(), 1, "the reserved socket is not served yet");
        assert_eq!(started[0].1.local_addr().unwrap(), relay, "a real socket");
        assert!(host.reserved().contains_key(&next));
        // The Allocate that claims it (on any shard) gets the held socket, once.
        let mut claimed = Vec::new();
        let bound = host.satisfy(RelayRequest::Reserved(next), &mut claimed);
        assert_eq!(bound.relays, [Some(next), None]);
        assert_eq!(claimed[0].1.local_addr().unwrap(), next);
        assert!(host.reserved().is_empty());
        let again = host.satisfy(RelayRequest::Reserved(next), &mut claimed);
        assert_eq!(again, Bound::default(), "a reservation is handed over once");
        assert_eq!(claimed.len(), 1);
    }

    #[test]
    fn satisfy_reports_no_address_when_every_port_of_the_range_is_taken() {
        // A range of one port, held by someone else.
        let holder = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = holder.local_addr().unwrap().port();
        let host = loopback_host((port, port));
        let mut started = Vec::new();
        assert_eq!(
            host.satisfy(fresh(true, false, false, false), &mut started),
            Bound::default()
        );
        assert!(started.is_empty());
        drop(holder);
        let bound = host.satisfy(fresh(true, false, false, false), &mut started);
        assert_eq!(bound.relays[0].map(|a| a.port()), Some(port), "free again");
    }

    #[test]
    fn settle_serves_started_sockets_on_the_shard_and_closes_released_ones() {
        let host = loopback_host(window(200));
        let epoll = Epoll::new().expect("epoll");
        let mut relays = RelaySockets::default();
        let mut started = Vec::new();
        let bound = even_pair(&host, &mut started);
        let (relay, reserved) = (bound.relays[0].unwrap(), bound.reserved.unwrap());
        settle(&host, 3, &epoll, &mut relays, started, []);
        assert_eq!(
            host.owners.owner(relay),
            Some(3),
            "owned by the shard that settled"
        );
        assert_eq!(
            host.owners.owner(reserved),
            None,
            "a reservation is no one's yet"
        );
        assert_eq!(relays.by_token(RELAY_TOKEN_BASE), Some(relay));
        // The socket is watched under its token: a peer's datagram wakes the shard for it.
        let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"ping", relay).unwrap();
        let mut events = peercall_udp::epoll_events(4);
        let woken: Vec<u64> = epoll
            .wait(&mut events, std::time::Duration::from_secs(2))
            .collect();
        assert_eq!(woken, vec![RELAY_TOKEN_BASE]);
        let mut buf = [0u8; 8];
        let (n, from) = relays.get(relay).unwrap().recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"ping"[..], peer.local_addr().unwrap())
        );
        // Released: the allocation's socket and the unclaimed reservation's are closed, their ports free.
        settle(
            &host,
            3,
            &epoll,
            &mut relays,
            Vec::new(),
            [Output::Release(relay), Output::Release(reserved)],
        );
        assert_eq!(host.owners.owner(relay), None);
        assert!(relays.get(relay).is_none() && relays.by_token(RELAY_TOKEN_BASE).is_none());
        assert!(host.reserved().is_empty());
        for addr in [relay, reserved] {
            assert!(bind_relay(addr).is_some(), "{addr} closed");
        }
        // Tokens are not reused: a late event of a closed socket cannot reach a new one.
        let mut started = Vec::new();
        let next = host.satisfy(fresh(true, false, false, false), &mut started);
        settle(&host, 3, &epoll, &mut relays, started, []);
        assert_eq!(relays.by_token(RELAY_TOKEN_BASE + 1), next.relays[0]);
    }
}
