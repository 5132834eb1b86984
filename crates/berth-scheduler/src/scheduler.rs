//! The indexed scheduler: in-memory indexes over nodes and held tasks, kept
//! up to date as tasks are placed and released, so that each decision costs
//! a few ordered-set lookups instead of a scan of the cluster.
//!
//! The indexes:
//!
//! - a *view* per distinct tag constraint (sorted tag list), built on first
//!   use and kept up to date after: the ready, active nodes carrying those
//!   tags, as a `BTreeSet<NodeKey>` in `emptiest-node` order, and again
//!   split by zone. The view for "no tags" holds every ready, active node.
//!   `emptiest-node` walks its view from the front and takes the first node
//!   with room and free ports.
//! - per service: the nodes holding its tasks. Once a service is placed
//!   with `high-availability` it also gets its tasks per zone, the nodes
//!   holding it as `(tasks of the service, NodeKey)` per zone, and how many
//!   such nodes each (view, zone) has. `high-availability` visits zones in
//!   order of the service's task count there; inside a zone it first walks
//!   the zone's nodes without the service (skipped outright when every node
//!   of the zone has it), then the nodes with it, least first. Services
//!   never spread pay nothing for this.
//!
//! Every change to a node goes through `unindex` → mutate → `index`, which
//! remove and re-insert exactly the entries derived from the node, so the
//! indexes cannot drift from the loads. A task arriving or leaving moves
//! the node's keys everywhere but only its own service's counts.
//!
//! Memory: views and service records are kept for every constraint and
//! service seen, which the replicated state already bounds; a new leader
//! builds a fresh scheduler.
//!
//! Cost of one decision: O(log N) per index touched, plus one step per node
//! passed over because it lacks room or a port (and, for
//! `high-availability`, per zone of the view and per node of the zone that
//! already runs the service before the first one that does not). Within one
//! batch a demand that found no node is remembered, so a batch of identical
//! unplaceable tasks explains itself once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_core::{Node, Strategy, Task};

use crate::node_state::{
    decrement, Demand, DetMap, NodeIdx, NodeInfo, NodeKey, NodeSlot, ServiceIdx, ViewIdx, ZoneIdx,
};
use crate::reason;
use crate::{holds_resources, Decision, ZONE_TAG_KEY};

/// The view of all ready, active nodes, for tasks without tag constraints.
const UNCONSTRAINED_VIEW: ViewIdx = 0;

/// Places pending tasks on nodes. Build it once from the replicated state
/// with [`Scheduler::new`], then keep it current with the incremental
/// updates as nodes and tasks change, and call [`Scheduler::place`] per batch.
#[derive(Debug, Clone)]
pub struct Scheduler {
    nodes: Vec<NodeSlot>,
    /// Slots of `nodes` no longer in use, reused before the vector grows.
    free_slots: Vec<NodeIdx>,
    node_ids: DetMap<Arc<str>, NodeIdx>,
    zone_ids: DetMap<String, ZoneIdx>,
    service_ids: DetMap<String, ServiceIdx>,
    services: Vec<ServiceLoad>,
    views: Vec<View>,
    view_ids: DetMap<Vec<String>, ViewIdx>,
    holdings: DetMap<String, Holding>,
}

/// What a scheduler knows of one node's load, for callers that display it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeUsage {
    pub tasks: u32,
    pub reserved: berth_core::Resources,
}

/// A task that holds resources, as it was counted, so releasing it undoes
/// exactly what holding it did.
#[derive(Debug, Clone)]
struct Holding {
    node: NodeIdx,
    service: ServiceIdx,
    demand: Demand,
}

/// The ready, active nodes that carry a given set of tags.
#[derive(Debug, Clone)]
struct View {
    tags: Vec<String>,
    all: BTreeSet<NodeKey>,
    by_zone: BTreeMap<ZoneIdx, BTreeSet<NodeKey>>,
}

/// Where one service's tasks are, for `high-availability`.
#[derive(Debug, Clone, Default)]
struct ServiceLoad {
    /// Nodes holding tasks of the service, with how many; always kept.
    nodes: DetMap<NodeIdx, u32>,
    /// Whether the fields below are kept; see `start_spreading`.
    spread: bool,
    /// Held tasks of the service per zone (known nodes of any availability).
    zone_tasks: DetMap<ZoneIdx, u32>,
    /// Known nodes holding at least one task of the service, per zone,
    /// ordered by (tasks of the service, emptiest-node key).
    holders: DetMap<ZoneIdx, BTreeSet<(u32, NodeKey)>>,
    /// How many of `holders` belong to each (view, zone).
    holders_in_view: DetMap<(ViewIdx, ZoneIdx), u32>,
}

/// Which index entries `index` and `unindex` touch: a task arriving on a
/// node moves the node's key everywhere but the counts of one service only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Keys,
    KeysAndCounts,
}

/// Demands that found no node earlier in the same batch. Placing only ever
/// takes capacity and ports, so within a batch such a demand stays
/// unplaceable and its reason stays true.
type FailedDemands = DetMap<(ViewIdx, Demand), String>;

impl Scheduler {
    /// Builds the indexes from the nodes and the tasks that hold resources
    /// on them ([`holds_resources`]); other tasks are ignored.
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a Node>, tasks: impl IntoIterator<Item = &'a Task>) -> Self {
        let mut scheduler = Scheduler::empty();
        for node in nodes {
            scheduler.upsert_node(node);
        }
        for task in tasks {
            if holds_resources(task) {
                scheduler.task_started_holding(task);
            }
        }
        scheduler
    }

    fn empty() -> Self {
        let mut scheduler = Scheduler {
            nodes: Vec::new(),
            free_slots: Vec::new(),
            node_ids: DetMap::default(),
            zone_ids: DetMap::default(),
            service_ids: DetMap::default(),
            services: Vec::new(),
            views: Vec::new(),
            view_ids: DetMap::default(),
            holdings: DetMap::default(),
        };
        let unconstrained = scheduler.view_for(&[]);
        debug_assert_eq!(unconstrained, UNCONSTRAINED_VIEW);
        scheduler
    }

    /// Places a batch of pending tasks, in order; each decision sees the
    /// placements before it. A placed task holds its reservation until
    /// [`Scheduler::task_released`]. A pending task that still held
    /// resources (a task being placed again) gives them back first. Tasks
    /// with the `every-node` strategy must name their node in `node_id`;
    /// for other strategies `node_id` is ignored.
    pub fn place<'a>(&mut self, pending: impl IntoIterator<Item = &'a Task>) -> Vec<Decision> {
        let mut failed = FailedDemands::default();
        pending.into_iter().map(|task| self.place_one(task, &mut failed)).collect()
    }

    fn place_one(&mut self, task: &Task, failed: &mut FailedDemands) -> Decision {
        if self.release(&task.id) {
            // Capacity came back, so earlier failures may no longer hold.
            failed.clear();
        }
        let demand = Demand::of(&task.spec);
        let chosen = match task.spec.strategy {
            Strategy::EveryNode => self.check_pinned(task, &demand),
            strategy => {
                let view = self.view_for(&task.spec.tags);
                let signature = (view, demand.clone());
                if let Some(reason) = failed.get(&signature) {
                    Err(reason.clone())
                } else {
                    let found = match strategy {
                        Strategy::HighAvailability => {
                            let service = self.service_idx(&task.service_id);
                            self.start_spreading(service);
                            self.spread(view, service, &demand)
                        }
                        _ => self.emptiest(view, &demand),
                    };
                    found.ok_or_else(|| {
                        let reason =
                            reason::explain(&self.nodes, &self.views[view].tags, &self.views[view].all, &demand);
                        failed.insert(signature, reason.clone());
                        reason
                    })
                }
            }
        };
        match chosen {
            Ok(node) => {
                let service = self.service_idx(&task.service_id);
                self.hold(&task.id, node, service, demand);
                Decision::Assign { task_id: task.id.clone(), node_id: self.nodes[node].id.to_string() }
            }
            Err(reason) => Decision::Unplaceable { task_id: task.id.clone(), reason },
        }
    }

    fn emptiest(&self, view: ViewIdx, demand: &Demand) -> Option<NodeIdx> {
        self.views[view].all.iter().find(|key| self.nodes[key.idx].fits(demand)).map(|key| key.idx)
    }

    fn spread(&self, view: ViewIdx, service: ServiceIdx, demand: &Demand) -> Option<NodeIdx> {
        let load = &self.services[service];
        let mut zones: Vec<(u32, ZoneIdx)> = self.views[view]
            .by_zone
            .keys()
            .map(|zone| (load.zone_tasks.get(zone).copied().unwrap_or(0), *zone))
            .collect();
        zones.sort_unstable();
        for tied in zones.chunk_by(|a, b| a.0 == b.0) {
            let best = tied.iter().filter_map(|&(_, zone)| self.best_in_zone(view, service, zone, demand)).min();
            if let Some((_, key)) = best {
                return Some(key.idx);
            }
        }
        None
    }

    /// The zone's eligible node with the fewest tasks of the service, then
    /// in emptiest-node order.
    fn best_in_zone(
        &self,
        view: ViewIdx,
        service: ServiceIdx,
        zone: ZoneIdx,
        demand: &Demand,
    ) -> Option<(u32, &NodeKey)> {
        let load = &self.services[service];
        let members = self.views[view].by_zone.get(&zone)?;
        let holders_here = load.holders_in_view.get(&(view, zone)).copied().unwrap_or(0);
        if (holders_here as usize) < members.len() {
            let free_of_service = members.iter().find(|key| {
                let slot = &self.nodes[key.idx];
                !slot.load.services.contains_key(&service) && slot.fits(demand)
            });
            if let Some(key) = free_of_service {
                return Some((0, key));
            }
        }
        load.holders.get(&zone)?.iter().find_map(|(count, key)| {
            let slot = &self.nodes[key.idx];
            (slot.views.contains(&view) && slot.fits(demand)).then_some((*count, key))
        })
    }

    fn check_pinned(&self, task: &Task, demand: &Demand) -> Result<NodeIdx, String> {
        let Some(node_id) = task.node_id.as_deref() else {
            return Err(reason::EVERY_NODE_WITHOUT_NODE.to_string());
        };
        let found = self.node_ids.get(node_id).copied().filter(|&idx| self.nodes[idx].info.is_some());
        let Some(idx) = found else {
            return Err(format!("node {node_id} is not in the cluster"));
        };
        reason::check_pinned(&self.nodes[idx], &task.spec.tags, demand).map(|()| idx)
    }

    /// Records a node, or its new tags, resources, availability or status.
    pub fn upsert_node(&mut self, node: &Node) {
        let idx = self.slot_for(&node.id);
        self.unindex(idx, Scope::KeysAndCounts);
        let zone = self.zone_idx(node.tag_value(ZONE_TAG_KEY).unwrap_or(""));
        let accepts = node.accepts_tasks();
        let views = self
            .views
            .iter()
            .enumerate()
            .filter(|(_, view)| accepts && view.tags.iter().all(|tag| node.tags.contains(tag)))
            .map(|(v, _)| v)
            .collect();
        let slot = &mut self.nodes[idx];
        slot.info = Some(NodeInfo {
            name: node.name.clone(),
            tags: node.tags.clone(),
            zone,
            total: node.resources,
            availability: node.availability,
            status: node.status,
            accepts,
        });
        slot.views = views;
        self.index(idx, Scope::KeysAndCounts);
    }

    /// Forgets a node: it gets no more tasks. Tasks still held on it keep
    /// their count until they are released.
    pub fn remove_node(&mut self, id: &str) {
        let Some(&idx) = self.node_ids.get(id) else { return };
        self.unindex(idx, Scope::KeysAndCounts);
        let slot = &mut self.nodes[idx];
        slot.info = None;
        slot.views.clear();
        self.free_if_unused(idx);
    }

    /// Records that a task holds its reservation on `task.node_id`, e.g. an
    /// assignment committed elsewhere or a task found running. A task that
    /// holds nothing ([`holds_resources`] is false) is released instead, so
    /// any task update can be passed here. Repeating it changes nothing.
    pub fn task_started_holding(&mut self, task: &Task) {
        let node_id = match task.node_id.as_deref() {
            Some(node_id) if holds_resources(task) => node_id,
            _ => {
                self.release(&task.id);
                return;
            }
        };
        if let Some(holding) = self.holdings.get(&task.id) {
            if &*self.nodes[holding.node].id == node_id {
                return;
            }
        }
        self.release(&task.id);
        let idx = self.slot_for(node_id);
        let service = self.service_idx(&task.service_id);
        self.hold(&task.id, idx, service, Demand::of(&task.spec));
    }

    /// Records that a task no longer holds resources (it stopped, failed or
    /// was removed). Releasing a task that holds nothing changes nothing.
    pub fn task_released(&mut self, task: &Task) {
        self.release(&task.id);
    }

    /// The held tasks and reserved resources on a node, if it is known.
    pub fn usage(&self, node_id: &str) -> Option<NodeUsage> {
        let slot = &self.nodes[*self.node_ids.get(node_id)?];
        Some(NodeUsage { tasks: slot.load.tasks, reserved: slot.load.reserved })
    }

    fn hold(&mut self, task_id: &str, idx: NodeIdx, service: ServiceIdx, demand: Demand) {
        self.unindex(idx, Scope::Keys);
        self.nodes[idx].load.add(service, &demand);
        self.index(idx, Scope::Keys);
        *self.services[service].nodes.entry(idx).or_default() += 1;
        self.count_task(idx, service, true);
        self.holdings.insert(task_id.to_owned(), Holding { node: idx, service, demand });
    }

    /// Gives back what a task held; false when it held nothing.
    fn release(&mut self, task_id: &str) -> bool {
        let Some(holding) = self.holdings.remove(task_id) else { return false };
        self.unindex(holding.node, Scope::Keys);
        self.nodes[holding.node].load.remove(holding.service, &holding.demand);
        self.index(holding.node, Scope::Keys);
        decrement(&mut self.services[holding.service].nodes, &holding.node, 1);
        self.count_task(holding.node, holding.service, false);
        self.free_if_unused(holding.node);
        true
    }

    fn slot_for(&mut self, id: &str) -> NodeIdx {
        if let Some(&idx) = self.node_ids.get(id) {
            return idx;
        }
        let id: Arc<str> = Arc::from(id);
        let slot = NodeSlot::new(Arc::clone(&id));
        let idx = match self.free_slots.pop() {
            Some(idx) => {
                self.nodes[idx] = slot;
                idx
            }
            None => {
                self.nodes.push(slot);
                self.nodes.len() - 1
            }
        };
        self.node_ids.insert(id, idx);
        idx
    }

    fn free_if_unused(&mut self, idx: NodeIdx) {
        let slot = &self.nodes[idx];
        if slot.info.is_none() && slot.load.tasks == 0 {
            self.node_ids.remove(&slot.id);
            self.nodes[idx] = NodeSlot::new(Arc::from(""));
            self.free_slots.push(idx);
        }
    }

    fn zone_idx(&mut self, zone: &str) -> ZoneIdx {
        let next = self.zone_ids.len();
        *self.zone_ids.entry(zone.to_owned()).or_insert(next)
    }

    fn service_idx(&mut self, service_id: &str) -> ServiceIdx {
        if let Some(&idx) = self.service_ids.get(service_id) {
            return idx;
        }
        self.services.push(ServiceLoad::default());
        let idx = self.services.len() - 1;
        self.service_ids.insert(service_id.to_owned(), idx);
        idx
    }

    /// The view for a tag constraint, built from the current nodes the
    /// first time the constraint is seen.
    fn view_for(&mut self, tags: &[String]) -> ViewIdx {
        let canonical;
        let tags = if tags.windows(2).all(|pair| pair[0] < pair[1]) {
            tags
        } else {
            let mut sorted = tags.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            canonical = sorted;
            &canonical[..]
        };
        if let Some(&view) = self.view_ids.get(tags) {
            return view;
        }
        let view = self.views.len();
        self.views.push(View { tags: tags.to_vec(), all: BTreeSet::new(), by_zone: BTreeMap::new() });
        self.view_ids.insert(tags.to_vec(), view);
        for idx in 0..self.nodes.len() {
            let joins = self.nodes[idx]
                .info
                .as_ref()
                .is_some_and(|info| info.accepts && tags.iter().all(|tag| info.tags.contains(tag)));
            if joins {
                self.unindex(idx, Scope::KeysAndCounts);
                self.nodes[idx].views.push(view);
                self.index(idx, Scope::KeysAndCounts);
            }
        }
        view
    }

    /// Adds the index entries derived from the node's current record and
    /// load: its keys in views and spread services' holder sets, and with
    /// `Scope::KeysAndCounts` its share of those services' counts too.
    fn index(&mut self, idx: NodeIdx, scope: Scope) {
        let slot = &self.nodes[idx];
        let (Some(info), Some(key)) = (&slot.info, slot.key(idx)) else { return };
        let zone = info.zone;
        for &v in &slot.views {
            let view = &mut self.views[v];
            view.all.insert(key.clone());
            view.by_zone.entry(zone).or_default().insert(key.clone());
        }
        for (&service, &count) in &slot.load.services {
            let load = &mut self.services[service];
            if !load.spread {
                continue;
            }
            load.holders.entry(zone).or_default().insert((count, key.clone()));
            if scope == Scope::KeysAndCounts {
                *load.zone_tasks.entry(zone).or_default() += count;
                for &v in &slot.views {
                    *load.holders_in_view.entry((v, zone)).or_default() += 1;
                }
            }
        }
    }

    /// Removes the entries that `index` with the same scope added; the node
    /// must not have changed since.
    fn unindex(&mut self, idx: NodeIdx, scope: Scope) {
        let slot = &self.nodes[idx];
        let (Some(info), Some(key)) = (&slot.info, slot.key(idx)) else { return };
        let zone = info.zone;
        for &v in &slot.views {
            let view = &mut self.views[v];
            view.all.remove(&key);
            if let Some(members) = view.by_zone.get_mut(&zone) {
                members.remove(&key);
                if members.is_empty() {
                    view.by_zone.remove(&zone);
                }
            }
        }
        for (&service, &count) in &slot.load.services {
            let load = &mut self.services[service];
            if !load.spread {
                continue;
            }
            if let Some(holders) = load.holders.get_mut(&zone) {
                holders.remove(&(count, key.clone()));
                if holders.is_empty() {
                    load.holders.remove(&zone);
                }
            }
            if scope == Scope::KeysAndCounts {
                decrement(&mut load.zone_tasks, &zone, count);
                for &v in &slot.views {
                    decrement(&mut load.holders_in_view, &(v, zone), 1);
                }
            }
        }
    }

    /// Applies one task of `service` arriving on (or leaving) a node to the
    /// service's counts, after the node's load changed. The keys were
    /// re-indexed separately; only this service's counts move.
    fn count_task(&mut self, idx: NodeIdx, service: ServiceIdx, arrived: bool) {
        let slot = &self.nodes[idx];
        let load = &mut self.services[service];
        let Some(info) = &slot.info else { return };
        if !load.spread {
            return;
        }
        let zone = info.zone;
        let now = slot.load.services.get(&service).copied().unwrap_or(0);
        if arrived {
            *load.zone_tasks.entry(zone).or_default() += 1;
            if now == 1 {
                for &v in &slot.views {
                    *load.holders_in_view.entry((v, zone)).or_default() += 1;
                }
            }
        } else {
            decrement(&mut load.zone_tasks, &zone, 1);
            if now == 0 {
                for &v in &slot.views {
                    decrement(&mut load.holders_in_view, &(v, zone), 1);
                }
            }
        }
    }

    /// Starts keeping `high-availability` indexes for a service, from the
    /// nodes that hold its tasks now. Services never placed with that
    /// strategy cost nothing beyond their per-node counts.
    fn start_spreading(&mut self, service: ServiceIdx) {
        if self.services[service].spread {
            return;
        }
        self.services[service].spread = true;
        let mut holding: Vec<NodeIdx> = self.services[service].nodes.keys().copied().collect();
        holding.sort_unstable();
        for idx in holding {
            let slot = &self.nodes[idx];
            let (Some(info), Some(key)) = (&slot.info, slot.key(idx)) else { continue };
            let Some(&count) = slot.load.services.get(&service) else { continue };
            let load = &mut self.services[service];
            load.holders.entry(info.zone).or_default().insert((count, key));
            *load.zone_tasks.entry(info.zone).or_default() += count;
            for &v in &slot.views {
                *load.holders_in_view.entry((v, info.zone)).or_default() += 1;
            }
        }
    }
}
