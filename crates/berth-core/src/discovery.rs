//! Service discovery across nodes, the pure part.
//!
//! Every service holds a *virtual IP number*, handed out by the state
//! machine when the service is created and kept for its life: the next
//! number after the last one handed out that no service holds, wrapping
//! after [`MAX_VIRTUAL_IP`], so a removed service's number is not given to
//! a new service while containers may still hold the old name for it.
//! Each node turns a number into an address
//! of its own on each stack network it hosts (`berth_agent` says how); a
//! container resolves a service's name to that address through its
//! `/etc/hosts`, and the node's proxy, listening there on the service's
//! ports, forwards to the service's ready tasks wherever they run. So a
//! name answers the same on every node, whether a task of the service runs
//! beside the caller or not, as a Swarm service's virtual IP does.
//!
//! Only services that declare their ports (`expose`, `ports`, a virtual
//! host or `TCP_PORTS`) get a name through the proxy: a proxy cannot guess
//! which ports to listen on. Containers still reach the tasks of a stack's
//! other services on their own node by name over the stack network.

use std::collections::BTreeSet;

use crate::spec::ServiceSpec;

/// One name a container resolves through the node proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryName {
    /// What the container asks for: `web`, `shop_web`, a link's alias.
    pub name: String,
    /// The full name of the service it reaches.
    pub service: String,
    /// That service's virtual IP number.
    pub virtual_ip: u32,
}

/// A service as discovery sees it: its spec and virtual IP number.
#[derive(Debug, Clone, Copy)]
pub struct Reachable<'a> {
    pub spec: &'a ServiceSpec,
    pub virtual_ip: u32,
}

impl Reachable<'_> {
    /// Whether a node proxy can stand in for this service.
    fn is_proxied(&self) -> bool {
        self.virtual_ip > 0 && !self.spec.reachable_ports().is_empty()
    }
}

/// The names a container of `consumer` resolves through the node proxy,
/// given every service of the cluster: its links first (a link's alias
/// wins over a service of the same name, as with Docker links), then each
/// service of its own stack under its short and full names. A name is
/// listed once.
pub fn names_for(consumer: &ServiceSpec, services: &[Reachable<'_>]) -> Vec<DiscoveryName> {
    let mut names = Vec::new();
    let mut taken = BTreeSet::new();
    let mut add = |name: &str, target: &Reachable<'_>| {
        if !name.is_empty() && taken.insert(name.to_string()) {
            names.push(DiscoveryName {
                name: name.to_string(),
                service: target.spec.name.clone(),
                virtual_ip: target.virtual_ip,
            });
        }
    };
    for link in &consumer.links {
        if let Some(target) = services.iter().find(|s| s.spec.name == link.service && s.is_proxied()) {
            add(if link.alias.is_empty() { &link.service } else { &link.alias }, target);
            add(&link.service, target);
        }
    }
    if !consumer.stack.is_empty() {
        for target in services.iter().filter(|s| s.spec.stack == consumer.stack && s.is_proxied()) {
            if let Some(short) = target.spec.short_name() {
                add(short, target);
            }
            add(&target.spec.name, target);
        }
    }
    names
}

/// The services the containers of a stack (or of standalone services with
/// links, `stack` empty) may reach through the node proxy: what a node
/// hosting that stack's network listens for.
pub fn targets_of_stack<'a>(stack: &str, services: &[Reachable<'a>]) -> Vec<Reachable<'a>> {
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    for consumer in services.iter().filter(|s| s.spec.stack == stack) {
        if stack.is_empty() && consumer.spec.links.is_empty() {
            continue;
        }
        for name in names_for(consumer.spec, services) {
            if seen.insert(name.virtual_ip) {
                if let Some(target) = services.iter().find(|s| s.spec.name == name.service) {
                    targets.push(*target);
                }
            }
        }
    }
    targets
}

/// The highest virtual IP number: the addresses of the upper half of a
/// /20, the narrowest subnet Docker's default pools hand out, less its
/// first and last.
pub const MAX_VIRTUAL_IP: u32 = 2_046;

/// The first number after `last` (wrapping after [`MAX_VIRTUAL_IP`]) that
/// none of `taken` is; 0 when every number is taken.
pub fn free_virtual_ip(taken: impl IntoIterator<Item = u32>, last: u32) -> u32 {
    let taken: BTreeSet<u32> = taken.into_iter().collect();
    let start = last % MAX_VIRTUAL_IP;
    (1..=MAX_VIRTUAL_IP).map(|step| (start + step - 1) % MAX_VIRTUAL_IP + 1).find(|n| !taken.contains(n)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ServiceLink;

    fn spec(name: &str, stack: &str, expose: &[u16]) -> ServiceSpec {
        let mut spec = ServiceSpec::new(name, "busybox");
        spec.stack = stack.into();
        spec.expose = expose.to_vec();
        spec
    }

    fn names(list: &[DiscoveryName]) -> Vec<(&str, u32)> {
        list.iter().map(|n| (n.name.as_str(), n.virtual_ip)).collect()
    }

    #[test]
    fn a_stack_service_resolves_its_stack_services_that_declare_ports() {
        let web = spec("shop_web", "shop", &[8080]);
        let worker = spec("shop_worker", "shop", &[]);
        let db = spec("shop_db", "shop", &[5432]);
        let other = spec("blog_web", "blog", &[80]);
        let all = [
            Reachable { spec: &web, virtual_ip: 1 },
            Reachable { spec: &worker, virtual_ip: 2 },
            Reachable { spec: &db, virtual_ip: 3 },
            Reachable { spec: &other, virtual_ip: 4 },
        ];
        assert_eq!(
            names(&names_for(&worker, &all)),
            vec![("web", 1), ("shop_web", 1), ("db", 3), ("shop_db", 3)],
            "the worker declares no port, so it has no proxied name; another stack is not visible"
        );
        assert_eq!(targets_of_stack("shop", &all).iter().map(|t| t.virtual_ip).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn links_reach_any_service_and_their_alias_wins() {
        let mut app = spec("app", "", &[]);
        app.links = vec![ServiceLink { service: "pg".into(), alias: "db".into() }];
        let pg = spec("pg", "", &[5432]);
        let db = spec("db", "", &[3306]);
        let all = [
            Reachable { spec: &app, virtual_ip: 1 },
            Reachable { spec: &pg, virtual_ip: 2 },
            Reachable { spec: &db, virtual_ip: 3 },
        ];
        assert_eq!(names(&names_for(&app, &all)), vec![("db", 2), ("pg", 2)]);
        assert_eq!(targets_of_stack("", &all).iter().map(|t| t.virtual_ip).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_service_without_a_number_or_ports_is_left_to_the_network() {
        let mut app = spec("app", "", &[]);
        app.links = vec![ServiceLink { service: "cache".into(), alias: String::new() }];
        let cache = spec("cache", "", &[6379]);
        assert!(names_for(&app, &[Reachable { spec: &cache, virtual_ip: 0 }]).is_empty());
        assert!(names_for(&spec("lonely", "", &[80]), &[]).is_empty());
    }

    #[test]
    fn numbers_go_on_from_the_last_one_and_wrap_round() {
        assert_eq!(free_virtual_ip([], 0), 1);
        assert_eq!(free_virtual_ip([1, 2, 4], 2), 3);
        assert_eq!(free_virtual_ip([2], 3), 4, "a freed lower number waits its turn");
        assert_eq!(free_virtual_ip([1], MAX_VIRTUAL_IP), 2, "after the highest, round again");
        assert_eq!(free_virtual_ip([MAX_VIRTUAL_IP], MAX_VIRTUAL_IP - 1), 1);
        assert_eq!(free_virtual_ip(1..=MAX_VIRTUAL_IP, 7), 0, "none left");
    }
}
