//! What the cores of one server share when it runs one core per thread: allocation counts for the quotas,
//! the set of live relayed addresses (always-allowed peers), and EVEN-PORT reservations (the Allocate that
//! claims one may reach another core). Touched on the control path only — Allocate, deallocation, a peer the
//! address ranges alone would refuse — never for a relayed packet to an ordinary peer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::Refusal;

#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    per_user: HashMap<Box<str>, u32>,
    total: u32,
    relays: HashSet<SocketAddr>,
    reservations: Vec<Reservation>,
    reservation_counter: u64,
}

/// A relay port held for a later Allocate (EVEN-PORT R=1).
struct Reservation {
    token: [u8; 8],
    addr: SocketAddr,
    expires: Instant,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections below cannot panic half-way; a poisoned lock still holds consistent counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new allocation of `user` against both quotas, or says which one is reached.
    pub(super) fn admit(
        &self,
        user: &str,
        user_quota: u32,
        total_quota: u32,
    ) -> Result<(), Refusal> {
        let mut s = self.lock();
        if s.per_user.get(user).copied().unwrap_or(0) >= user_quota {
            return Err(Refusal(486, "Allocation Quota Reached"));
        }
        if s.total >= total_quota {
            return Err(Refusal(508, "Insufficient Capacity"));
        }
        s.total += 1;
        *s.per_user.entry(user.into()).or_insert(0) += 1;
        Ok(())
    }

    /// Takes back an admission that did not become an allocation, or one that ended.
    pub(super) fn release(&self, user: &str) {
        let mut s = self.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                s.per_user.remove(user);
            }
        }
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

    /// Allocations counted against the quotas.
    pub fn allocations(&self) -> u32 {
        self.lock().total
    }

    /// Users holding at least one allocation.
    pub fn users(&self) -> usize {
        self.lock().per_user.len()
    }

    /// Records a reservation of `addr` and returns its token (unique, unguessable without `key`).
    pub(super) fn reserve(&self, addr: SocketAddr, until: Instant, key: &[u8; 32]) -> [u8; 8] {
        let mut s = self.lock();
        s.reservation_counter = s.reservation_counter.wrapping_add(1);
        let mut token = s.reservation_counter.to_be_bytes();
        for (b, k) in token.iter_mut().zip(key.iter().rev()) {
            *b ^= k;
        }
        s.reservations.push(Reservation {
            token,
            addr,
            expires: until,
        });
        token
    }

    /// The reserved address of a live `token`, which is used up.
    pub(super) fn claim(&self, token: [u8; 8], now: Instant) -> Option<SocketAddr> {
        let mut s = self.lock();
        let at = s
            .reservations
            .iter()
            .position(|r| r.token == token && r.expires > now)?;
        Some(s.reservations.swap_remove(at).addr)
    }

    /// Drops expired reservations, pushing their addresses to `released`.
    pub(super) fn expire_reservations(&self, now: Instant, released: &mut Vec<SocketAddr>) {
        let mut s = self.lock();
        s.reservations.retain(|r| {
            let live = r.expires > now;
            if !live {
                released.push(r.addr);
            }
            live
        });
    }
}
