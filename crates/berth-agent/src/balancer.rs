//! The node's load balancer: runs `berth_proxy` and keeps its routes in
//! line with the cluster by following the managers' `Watch` stream (one
//! list, then every change), with no reload. A service is routed when it
//! names virtual hosts (`VIRTUAL_HOST`, HTTP by Host header) or TCP ports
//! (`TCP_PORTS`, as Tutum's haproxy read them); its backends are the
//! tasks that are meant to run and are ready (running, and healthy when
//! checked), at the host port their agent published on their node. A task
//! told to stop leaves the table at once, before its agent stops it.
//!
//! The same proxy carries discovery across nodes (`berth_core::discovery`):
//! on each stack network of this node it listens at the virtual IP of every
//! service the stack's containers may name, on that service's declared
//! ports, and forwards to the service's ready tasks on any node.
//!
//! `routes_from` is the pure part: the cluster's records and this node's
//! virtual IP ranges in, a route table out.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use berth_core::discovery::{targets_of_stack, Reachable};
use berth_core::ServiceSpec;
use berth_proto::v1 as pb;
use berth_proto::v1::cluster_api_client::ClusterApiClient;
use berth_proto::v1::watch_event::Change;
use berth_proxy::{Backend, Balance, ProxyConfig, ProxyHandle, Route, RouteTable};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::runtime::{stack_of_network, VipRanges};

/// Wait before following again after the managers could not be reached.
pub const RECONNECT_MS: u64 = 500;
/// Changes arriving this close together are applied as one route table.
pub const BATCH_MS: u64 = 20;
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// The cluster as the balancer needs it, kept current from `Watch`.
#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    pub services: BTreeMap<String, pb::Service>,
    pub tasks: BTreeMap<String, pb::Task>,
    pub nodes: BTreeMap<String, pb::Node>,
}

impl ClusterView {
    /// Applies one change; says whether routes may have changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::ServiceUpserted(s) => {
                self.services.insert(s.id.clone(), s);
            }
            Change::ServiceRemoved(s) => {
                self.services.remove(&s.id);
            }
            Change::NodeUpserted(n) => {
                self.nodes.insert(n.id.clone(), n);
            }
            Change::NodeRemoved(id) => {
                self.nodes.remove(&id);
            }
            Change::TaskUpserted(t) => {
                self.tasks.insert(t.id.clone(), t);
            }
            Change::TaskRemoved(t) => {
                self.tasks.remove(&t.id);
            }
            Change::Resync(_) => return false,
        }
        true
    }
}

/// `BALANCE=leastconn` as Tutum's haproxy read it; round-robin otherwise.
fn balance(spec: &ServiceSpec) -> Balance {
    match spec.env_value("BALANCE") {
        Some("leastconn" | "least-connections") => Balance::LeastConnections,
        _ => Balance::RoundRobin,
    }
}

/// The node's IP as the managers recorded it (the address its agent
/// connected from, or the one it was given).
fn node_ip(node: &pb::Node) -> Option<IpAddr> {
    let address = node.address.trim();
    address.parse::<SocketAddr>().map(|a| a.ip()).ok().or_else(|| address.parse::<IpAddr>().ok())
}

/// The route table for the cluster as `view` records it, with the virtual
/// IPs of this node's stack networks, `ranges`.
pub fn routes_from(view: &ClusterView, ranges: &VipRanges) -> RouteTable {
    let mut by_service: BTreeMap<&str, Vec<&pb::Task>> = BTreeMap::new();
    for task in view.tasks.values() {
        if task.desired_state == "running" && task.ready && !task.endpoints.is_empty() {
            by_service.entry(task.service_id.as_str()).or_default().push(task);
        }
    }
    let backends = |service: &pb::Service, port: u16| -> Vec<Backend> {
        let tasks = by_service.get(service.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let mut backends: Vec<Backend> = tasks
            .iter()
            .filter_map(|task| {
                let ip = view.nodes.get(&task.node_id).and_then(node_ip)?;
                let endpoint =
                    task.endpoints.iter().find(|e| e.container_port == u32::from(port) && e.protocol != "udp")?;
                let host_port = u16::try_from(endpoint.host_port).ok()?;
                Some(Backend { id: task.id.clone(), addr: SocketAddr::new(ip, host_port) })
            })
            .collect();
        backends.sort_by(|a, b| a.id.cmp(&b.id));
        backends
    };
    // The spec's own reading of its hosts and ports, the one its tasks'
    // agents published by, so the two never disagree.
    let services: Vec<(&pb::Service, ServiceSpec)> = view
        .services
        .values()
        .filter_map(|s| Some((s, s.spec.clone().and_then(|spec| berth_api::spec_from_proto(spec).ok())?)))
        .collect();
    let mut table = RouteTable::default();
    for (service, spec) in &services {
        let balance = balance(spec);
        if let Some(port) = spec.http_port() {
            for host in spec.virtual_host_names() {
                table.http.insert(host.to_ascii_lowercase(), Route { backends: backends(service, port), balance });
            }
        }
        for port in spec.tcp_ports() {
            table.tcp.insert(port, Route { backends: backends(service, port), balance });
        }
    }
    let reachable: Vec<Reachable<'_>> =
        services.iter().map(|(service, spec)| Reachable { spec, virtual_ip: service.virtual_ip }).collect();
    for (key, range) in ranges {
        for target in targets_of_stack(stack_of_network(key), &reachable) {
            let Some(ip) = range.address(target.virtual_ip) else { continue };
            let Some((service, _)) = services.iter().find(|(_, spec)| spec.name == target.spec.name) else {
                continue;
            };
            let balance = balance(target.spec);
            for port in target.spec.reachable_ports() {
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                table.tcp_at.insert(addr, Route { backends: backends(service, port), balance });
            }
        }
    }
    table
}

/// Starts the proxy, serving HTTP on `http_listen` if given, and follows
/// the cluster and this node's virtual IP `ranges` until `shutdown`. A
/// proxy that cannot bind its port is reported and left off: the agent's
/// own work does not depend on it.
pub async fn run(
    http_listen: Option<SocketAddr>,
    managers: Vec<String>,
    ranges: watch::Receiver<VipRanges>,
    shutdown: CancellationToken,
) {
    let config = ProxyConfig { http_listen, ..ProxyConfig::default() };
    let proxy = match berth_proxy::start(config, shutdown.clone()).await {
        Ok(proxy) => proxy,
        Err(e) => {
            warn!(error = %e, ?http_listen, "the load balancer is off: cannot start it (see --proxy-http-listen)");
            return;
        }
    };
    info!(http = ?proxy.http_addr(), "load balancer listening");
    let mut turn = 0usize;
    while !shutdown.is_cancelled() {
        let manager = &managers[turn % managers.len().max(1)];
        turn += 1;
        if let Err(e) = follow(manager, &proxy, ranges.clone(), &shutdown).await {
            debug!(%manager, error = %e, "load balancer lost the cluster; following again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(RECONNECT_MS)) => {}
        }
    }
}

/// Lists the cluster, then applies its changes and those of `ranges`, until
/// the stream ends.
async fn follow(
    manager: &str,
    proxy: &ProxyHandle,
    mut ranges: watch::Receiver<VipRanges>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("http://{manager}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = ClusterApiClient::new(channel);
    // The watch starts at the lowest index the lists were read at: a change
    // in between is applied twice, harmlessly, rather than missed.
    let local = pb::ReadConsistency::Local as i32;
    let services = client
        .list_services(pb::ListServicesRequest { consistency: local })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let tasks = client
        .list_tasks(pb::ListTasksRequest { service: String::new(), consistency: local })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let nodes =
        client.list_nodes(pb::ListNodesRequest { consistency: local }).await.map_err(|e| e.to_string())?.into_inner();
    let from_index = services.index.min(tasks.index).min(nodes.index);
    let mut view = ClusterView {
        services: services.services.into_iter().map(|s| (s.id.clone(), s)).collect(),
        tasks: tasks.tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
        nodes: nodes.nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
    };
    let current = ranges.borrow_and_update().clone();
    publish(proxy, &view, &current).await;
    // A runtime without virtual IPs drops its sender: nothing will change.
    let mut ranges_open = true;
    let mut stream =
        client.watch(pb::WatchRequest { from_index: from_index.max(1) }).await.map_err(|e| e.to_string())?.into_inner();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = ranges.changed(), if ranges_open => {
                ranges_open = changed.is_ok();
                let current = ranges.borrow_and_update().clone();
                publish(proxy, &view, &current).await;
                continue;
            }
            event = stream.message() => event.map_err(|e| e.to_string())?.ok_or("the watch ended")?,
        };
        let Some(change) = event.change else { continue };
        if matches!(change, Change::Resync(_)) {
            return Err("the watch fell behind; listing again".into());
        }
        let mut changed = view.apply(change);
        // Take the rest of a burst before rebuilding the table once.
        let settle = tokio::time::sleep(Duration::from_millis(BATCH_MS));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                event = stream.message() => match event.map_err(|e| e.to_string())? {
                    Some(pb::WatchEvent { change: Some(Change::Resync(_)), .. }) => return Err("resync".into()),
                    Some(pb::WatchEvent { change: Some(change), .. }) => changed |= view.apply(change),
                    Some(_) => {}
                    None => return Err("the watch ended".into()),
                },
            }
        }
        if changed {
            let current = ranges.borrow_and_update().clone();
            publish(proxy, &view, &current).await;
        }
    }
}

async fn publish(proxy: &ProxyHandle, view: &ClusterView, ranges: &VipRanges) {
    let table = routes_from(view, ranges);
    debug!(http = table.http.len(), tcp = table.tcp.len(), virtual_ips = table.tcp_at.len(), "load balancer routes");
    if let Err(e) = proxy.set_routes(table).await {
        warn!(error = %e, "the load balancer refused a route table");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, env: &[(&str, &str)], expose: &[i64]) -> pb::Service {
        pb::Service {
            id: id.into(),
            name: id.into(),
            spec: Some(pb::ServiceSpec {
                name: id.into(),
                image: "busybox".into(),
                env: env.iter().map(|(n, v)| pb::EnvVar { name: n.to_string(), value: v.to_string() }).collect(),
                expose: expose.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, service: &str, node: &str, ready: bool, desired: &str, port: u32, host_port: u32) -> pb::Task {
        pb::Task {
            id: id.into(),
            service_id: service.into(),
            node_id: node.into(),
            desired_state: desired.into(),
            state: "running".into(),
            ready,
            endpoints: vec![pb::Endpoint { container_port: port, host_port, protocol: "tcp".into() }],
            ..Default::default()
        }
    }

    fn view() -> ClusterView {
        let mut view = ClusterView::default();
        view.nodes
            .insert("n1".into(), pb::Node { id: "n1".into(), address: "10.0.0.1:5555".into(), ..Default::default() });
        view.nodes.insert("n2".into(), pb::Node { id: "n2".into(), address: "10.0.0.2".into(), ..Default::default() });
        view
    }

    #[test]
    fn ready_running_tasks_become_backends_of_their_virtual_hosts() {
        let mut view = view();
        view.services.insert("web".into(), service("web", &[("VIRTUAL_HOST", "Shop.test, www.shop.test")], &[8080]));
        view.tasks.insert("t1".into(), task("t1", "web", "n1", true, "running", 8080, 32001));
        view.tasks.insert("t2".into(), task("t2", "web", "n2", true, "running", 8080, 32002));
        view.tasks.insert("t3".into(), task("t3", "web", "n2", false, "running", 8080, 32003));
        view.tasks.insert("t4".into(), task("t4", "web", "n1", true, "shutdown", 8080, 32004));
        let table = routes_from(&view, &VipRanges::new());
        let route = &table.http["shop.test"];
        let addrs: Vec<String> = route.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, vec!["10.0.0.1:32001", "10.0.0.2:32002"], "not ready and stopping tasks are left out");
        assert!(table.http.contains_key("www.shop.test"));
    }

    #[test]
    fn tcp_ports_and_balance_come_from_the_service_environment() {
        let mut view = view();
        view.services.insert("db".into(), service("db", &[("TCP_PORTS", "5432, x"), ("BALANCE", "leastconn")], &[]));
        view.tasks.insert("t1".into(), task("t1", "db", "n1", true, "running", 5432, 31000));
        let table = routes_from(&view, &VipRanges::new());
        assert_eq!(table.tcp[&5432].backends.len(), 1);
        assert_eq!(table.tcp[&5432].balance, Balance::LeastConnections);
        assert!(table.http.is_empty());
    }

    #[test]
    fn a_stack_network_of_this_node_gets_its_services_virtual_ips() {
        let mut view = view();
        let mut api = service("shop_api", &[], &[8080]);
        api.virtual_ip = 3;
        if let Some(spec) = api.spec.as_mut() {
            spec.stack = "shop".into();
        }
        let mut other = service("blog_web", &[], &[80]);
        other.virtual_ip = 4;
        view.services.insert("shop_api".into(), api);
        view.services.insert("blog_web".into(), other);
        view.tasks.insert("t1".into(), task("t1", "shop_api", "n2", true, "running", 8080, 32005));
        let block = "172.20.128.0/17".parse().unwrap_or_else(|e| panic!("{e}"));
        let ranges = VipRanges::from([("shop".to_string(), crate::runtime::VipRange { bridge: "br-x".into(), block })]);
        let table = routes_from(&view, &ranges);
        let vip: SocketAddr = "172.20.128.3:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table.tcp_at.keys().collect::<Vec<_>>(), vec![&vip], "only the stack's own service: {table:?}");
        let backends: Vec<String> = table.tcp_at[&vip].backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(backends, vec!["10.0.0.2:32005"], "the task on the other node, at its published port");
        assert!(routes_from(&view, &VipRanges::new()).tcp_at.is_empty(), "no stack network here, no listener");
    }

    #[test]
    fn a_service_without_virtual_hosts_or_tcp_ports_is_not_routed() {
        let mut view = view();
        view.services.insert("worker".into(), service("worker", &[], &[]));
        view.tasks.insert("t1".into(), task("t1", "worker", "n1", true, "running", 80, 31000));
        assert_eq!(routes_from(&view, &VipRanges::new()), RouteTable::default());
    }
}
