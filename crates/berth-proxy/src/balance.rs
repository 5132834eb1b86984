//! Choosing a backend of a route: round-robin or least-connections, skipping
//! the backends a request has already failed on. A pure function of the
//! route's counters, which the caller reads and passes in.

use crate::routes::Balance;

/// The index of the backend to try next, or `None` when every backend is
/// skipped. `ticket` is the route's round-robin counter (taken once per
/// choice), `load(i)` the requests or connections in flight on backend `i`.
pub(crate) fn choose(
    balance: Balance,
    ticket: usize,
    len: usize,
    load: impl Fn(usize) -> usize,
    skip: impl Fn(usize) -> bool,
) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let start = ticket % len;
    let candidates = (0..len).map(|offset| (start + offset) % len).filter(|&i| !skip(i));
    match balance {
        Balance::RoundRobin => candidates.into_iter().next(),
        // Starting the scan at the ticket spreads ties round-robin; `min_by_key`
        // keeps the first of equal loads.
        Balance::LeastConnections => candidates.min_by_key(|&i| load(i)),
    }
}

/// The backends one request or connection has failed on, by index in its
/// route; at most `N`, one per attempt.
pub(crate) struct Failed<const N: usize> {
    indices: [usize; N],
    len: usize,
}

impl<const N: usize> Default for Failed<N> {
    fn default() -> Self {
        Failed { indices: [0; N], len: 0 }
    }
}

impl<const N: usize> Failed<N> {
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.indices[..self.len].contains(&index)
    }

    pub(crate) fn push(&mut self, index: usize) {
        if let Some(slot) = self.indices.get_mut(self.len) {
            *slot = index;
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_each_backend_in_turn() {
        let picks: Vec<_> = (0..6).map(|t| choose(Balance::RoundRobin, t, 3, |_| 0, |_| false)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn round_robin_skips_failed_backends() {
        assert_eq!(choose(Balance::RoundRobin, 1, 3, |_| 0, |i| i == 1), Some(2));
        assert_eq!(choose(Balance::RoundRobin, 2, 3, |_| 0, |i| i != 0), Some(0));
        assert_eq!(choose(Balance::RoundRobin, 0, 3, |_| 0, |_| true), None);
    }

    #[test]
    fn least_connections_takes_the_least_loaded_and_spreads_ties() {
        let load = [3, 0, 1];
        assert_eq!(choose(Balance::LeastConnections, 0, 3, |i| load[i], |_| false), Some(1));
        assert_eq!(choose(Balance::LeastConnections, 0, 3, |i| load[i], |i| i == 1), Some(2));
        let idle = [0, 0, 0];
        let picks: Vec<_> = (0..3).map(|t| choose(Balance::LeastConnections, t, 3, |i| idle[i], |_| false)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn an_empty_route_has_no_choice() {
        assert_eq!(choose(Balance::RoundRobin, 7, 0, |_| 0, |_| false), None);
        assert_eq!(choose(Balance::LeastConnections, 7, 0, |_| 0, |_| false), None);
    }
}
