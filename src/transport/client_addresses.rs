//! Which address a client id answers at (per-replica runtime state, not
//! replicated). An id is bound to the source address of its first request;
//! a request for a bound id from another address is refused, so a forged
//! datagram carrying a victim's id can neither redirect the victim's replies
//! nor reach the core. The map is bounded: when full, the least recently
//! used binding is forgotten (that client binds again on its next request),
//! as the core's client table forgets its least recent client.
//!
//! Each source address (IP and port: one client socket) holds at most
//! `per_address_max` bindings; a new id from an address at its quota
//! forgets that address's own least recently used binding, never another
//! address's. Without it, one socket sending 65,536 fresh ids evicted every
//! other client's binding, so each victim's next request had to bind again
//! and a forger waiting for that moment won it for sure.
//!
//! Only the leader binds. A new leader binds each client on the first request
//! it sees after the view change: a forger racing the victim there can win
//! (the residual risk of binding without authentication). So can a flood
//! from many source addresses (ports are free): the quota bounds what one
//! socket evicts, not what a host with many sockets evicts.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Most client ids one source address keeps bound: 1/16 of the replica's
/// 65,536 bindings, so a flood from one socket forgets at most that many
/// (the least recently used) of other clients' bindings, and at least 16
/// sockets fit with full quotas. An honest socket needs one id per session
/// it drives (`electrode client --sessions`, one request outstanding each,
/// capped at this), and the bench runs 1 to 16; an address beyond its
/// quota would forget the binding of a request still in flight and its
/// reply would be dropped.
pub const IDS_PER_ADDRESS_MAX: usize = 4096;

pub struct ClientAddresses {
    /// Client id -> (bound address, last use).
    bound: HashMap<u64, (SocketAddr, u64)>,
    /// Last use -> client id: the least recently used is first.
    by_use: BTreeMap<u64, u64>,
    /// Per source address, last use -> client id of its bindings: the
    /// address's least recently used is first. No empty maps are kept, so
    /// this holds at most as many addresses as `bound` holds ids.
    by_address: HashMap<SocketAddr, BTreeMap<u64, u64>>,
    clock: u64,
    entries_max: usize,
    per_address_max: usize,
}

/// A request for a bound id came from another address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundElsewhere;

impl ClientAddresses {
    pub fn new(entries_max: usize, per_address_max: usize) -> ClientAddresses {
        assert!(entries_max > 0);
        assert!(per_address_max > 0);
        assert!(per_address_max <= entries_max);
        ClientAddresses {
            bound: HashMap::new(),
            by_use: BTreeMap::new(),
            by_address: HashMap::new(),
            clock: 0,
            entries_max,
            per_address_max,
        }
    }

    /// A request for `client_id` arrived from `from`: binds a new id (when
    /// `from` holds its quota, its own least recently used binding goes;
    /// else, when full, the least recently used of all), refreshes a known
    /// one, refuses another address. O(log n).
    pub fn on_request(&mut self, client_id: u64, from: SocketAddr) -> Result<(), BoundElsewhere> {
        self.clock += 1;
        match self.bound.get_mut(&client_id) {
            Some((address, _)) if *address != from => return Err(BoundElsewhere),
            Some((_, last_use)) => {
                let previous = std::mem::replace(last_use, self.clock);
                self.by_use.remove(&previous);
                let own = self.by_address.get_mut(&from).expect("a bound id's address has a map");
                own.remove(&previous);
            }
            None => {
                let at_quota =
                    self.by_address.get(&from).is_some_and(|own| own.len() >= self.per_address_max);
                if at_quota {
                    let own = self.by_address.get_mut(&from).expect("checked above");
                    let (_, oldest) = own.pop_first().expect("an address at its quota has entries");
                    self.forget(oldest);
                } else if self.bound.len() >= self.entries_max {
                    let (_, oldest) = self.by_use.first_key_value().expect("a full map has entries");
                    self.forget(*oldest);
                }
                self.bound.insert(client_id, (from, self.clock));
            }
        }
        self.by_use.insert(self.clock, client_id);
        let own = self.by_address.entry(from).or_default();
        own.insert(self.clock, client_id);
        assert!(own.len() <= self.per_address_max);
        assert_eq!(self.bound.len(), self.by_use.len());
        assert!(self.bound.len() <= self.entries_max);
        assert!(self.by_address.len() <= self.bound.len());
        Ok(())
    }

    /// Removes `client_id`'s binding from every index (those already
    /// popped from are left as they are).
    fn forget(&mut self, client_id: u64) {
        let (address, last_use) = self.bound.remove(&client_id).expect("forgets a bound id");
        self.by_use.remove(&last_use);
        if let Some(own) = self.by_address.get_mut(&address) {
            own.remove(&last_use);
            if own.is_empty() {
                self.by_address.remove(&address);
            }
        }
    }

    /// Where replies to `client_id` go, if it is bound.
    pub fn address(&self, client_id: u64) -> Option<SocketAddr> {
        self.bound.get(&client_id).map(|(address, _)| *address)
    }

    /// How many ids are bound to `address`.
    pub fn bound_at(&self, address: SocketAddr) -> usize {
        self.by_address.get(&address).map_or(0, BTreeMap::len)
    }

    pub fn len(&self) -> usize {
        self.bound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn first_request_binds_and_another_address_is_refused() {
        let mut map = ClientAddresses::new(4, 4);
        assert_eq!(map.on_request(7, addr(1000)), Ok(()));
        assert_eq!(map.on_request(7, addr(1001)), Err(BoundElsewhere));
        assert_eq!(map.address(7), Some(addr(1000)));
        assert_eq!(map.on_request(7, addr(1000)), Ok(()));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn full_map_forgets_the_least_recently_used() {
        let mut map = ClientAddresses::new(2, 2);
        map.on_request(1, addr(1)).unwrap();
        map.on_request(2, addr(2)).unwrap();
        map.on_request(1, addr(1)).unwrap(); // 2 is now the least recent.
        map.on_request(3, addr(3)).unwrap();
        assert_eq!(map.address(2), None);
        assert_eq!(map.address(1), Some(addr(1)));
        assert_eq!(map.address(3), Some(addr(3)));
        // A forgotten id binds again, wherever its next request comes from.
        map.on_request(2, addr(22)).unwrap();
        assert_eq!(map.address(2), Some(addr(22)));
        assert_eq!(map.len(), 2);
    }

    /// Checks the indexes agree: every binding is in `by_use` and in its
    /// address's map under the same last use, and no address map is empty.
    fn consistent(map: &ClientAddresses) {
        assert_eq!(map.bound.len(), map.by_use.len());
        let mut per_address = 0;
        for (address, own) in &map.by_address {
            assert!(!own.is_empty() && own.len() <= map.per_address_max);
            for (last_use, id) in own {
                assert_eq!(map.bound.get(id), Some(&(*address, *last_use)));
                assert_eq!(map.by_use.get(last_use), Some(id));
            }
            per_address += own.len();
        }
        assert_eq!(per_address, map.bound.len());
    }

    #[test]
    fn a_flood_of_fresh_ids_from_one_address_evicts_only_its_own() {
        // Room to spare: 10 clients of 4 ids each, then one address floods.
        let mut map = ClientAddresses::new(64, 8);
        for id in 0..40u64 {
            map.on_request(id, addr(1000 + (id / 4) as u16)).unwrap();
        }
        let flooder = addr(9);
        for id in 1_000..101_000u64 {
            map.on_request(id, flooder).unwrap();
        }
        consistent(&map);
        for id in 0..40u64 {
            assert_eq!(map.address(id), Some(addr(1000 + (id / 4) as u16)), "id {id} kept");
        }
        // The flooder keeps its quota, its most recent ids.
        assert_eq!(map.bound_at(flooder), 8);
        assert_eq!(map.len(), 48);
        for id in 100_992..101_000u64 {
            assert_eq!(map.address(id), Some(flooder));
        }
        assert_eq!(map.address(100_991), None);
    }

    #[test]
    fn a_flood_into_a_full_map_takes_at_most_its_quota_of_the_least_recent() {
        let mut map = ClientAddresses::new(64, 8);
        for id in 0..64u64 {
            map.on_request(id, addr(1000 + (id % 16) as u16)).unwrap();
        }
        // Ids 0..8 are now the most recent: the flood must not reach them.
        for id in 0..8u64 {
            map.on_request(id, addr(1000 + (id % 16) as u16)).unwrap();
        }
        for id in 1_000..20_000u64 {
            map.on_request(id, addr(9)).unwrap();
        }
        consistent(&map);
        assert_eq!(map.len(), 64);
        assert_eq!(map.bound_at(addr(9)), 8);
        // The quota's worth of others' bindings went, least recent first:
        // 8..16 (ids 0..8 were refreshed after them).
        for id in 8..16u64 {
            assert_eq!(map.address(id), None, "id {id} was the least recent");
        }
        for id in (0..8u64).chain(16..64) {
            assert_eq!(map.address(id), Some(addr(1000 + (id % 16) as u16)), "id {id} kept");
        }
    }

    #[test]
    fn an_address_at_its_quota_forgets_its_own_least_recently_used() {
        let mut map = ClientAddresses::new(16, 3);
        map.on_request(1, addr(1)).unwrap();
        map.on_request(2, addr(1)).unwrap();
        map.on_request(3, addr(1)).unwrap();
        map.on_request(1, addr(1)).unwrap(); // 2 is now the address's least recent.
        map.on_request(50, addr(2)).unwrap(); // another address's: irrelevant
        map.on_request(4, addr(1)).unwrap();
        consistent(&map);
        assert_eq!(map.address(2), None);
        for id in [1, 3, 4] {
            assert_eq!(map.address(id), Some(addr(1)));
        }
        assert_eq!(map.address(50), Some(addr(2)));
        // A forgotten id binds again from anywhere, and counts for its new
        // address only.
        map.on_request(2, addr(3)).unwrap();
        assert_eq!((map.bound_at(addr(1)), map.bound_at(addr(3))), (3, 1));
        // A quota of one: each new id replaces the last.
        let mut map = ClientAddresses::new(4, 1);
        for id in 0..10u64 {
            map.on_request(id, addr(1)).unwrap();
            consistent(&map);
        }
        assert_eq!((map.len(), map.address(9)), (1, Some(addr(1))));
    }

    #[test]
    fn at_the_replica_sizes_one_socket_flooding_cannot_unbind_a_thousand_clients() {
        let mut map = ClientAddresses::new(1 << 16, IDS_PER_ADDRESS_MAX);
        // A thousand client sockets with four sessions each.
        let client = |id: u64| SocketAddr::from(([10, 1, (id / 4 / 250) as u8, (id / 4 % 250) as u8], 4000));
        for id in 0..4_000u64 {
            map.on_request(id, client(id)).unwrap();
        }
        let flooder = SocketAddr::from(([10, 9, 9, 9], 6666));
        for id in 1 << 32..(1 << 32) + (1 << 17) {
            map.on_request(id, flooder).unwrap();
        }
        assert_eq!(map.bound_at(flooder), IDS_PER_ADDRESS_MAX);
        assert_eq!(map.len(), 4_000 + IDS_PER_ADDRESS_MAX);
        assert!((0..4_000u64).all(|id| map.address(id) == Some(client(id))));
        consistent(&map);
    }
}
