//! Which address a client id answers at (per-replica runtime state, not
//! replicated). An id is bound to the source address of its first request;
//! a request for a bound id from another address is refused, so a forged
//! datagram carrying a victim's id can neither redirect the victim's replies
//! nor reach the core. The map is bounded: when full, the least recently
//! used binding is forgotten (that client binds again on its next request),
//! as the core's client table forgets its least recent client.
//!
//! Only the leader binds. A new leader binds each client on the first request
//! it sees after the view change: a forger racing the victim there can win
//! (the residual risk of binding without authentication).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

pub struct ClientAddresses {
    /// Client id -> (bound address, last use).
    bound: HashMap<u64, (SocketAddr, u64)>,
    /// Last use -> client id: the least recently used is first.
    by_use: BTreeMap<u64, u64>,
    clock: u64,
    entries_max: usize,
}

/// A request for a bound id came from another address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundElsewhere;

impl ClientAddresses {
    pub fn new(entries_max: usize) -> ClientAddresses {
        assert!(entries_max > 0);
        ClientAddresses { bound: HashMap::new(), by_use: BTreeMap::new(), clock: 0, entries_max }
    }

    /// A request for `client_id` arrived from `from`: binds a new id (the
    /// least recently used binding goes when full), refreshes a known one,
    /// refuses another address.
    pub fn on_request(&mut self, client_id: u64, from: SocketAddr) -> Result<(), BoundElsewhere> {
        self.clock += 1;
        match self.bound.get_mut(&client_id) {
            Some((address, _)) if *address != from => return Err(BoundElsewhere),
            Some((_, last_use)) => {
                self.by_use.remove(last_use);
                *last_use = self.clock;
            }
            None => {
                if self.bound.len() >= self.entries_max {
                    let (_, oldest) = self.by_use.pop_first().expect("a full map has entries");
                    self.bound.remove(&oldest);
                }
                self.bound.insert(client_id, (from, self.clock));
            }
        }
        self.by_use.insert(self.clock, client_id);
        assert_eq!(self.bound.len(), self.by_use.len());
        assert!(self.bound.len() <= self.entries_max);
        Ok(())
    }

    /// Where replies to `client_id` go, if it is bound.
    pub fn address(&self, client_id: u64) -> Option<SocketAddr> {
        self.bound.get(&client_id).map(|(address, _)| *address)
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
        let mut map = ClientAddresses::new(4);
        assert_eq!(map.on_request(7, addr(1000)), Ok(()));
        assert_eq!(map.on_request(7, addr(1001)), Err(BoundElsewhere));
        assert_eq!(map.address(7), Some(addr(1000)));
        assert_eq!(map.on_request(7, addr(1000)), Ok(()));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn full_map_forgets_the_least_recently_used() {
        let mut map = ClientAddresses::new(2);
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
}
