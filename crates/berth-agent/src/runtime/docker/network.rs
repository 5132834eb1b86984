//! Stack networks on one Docker Engine: found or created when a stack's
//! task starts, brought back to one when agents raced to create it, and
//! removed once no container names it any more.
//!
//! Each node has a network of its own per stack, even when several agents
//! share an engine (as in tests), and each network's subnet is split: the
//! engine picks a free subnet for a probe network, which is removed and
//! created again under the stack's name with containers confined to the
//! lower half, the upper half holding the node's virtual IPs (`vip`). A
//! virtual IP is assigned to the network's bridge (with `ip addr add`) the
//! first time a container is given a name resolving to it. The networks
//! with virtual IPs are published to the node proxy through a watch.
//!
//! Engines before API 1.44 (Docker 20.10 among them) do not keep network
//! names unique: two agents sharing an engine that both find a stack's
//! network missing both create one, and both succeed, even with
//! `CheckDuplicate`. So berth attaches containers by network id, and
//! whoever finds several berth networks of one name keeps one of them —
//! one with containers if there is one, else the smallest id, so agents
//! that see the same networks keep the same one — and removes the others,
//! which the engine refuses for a network that is in use. Newer engines
//! answer the second creation with a conflict, which counts as success.
//!
//! A network can vanish under a container that was created on it but not
//! started yet (another agent removed it as a duplicate, or as unused), and
//! a start fails while a name is ambiguous. `DockerRuntime::create_and_start`
//! therefore starts over on whatever network is left when the network
//! changed during a failed attempt, a bounded number of times. Within one
//! runtime, a lock keeps the removal of an unused network from running
//! while a stack's container is being started.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use bollard::Docker;
use tokio::sync::{watch, Mutex, RwLock, RwLockReadGuard};

use super::{convert, engine_error, status_of, HTTP_CONFLICT, HTTP_FORBIDDEN, HTTP_NOT_FOUND};
use crate::runtime::{stack_network_name, RuntimeError, StackNetwork, VipRange, VipRanges, LABEL_NODE, LABEL_STACK};

/// The suffix of the short-lived network whose subnet the engine picks.
const PROBE_SUFFIX: &str = "-probe";

/// Rounds of "list, then create or remove duplicates" before giving up on
/// bringing a stack's networks down to one.
pub const MAX_NETWORK_SETTLE_ROUNDS: usize = 5;

/// One engine network of a stack's name, as far as choosing a keeper goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub id: String,
    /// Some container has an endpoint on it.
    pub in_use: bool,
}

/// The network to keep among several of one name: the first in use, else
/// the first, by id.
pub(super) fn keeper(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| c.in_use)
        .min_by(|a, b| a.id.cmp(&b.id))
        .or_else(|| candidates.iter().min_by(|a, b| a.id.cmp(&b.id)))
}

/// A stack network as a container joins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Joined {
    pub id: String,
    /// Where its virtual IPs live; `None` for a network berth did not split.
    pub vips: Option<VipRange>,
}

/// The stack networks of one engine. Cheap to clone; clones share their
/// locks.
#[derive(Debug, Clone)]
pub(super) struct StackNetworks {
    docker: Docker,
    /// One creation at a time from this runtime, so its own tasks never
    /// race each other into duplicates.
    creating: Arc<Mutex<()>>,
    /// Read while a stack's container is created and started; written
    /// while an unused network is removed.
    starting: Arc<RwLock<()>>,
    /// This node's networks with virtual IPs, by stack, for the node proxy.
    ranges: Arc<watch::Sender<VipRanges>>,
    /// Virtual IPs already on a bridge, so each is assigned once.
    assigned: Arc<parking_lot::Mutex<HashSet<(String, Ipv4Addr)>>>,
    /// Each network's virtual IP range by network id, read once: a
    /// network's subnet never changes.
    known: Arc<parking_lot::Mutex<HashMap<String, Option<VipRange>>>>,
    /// Whether the networks left by an earlier run were read.
    seeded: Arc<AtomicBool>,
}

impl StackNetworks {
    pub(super) fn new(docker: Docker) -> Self {
        StackNetworks {
            docker,
            creating: Arc::new(Mutex::new(())),
            starting: Arc::new(RwLock::new(())),
            ranges: Arc::new(watch::channel(VipRanges::new()).0),
            assigned: Arc::new(parking_lot::Mutex::new(HashSet::new())),
            known: Arc::new(parking_lot::Mutex::new(HashMap::new())),
            seeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Follows this node's networks with virtual IPs.
    pub(super) fn ranges(&self) -> watch::Receiver<VipRanges> {
        self.ranges.subscribe()
    }

    /// Reads, once per runtime, the virtual IP ranges of the networks node
    /// `node_id` already has (an agent restarted beside running tasks).
    pub(super) async fn seed(&self, node_id: &str) {
        if self.seeded.swap(true, Ordering::SeqCst) {
            return;
        }
        let filters = HashMap::from([("label", vec![format!("{LABEL_NODE}={node_id}"), LABEL_STACK.to_string()])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = match self.docker.list_networks(Some(options)).await {
            Ok(networks) => networks,
            Err(error) => {
                tracing::warn!(%error, "cannot list this node's stack networks; their virtual IPs wait for a new task");
                self.seeded.store(false, Ordering::SeqCst);
                return;
            }
        };
        for network in networks {
            let stack = network.labels.as_ref().and_then(|l| l.get(LABEL_STACK)).cloned();
            let Some(id) = network.id.clone() else { continue };
            if let (Some(stack), Ok(range)) = (stack, self.vip_range(&id).await) {
                self.publish(&stack, range);
            }
        }
    }

    /// Where network `id` keeps its virtual IPs: inspected the first time
    /// (the network list leaves the IPAM settings out on some engines).
    async fn vip_range(&self, id: &str) -> Result<Option<VipRange>, RuntimeError> {
        if let Some(known) = self.known.lock().get(id) {
            return Ok(known.clone());
        }
        let inspected =
            self.docker.inspect_network(id, None).await.map_err(|e| engine_error("inspect a network", e))?;
        let range = convert::vip_range_of(&inspected);
        self.known.lock().insert(id.to_string(), range.clone());
        Ok(range)
    }

    fn publish(&self, stack: &str, vips: Option<VipRange>) {
        self.ranges.send_if_modified(|ranges| match vips {
            Some(range) if ranges.get(stack) != Some(&range) => {
                ranges.insert(stack.to_string(), range);
                true
            }
            Some(_) => false,
            None => ranges.remove(stack).is_some(),
        });
    }

    /// Puts virtual IP `address` on `range`'s bridge, once. Fails where the
    /// agent may not change the host's addresses (it needs CAP_NET_ADMIN).
    pub(super) async fn assign(&self, range: &VipRange, address: Ipv4Addr) -> Result<(), String> {
        let key = (range.bridge.clone(), address);
        if self.assigned.lock().contains(&key) {
            return Ok(());
        }
        let output = tokio::process::Command::new("ip")
            .args(["-4", "address", "add", &format!("{address}/32"), "dev", &range.bridge])
            .output()
            .await
            .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // "File exists": assigned before this runtime started.
        if !output.status.success() && !stderr.contains("File exists") {
            return Err(format!("ip address add {address}/32 dev {}: {}", range.bridge, stderr.trim()));
        }
        self.assigned.lock().insert(key);
        Ok(())
    }

    /// Hold while creating and starting a container of a stack: this
    /// runtime removes no unused network meanwhile.
    pub(super) async fn starting(&self) -> RwLockReadGuard<'_, ()> {
        self.starting.read().await
    }

    /// `network`, created if missing and brought down to one network if
    /// agents raced to create it.
    pub(super) async fn ensure(&self, network: &StackNetwork) -> Result<Joined, RuntimeError> {
        let _creating = self.creating.lock().await;
        let mut count = 0;
        for _ in 0..MAX_NETWORK_SETTLE_ROUNDS {
            let mut found = self.find(network).await?;
            count = found.len();
            match count {
                0 => self.create(network).await?,
                1 => {
                    let id = found.remove(0);
                    let vips = self.vip_range(&id).await?;
                    self.publish(&network.stack, vips.clone());
                    return Ok(Joined { id, vips });
                }
                _ => self.remove_duplicates(network, found).await?,
            }
        }
        Err(RuntimeError::NetworkUnsettled { name: network.name.clone(), count })
    }

    /// Whether `network` is still exactly the one network `id`.
    pub(super) async fn is_settled_on(&self, network: &StackNetwork, id: &str) -> Result<bool, RuntimeError> {
        Ok(self.find(network).await? == [id])
    }

    /// Removes `stack`'s network of node `node_id` if no container, in any
    /// state, names it. Best effort: a network that cannot be removed stays,
    /// and is reused.
    pub(super) async fn remove_if_unused(&self, stack: &str, node_id: &str) {
        let _removing = self.starting.write().await;
        let name = stack_network_name(stack, node_id);
        // A container created on the network but never started has no
        // endpoint yet, so the network's own container list misses it; the
        // container filter by network name does not.
        let filters = HashMap::from([("network", vec![name.clone()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        match self.docker.list_containers(Some(options)).await {
            Ok(containers) if containers.is_empty() => {}
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(network = %name, %error, "cannot tell whether a stack network is unused; keeping it");
                return;
            }
        }
        let network = StackNetwork {
            stack: stack.to_string(),
            node_id: node_id.to_string(),
            name,
            aliases: Vec::new(),
            links: Vec::new(),
        };
        let ids = match self.find(&network).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(network = %network.name, %error, "cannot list a stack network; keeping it");
                return;
            }
        };
        for id in ids {
            self.remove_quietly(&network.name, &id).await;
        }
        if self.find(&network).await.is_ok_and(|left| left.is_empty()) {
            if let Some(range) = self.ranges.borrow().get(stack) {
                // The bridge went with the network, and its addresses too.
                self.assigned.lock().retain(|(bridge, _)| *bridge != range.bridge);
            }
            self.publish(stack, None);
        }
    }

    /// The ids of berth's networks named `network.name`, sorted.
    async fn find(&self, network: &StackNetwork) -> Result<Vec<String>, RuntimeError> {
        // The engine's name filter matches substrings: compared exactly below.
        let filters = HashMap::from([
            ("name", vec![network.name.clone()]),
            ("label", vec![format!("{LABEL_STACK}={}", network.stack)]),
        ]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let listed = self.docker.list_networks(Some(options)).await.map_err(|e| engine_error("list networks", e))?;
        let mut ids: Vec<String> = listed
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(network.name.as_str()))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// A free subnet, as the engine picks one for a network of its own.
    async fn free_subnet(&self, network: &StackNetwork) -> Option<ipnet::Ipv4Net> {
        let mut probe = convert::network_create_request(network, None);
        probe.name.push_str(PROBE_SUFFIX);
        probe.labels = None;
        let created = match self.docker.create_network(probe).await {
            Ok(created) => created,
            Err(error) => {
                tracing::warn!(network = %network.name, %error, "cannot probe for a free subnet");
                return None;
            }
        };
        let subnet = match self.docker.inspect_network(&created.id, None).await {
            Ok(inspected) => convert::subnet_of(&inspected),
            Err(error) => {
                tracing::warn!(network = %network.name, %error, "cannot read a probe network's subnet");
                None
            }
        };
        self.remove_quietly(&network.name, &created.id).await;
        subnet
    }

    async fn create(&self, network: &StackNetwork) -> Result<(), RuntimeError> {
        if let Some(subnet) = self.free_subnet(network).await {
            match self.docker.create_network(convert::network_create_request(network, Some(subnet))).await {
                Ok(created) => {
                    tracing::info!(network = %network.name, id = %created.id, %subnet, "created a stack network");
                    return Ok(());
                }
                Err(e) if status_of(&e) == Some(HTTP_CONFLICT) => return Ok(()),
                // Taken since the probe: the engine picks again below.
                Err(error) => tracing::warn!(network = %network.name, %subnet, %error,
                    "cannot create a stack network on the probed subnet; without virtual IPs"),
            }
        }
        match self.docker.create_network(convert::network_create_request(network, None)).await {
            Ok(created) => {
                tracing::info!(network = %network.name, id = %created.id, "created a stack network");
                Ok(())
            }
            // Another agent created it first (engines with API 1.44 or later).
            Err(e) if status_of(&e) == Some(HTTP_CONFLICT) => Ok(()),
            Err(e) => Err(engine_error("create a network", e)),
        }
    }

    async fn remove_duplicates(&self, network: &StackNetwork, ids: Vec<String>) -> Result<(), RuntimeError> {
        let mut candidates = Vec::with_capacity(ids.len());
        for id in ids {
            match self.docker.inspect_network(&id, None).await {
                Ok(inspect) => {
                    let in_use = inspect.containers.is_some_and(|c| !c.is_empty());
                    candidates.push(Candidate { id, in_use });
                }
                // Removed since the list, by whoever else is deduplicating.
                Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => {}
                Err(e) => return Err(engine_error("inspect a network", e)),
            }
        }
        let Some(kept) = keeper(&candidates).map(|c| c.id.clone()) else {
            return Ok(());
        };
        tracing::info!(network = %network.name, kept = %kept, count = candidates.len(), "removing duplicate stack networks");
        for candidate in candidates.iter().filter(|c| c.id != kept && !c.in_use) {
            self.remove_quietly(&network.name, &candidate.id).await;
        }
        Ok(())
    }

    /// Removes network `id`; one that is in use or already gone stays as it is.
    async fn remove_quietly(&self, name: &str, id: &str) {
        match self.docker.remove_network(id).await {
            Ok(()) => {
                self.known.lock().remove(id);
                tracing::info!(network = %name, id = %id, "removed a stack network")
            }
            Err(e) if matches!(status_of(&e), Some(HTTP_FORBIDDEN | HTTP_NOT_FOUND | HTTP_CONFLICT)) => {
                tracing::debug!(network = %name, id = %id, error = %e, "stack network not removed")
            }
            Err(e) => tracing::warn!(network = %name, id = %id, error = %e, "cannot remove a stack network"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, in_use: bool) -> Candidate {
        Candidate { id: id.into(), in_use }
    }

    #[test]
    fn the_keeper_is_the_smallest_id_when_none_is_in_use() {
        let candidates = [candidate("c", false), candidate("a", false), candidate("b", false)];
        assert_eq!(keeper(&candidates).map(|c| c.id.as_str()), Some("a"));
    }

    #[test]
    fn a_network_in_use_is_kept_over_smaller_ids() {
        let candidates = [candidate("a", false), candidate("c", true), candidate("b", true)];
        assert_eq!(keeper(&candidates).map(|c| c.id.as_str()), Some("b"));
    }

    #[test]
    fn no_candidates_no_keeper() {
        assert_eq!(keeper(&[]), None);
    }
}
