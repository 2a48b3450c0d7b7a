//! What the cores of one server share when it runs one core per thread: allocation counts for the quotas
//! (per user, per client address, in total), the set of live relayed addresses (always-allowed peers), and
//! EVEN-PORT reservations (the Allocate that claims one may reach another core). Touched on the control path
//! only — Allocate, deallocation, a peer the address ranges alone would refuse — never for a relayed packet to
//! an ordinary peer.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Refusal;

/// The counts and sets the cores of one server share (see the module documentation), behind one mutex taken
/// only on the control path. It is not part of any core: the driver holds one per server and passes it to
/// every core call that may touch it, so a test holds its own (or one for several cores) and looks into it.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    per_user: HashMap<Box<str>, u32>,
    per_client: HashMap<IpAddr, u32>,
    total: u32,
    relays: HashSet<SocketAddr>,
    reservations: Vec<Reservation>,
    reservation_counter: u64,
    /// Draining: no new allocations (508, so clients try another server); existing ones live on until they
    /// expire or are refreshed away.
    draining: bool,
}

/// A relay port held for a later Allocate (EVEN-PORT R=1). It counts against the quotas of whoever made it
/// like an allocation does, until it is claimed or expires: otherwise a client could hold any number of
/// sockets through reservations it never claims.
struct Reservation {
    token: [u8; 8],
    addr: SocketAddr,
    expires: Instant,
    owner: Owner,
}

/// Who an allocation or a reservation is counted against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Owner {
    pub user: Box<str>,
    /// The client's address as the per-client quota sees it: an IPv4 address, or an IPv6 /64 (one
    /// subscriber's prefix: a host can pick any address inside it).
    pub client: IpAddr,
}

impl Owner {
    pub(super) fn new(user: &str, client: IpAddr) -> Owner {
        Owner {
            user: user.into(),
            client: client_key(client),
        }
    }
}

/// The per-client quota key of `ip`: IPv4 as it is (IPv4-mapped IPv6 included), IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The three allocation quotas.
#[derive(Clone, Copy, Debug)]
pub(super) struct Quotas {
    pub user: u32,
    pub client: u32,
    pub total: u32,
}

/// Which quota refused an admission, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    /// Allocations of one username (`user_quota`).
    User,
    /// Allocations of one client address, IPv6 by /64 (`client_quota`).
    Client,
    /// Allocations of the whole server (`total_quota`).
    Total,
}

impl QuotaKind {
    /// Every quota, in counter order.
    pub const ALL: [QuotaKind; 3] = [QuotaKind::User, QuotaKind::Client, QuotaKind::Total];

    /// The `quota` label of `peercall_turn_quota_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::User => "user",
            QuotaKind::Client => "client_address",
            QuotaKind::Total => "total",
        }
    }
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections below cannot panic half-way; a poisoned lock still holds consistent counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` new holdings (an allocation, and its reservation if it asks for one) of `owner` against
    /// every quota, all or none, or says which quota is reached.
    pub(super) fn admit(
        &self,
        owner: &Owner,
        n: u32,
        quotas: Quotas,
    ) -> Result<(), (QuotaKind, Refusal)> {
        admit_in(&mut self.lock(), owner, n, quotas)
    }

    /// Starts (or ends) draining: from now on every new allocation is refused with 508 Insufficient Capacity
    /// (RFC 8656 §7.2: the client tries another server); allocations that exist keep working.
    pub(crate) fn set_draining(&self, draining: bool) {
        self.lock().draining = draining;
    }

    /// Whether new allocations are refused (see [`Ledger::set_draining`]).
    pub(crate) fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// Takes back `n` admissions that did not become holdings, or ones that ended.
    pub(super) fn release(&self, owner: &Owner, n: u32) {
        release_in(&mut self.lock(), owner, n);
    }

    pub(super) fn add_relay(&self, relay: SocketAddr) {
        self.lock().relays.insert(relay);
    }

    pub(super) fn remove_relay(&self, relay: SocketAddr) {
        self.lock().relays.remove(&relay);
    }

    /// Whether `addr` is a live relayed address of any core of this server.
    pub fn is_relay(&self, addr: SocketAddr) -> bool {
        self.lock().relays.contains(&addr)
    }

    /// Allocations and reservations counted against the total quota.
    pub fn allocations(&self) -> u32 {
        self.lock().total
    }

    /// Users holding at least one allocation or reservation.
    #[cfg(test)]
    pub(crate) fn users(&self) -> usize {
        self.lock().per_user.len()
    }

    /// Reserved ports waiting for their Allocate.
    pub fn reservations(&self) -> usize {
        self.lock().reservations.len()
    }

    /// Records a reservation of `addr` for `owner` (already admitted for it) and returns its token: the
    /// first 8 bytes of an HMAC-SHA256 of a counter under the server's secret `key`, so tokens are unique
    /// and no one can derive another's from their own.
    pub(super) fn reserve(
        &self,
        addr: SocketAddr,
        until: Instant,
        owner: Owner,
        key: &[u8; 32],
    ) -> [u8; 8] {
        let mut s = self.lock();
        s.reservation_counter = s.reservation_counter.wrapping_add(1);
        let token = reservation_token(key, s.reservation_counter);
        s.reservations.push(Reservation {
            token,
            addr,
            expires: until,
            owner,
        });
        token
    }

    /// The earliest expiry of a reservation (of any core), for the next wake-up.
    pub(super) fn next_reservation_expiry(&self) -> Option<Instant> {
        self.lock().reservations.iter().map(|r| r.expires).min()
    }

    /// The reserved address of a live `token`, which is used up (`Ok(None)`: no such live token). The
    /// reservation's admission passes to the allocation that claims it: unchanged when `claimer` made the
    /// reservation, else `claimer` is admitted (or refused by a quota) and the maker's is released.
    pub(super) fn claim(
        &self,
        token: [u8; 8],
        now: Instant,
        claimer: &Owner,
        quotas: Quotas,
    ) -> Result<Option<SocketAddr>, (QuotaKind, Refusal)> {
        let mut s = self.lock();
        let Some(at) = s
            .reservations
            .iter()
            .position(|r| r.token == token && r.expires > now)
        else {
            return Ok(None);
        };
        if s.reservations[at].owner != *claimer {
            admit_in(&mut s, claimer, 1, quotas)?;
            let maker = s.reservations[at].owner.clone();
            release_in(&mut s, &maker, 1);
        }
        Ok(Some(s.reservations.swap_remove(at).addr))
    }

    /// Drops expired reservations, releasing their admissions and handing their addresses to `released`.
    pub(super) fn expire_reservations(&self, now: Instant, mut released: impl FnMut(SocketAddr)) {
        let mut s = self.lock();
        let mut i = 0;
        while i < s.reservations.len() {
            if s.reservations[i].expires > now {
                i += 1;
                continue;
            }
            let r = s.reservations.swap_remove(i);
            release_in(&mut s, &r.owner, 1);
            released(r.addr);
        }
    }
}

fn admit_in(
    s: &mut State,
    owner: &Owner,
    n: u32,
    quotas: Quotas,
) -> Result<(), (QuotaKind, Refusal)> {
    if s.draining {
        return Err((QuotaKind::Total, Refusal::InsufficientCapacity));
    }
    let user = s.per_user.get(&owner.user).copied().unwrap_or(0);
    if user.saturating_add(n) > quotas.user {
        return Err((QuotaKind::User, Refusal::QuotaReached));
    }
    let client = s.per_client.get(&owner.client).copied().unwrap_or(0);
    if client.saturating_add(n) > quotas.client {
        return Err((QuotaKind::Client, Refusal::ClientQuotaReached));
    }
    if s.total.saturating_add(n) > quotas.total {
        return Err((QuotaKind::Total, Refusal::InsufficientCapacity));
    }
    s.total += n;
    *s.per_user.entry(owner.user.clone()).or_insert(0) += n;
    *s.per_client.entry(owner.client).or_insert(0) += n;
    Ok(())
}

fn release_in(s: &mut State, owner: &Owner, n: u32) {
    s.total = s.total.saturating_sub(n);
    if let Some(c) = s.per_user.get_mut(&owner.user) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            s.per_user.remove(&owner.user);
        }
    }
    if let Some(c) = s.per_client.get_mut(&owner.client) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            s.per_client.remove(&owner.client);
        }
    }
}

fn reservation_token(key: &[u8; 32], counter: u64) -> [u8; 8] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(b"peercall EVEN-PORT reservation token");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let mut token = [0u8; 8];
    token.copy_from_slice(&digest[..8]);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_tokens_share_no_structure() {
        let key = [7u8; 32];
        let tokens: Vec<u64> = (1..=64)
            .map(|c| u64::from_be_bytes(reservation_token(&key, c)))
            .collect();
        // Consecutive tokens of a counter XORed with a key differ in their low bits only (0x1, 0x3, 0x7, …):
        // here each difference flips about half of the 64 bits.
        for pair in tokens.windows(2) {
            let flipped = (pair[0] ^ pair[1]).count_ones();
            assert!((12..=52).contains(&flipped), "{:x} {:x}", pair[0], pair[1]);
        }
        assert_ne!(reservation_token(&key, 1), reservation_token(&[8u8; 32], 1));
    }

    #[test]
    fn clients_are_keyed_by_ipv4_address_or_ipv6_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(
            client_key(mapped),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn draining_refuses_new_admissions_and_keeps_the_count_of_existing_ones() {
        let ledger = Ledger::default();
        let quotas = Quotas {
            user: 10,
            client: 10,
            total: 100,
        };
        let owner = Owner::new("alice", "198.51.100.7".parse().unwrap());
        ledger.admit(&owner, 1, quotas).unwrap();
        ledger.set_draining(true);
        assert!(ledger.is_draining());
        assert_eq!(
            ledger.admit(&owner, 1, quotas).unwrap_err().1,
            Refusal::InsufficientCapacity
        );
        assert_eq!(ledger.allocations(), 1, "the existing allocation stays");
        ledger.release(&owner, 1);
        assert_eq!(ledger.allocations(), 0);
        ledger.set_draining(false);
        ledger.admit(&owner, 1, quotas).unwrap();
    }

    #[test]
    fn admission_is_all_or_nothing_and_released_by_claim_and_expiry() {
        let ledger = Ledger::default();
        let quotas = Quotas {
            user: 10,
            client: 3,
            total: 100,
        };
        let t0 = Instant::now();
        let owner = Owner::new("alice", "198.51.100.7".parse().unwrap());
        ledger.admit(&owner, 2, quotas).unwrap();
        assert_eq!(
            ledger.admit(&owner, 2, quotas).unwrap_err().0,
            QuotaKind::Client
        );
        assert_eq!(
            ledger.allocations(),
            2,
            "a refused admission counts nothing"
        );
        let addr: SocketAddr = "203.0.113.1:50001".parse().unwrap();
        let key = [1u8; 32];
        let later = t0 + std::time::Duration::from_secs(30);
        // The maker claims: its admission passes to the new allocation.
        let token = ledger.reserve(addr, later, owner.clone(), &key);
        assert_eq!(ledger.claim(token, t0, &owner, quotas).unwrap(), Some(addr));
        assert_eq!(
            ledger.claim(token, t0, &owner, quotas).unwrap(),
            None,
            "a token is used once"
        );
        assert_eq!(ledger.allocations(), 2);
        // Someone else claims: admitted on their own quotas, the maker's place is freed.
        let other = Owner::new("bob", "203.0.113.9".parse().unwrap());
        ledger.admit(&owner, 1, quotas).unwrap();
        let token = ledger.reserve(addr, later, owner.clone(), &key);
        assert_eq!(ledger.claim(token, t0, &other, quotas).unwrap(), Some(addr));
        assert_eq!(ledger.allocations(), 3);
        // An expired reservation gives its place back.
        ledger.admit(&other, 1, quotas).unwrap();
        ledger.reserve(addr, t0, other.clone(), &key);
        let mut released = Vec::new();
        ledger.expire_reservations(t0, |a| released.push(a));
        assert_eq!(released, vec![addr]);
        assert_eq!(ledger.allocations(), 3);
        ledger.release(&owner, 2);
        ledger.release(&other, 1);
        assert_eq!((ledger.allocations(), ledger.users()), (0, 0));
    }
}
