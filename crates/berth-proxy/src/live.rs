//! The route table in the form requests read it: hosts normalised into hash
//! maps, each backend's live state shared by every route naming it, and a
//! round-robin counter per route. Built from a `RouteTable` and the table it
//! replaces, so backends that stay keep their pools and counters and those
//! that leave are handed back for retiring. Building does no I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::BackendState;
use crate::balance;
use crate::error::ProxyError;
use crate::routes::{parse_route_host, wildcard_suffixes, Backend, Balance, HostPattern, Route, RouteTable};

pub(crate) struct LiveRoute {
    /// The table key, for logs: a host pattern or `:port`.
    pub(crate) name: Box<str>,
    pub(crate) backends: Box<[Arc<BackendState>]>,
    balance: Balance,
    ticket: AtomicUsize,
}

impl LiveRoute {
    /// The backend to try next and its index, skipping those `skip` names.
    pub(crate) fn choose(&self, skip: impl Fn(usize) -> bool) -> Option<(usize, &Arc<BackendState>)> {
        let ticket = self.ticket.fetch_add(1, Ordering::Relaxed);
        let load = |i: usize| self.backends.get(i).map_or(usize::MAX, |b| b.in_flight());
        let index = balance::choose(self.balance, ticket, self.backends.len(), load, skip)?;
        Some((index, self.backends.get(index)?))
    }
}

#[derive(Default)]
pub(crate) struct LiveTable {
    exact: HashMap<Box<str>, Arc<LiveRoute>>,
    wildcard: HashMap<Box<str>, Arc<LiveRoute>>,
    tcp: HashMap<SocketAddr, Arc<LiveRoute>>,
    backends: HashMap<Backend, Arc<BackendState>>,
}

/// A table built and the backends of the previous one that left it.
pub(crate) struct Compiled {
    pub(crate) table: LiveTable,
    pub(crate) retired: Vec<Arc<BackendState>>,
}

impl LiveTable {
    /// The route for a request host already passed through `request_host`.
    pub(crate) fn http_route(&self, host: &str) -> Option<&Arc<LiveRoute>> {
        if let Some(route) = self.exact.get(host) {
            return Some(route);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        wildcard_suffixes(host).find_map(|suffix| self.wildcard.get(suffix))
    }

    /// The route of the TCP listener on `addr`.
    pub(crate) fn tcp_route(&self, addr: SocketAddr) -> Option<&Arc<LiveRoute>> {
        self.tcp.get(&addr)
    }

    pub(crate) fn tcp_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.tcp.keys().copied()
    }

    /// Builds the live form of `routes`, reusing `previous`'s state for every
    /// backend (same task id and address) that stays. Port routes listen on
    /// `tcp_listen_ip`.
    pub(crate) fn compile(
        routes: &RouteTable,
        previous: &LiveTable,
        tcp_listen_ip: IpAddr,
    ) -> Result<Compiled, ProxyError> {
        let mut backends: HashMap<Backend, Arc<BackendState>> = HashMap::new();
        let mut live_route = |name: String, route: &Route, before: Option<&Arc<LiveRoute>>| {
            let members = route
                .backends
                .iter()
                .map(|backend| {
                    let state =
                        backends.entry(backend.clone()).or_insert_with(|| match previous.backends.get(backend) {
                            Some(state) => Arc::clone(state),
                            None => Arc::new(BackendState::new(backend.clone())),
                        });
                    Arc::clone(state)
                })
                .collect();
            // Carrying the counter over keeps round-robin even across frequent swaps.
            let ticket = before.map_or(0, |route| route.ticket.load(Ordering::Relaxed));
            Arc::new(LiveRoute {
                name: name.into_boxed_str(),
                backends: members,
                balance: route.balance,
                ticket: AtomicUsize::new(ticket),
            })
        };

        let mut table = LiveTable::default();
        // Exact keys never start with '.', wildcard suffixes always do, so one
        // map of normalised keys finds duplicates of either kind.
        let mut first_key: HashMap<String, &String> = HashMap::new();
        for (host, route) in &routes.http {
            let (wildcard, key) = match parse_route_host(host)? {
                HostPattern::Exact(name) => (false, name),
                HostPattern::Wildcard(suffix) => (true, suffix),
            };
            if let Some(first) = first_key.insert(key.clone(), host) {
                return Err(ProxyError::DuplicateHost { first: first.clone(), second: host.clone() });
            }
            let (map, before) = if wildcard {
                (&mut table.wildcard, previous.wildcard.get(key.as_str()))
            } else {
                (&mut table.exact, previous.exact.get(key.as_str()))
            };
            map.insert(key.into_boxed_str(), live_route(host.clone(), route, before));
        }
        let by_port = routes.tcp.iter().map(|(&port, route)| (SocketAddr::new(tcp_listen_ip, port), route));
        for (addr, route) in by_port.chain(routes.tcp_at.iter().map(|(&addr, route)| (addr, route))) {
            if addr.port() == 0 {
                return Err(ProxyError::InvalidPort);
            }
            if table.tcp.contains_key(&addr) {
                return Err(ProxyError::DuplicateTcpAddress { addr });
            }
            let live = live_route(addr.to_string(), route, previous.tcp.get(&addr));
            table.tcp.insert(addr, live);
        }
        let retired = previous
            .backends
            .iter()
            .filter(|(backend, _)| !backends.contains_key(*backend))
            .map(|(_, state)| Arc::clone(state))
            .collect();
        table.backends = backends;
        Ok(Compiled { table, retired })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn backend(id: &str, port: u16) -> Backend {
        Backend { id: id.into(), addr: ([127, 0, 0, 1], port).into() }
    }

    fn route(backends: Vec<Backend>) -> Route {
        Route { backends, balance: Balance::RoundRobin }
    }

    fn http(entries: &[(&str, Route)]) -> RouteTable {
        RouteTable { http: entries.iter().map(|(h, r)| (h.to_string(), r.clone())).collect(), ..RouteTable::default() }
    }

    const ANY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

    fn compile(routes: &RouteTable, previous: &LiveTable) -> Compiled {
        LiveTable::compile(routes, previous, ANY).unwrap_or_else(|e| panic!("{e}"))
    }

    fn served_by(table: &LiveTable, host: &str) -> Option<String> {
        table.http_route(host).map(|r| r.name.to_string())
    }

    #[test]
    fn exact_hosts_beat_wildcards_and_longer_wildcards_beat_shorter() {
        let a = route(vec![backend("a", 1)]);
        let routes = http(&[
            ("Web.Test", a.clone()),
            ("*.test", a.clone()),
            ("*.Example.test", a.clone()),
            ("api.example.test", a.clone()),
        ]);
        let table = compile(&routes, &LiveTable::default()).table;
        assert_eq!(served_by(&table, "web.test").as_deref(), Some("Web.Test"));
        assert_eq!(served_by(&table, "api.example.test").as_deref(), Some("api.example.test"));
        assert_eq!(served_by(&table, "x.example.test").as_deref(), Some("*.Example.test"));
        assert_eq!(served_by(&table, "a.b.example.test").as_deref(), Some("*.Example.test"));
        assert_eq!(served_by(&table, "example.test").as_deref(), Some("*.test"));
        assert_eq!(served_by(&table, "other.org"), None);
        assert_eq!(served_by(&table, "test"), None);
    }

    #[test]
    fn two_spellings_of_one_host_are_refused() {
        let a = route(vec![backend("a", 1)]);
        let err = LiveTable::compile(&http(&[("web.test", a.clone()), ("WEB.test.", a)]), &LiveTable::default(), ANY);
        assert!(matches!(err, Err(ProxyError::DuplicateHost { .. })), "{:?}", err.err());
    }

    #[test]
    fn tcp_port_zero_is_refused() {
        let routes = RouteTable { tcp: BTreeMap::from([(0, route(vec![backend("a", 1)]))]), ..RouteTable::default() };
        assert!(matches!(LiveTable::compile(&routes, &LiveTable::default(), ANY), Err(ProxyError::InvalidPort)));
    }

    #[test]
    fn a_port_route_and_an_address_route_on_the_same_address_are_refused() {
        let a = route(vec![backend("a", 1)]);
        let routes = RouteTable {
            tcp: BTreeMap::from([(7000, a.clone())]),
            tcp_at: BTreeMap::from([(SocketAddr::new(ANY, 7000), a.clone())]),
            ..RouteTable::default()
        };
        let err = LiveTable::compile(&routes, &LiveTable::default(), ANY);
        assert!(matches!(err, Err(ProxyError::DuplicateTcpAddress { .. })), "{:?}", err.err());
        let vip: SocketAddr = "172.20.128.1:7000".parse().unwrap_or_else(|e| panic!("{e}"));
        let routes = RouteTable { tcp_at: BTreeMap::from([(vip, a.clone())]), ..routes };
        let table = compile(&routes, &LiveTable::default()).table;
        assert!(table.tcp_route(vip).is_some() && table.tcp_route(SocketAddr::new(ANY, 7000)).is_some());
    }

    #[test]
    fn backends_that_stay_keep_their_state_and_those_that_leave_are_retired() {
        let (a, b, c) = (backend("a", 1), backend("b", 2), backend("c", 3));
        let first = compile(&http(&[("web.test", route(vec![a.clone(), b.clone()]))]), &LiveTable::default()).table;
        let a_state = Arc::clone(&first.backends[&a]);
        let b_state = Arc::clone(&first.backends[&b]);
        let second = compile(&http(&[("web.test", route(vec![a.clone(), c.clone()]))]), &first);
        assert!(Arc::ptr_eq(&second.table.backends[&a], &a_state));
        assert_eq!(second.retired.len(), 1);
        assert!(Arc::ptr_eq(&second.retired[0], &b_state));
        // A new task on b's address is a new backend, with a pool of its own.
        let b2 = backend("b2", 2);
        let third = compile(&http(&[("web.test", route(vec![b2.clone()]))]), &second.table);
        assert!(!Arc::ptr_eq(&third.table.backends[&b2], &b_state));
        assert_eq!(third.retired.len(), 2);
    }

    #[test]
    fn one_backend_in_two_routes_shares_its_state() {
        let a = backend("a", 1);
        let routes = RouteTable {
            http: BTreeMap::from([("web.test".to_string(), route(vec![a.clone()]))]),
            tcp: BTreeMap::from([(7000, route(vec![a.clone()]))]),
            ..RouteTable::default()
        };
        let table = compile(&routes, &LiveTable::default()).table;
        let via_http = table.http_route("web.test").map(|r| Arc::clone(&r.backends[0]));
        let via_tcp = table.tcp_route(SocketAddr::new(ANY, 7000)).map(|r| Arc::clone(&r.backends[0]));
        assert!(via_http.zip(via_tcp).is_some_and(|(h, t)| Arc::ptr_eq(&h, &t)));
    }
}
