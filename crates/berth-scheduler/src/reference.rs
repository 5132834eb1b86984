//! The placement rules executed literally: for every task, look at every
//! node, keep the eligible ones and take the smallest by the strategy's
//! ordering. No indexes, so it is easy to check by reading, and slow.
//!
//! It is the specification the indexed [`crate::Scheduler`] is tested
//! against (same assignments for the same input), and the baseline the
//! bench compares it with. It does not explain refusals: its unplaceable
//! reason is always [`REFERENCE_REASON`].

use std::cmp::Reverse;
use std::collections::BTreeMap;

use berth_core::{Node, Protocol, Resources, ServiceSpec, Strategy, Task};

use crate::{holds_resources, Decision, ZONE_TAG_KEY};

pub const REFERENCE_REASON: &str = "no eligible node";

/// Scans all nodes per task; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct NaiveScheduler {
    nodes: BTreeMap<String, Node>,
    /// By node id; may name nodes that are not in `nodes`.
    loads: BTreeMap<String, Load>,
    holdings: BTreeMap<String, Held>,
}

#[derive(Debug, Clone, Default)]
struct Load {
    memory_bytes: u64,
    millicpus: u64,
    tasks: u32,
    ports: BTreeMap<(u16, Protocol), u32>,
    services: BTreeMap<String, u32>,
}

#[derive(Debug, Clone)]
struct Held {
    node_id: String,
    service_id: String,
    spec_resources: Resources,
    ports: Vec<(u16, Protocol)>,
}

impl NaiveScheduler {
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a Node>, tasks: impl IntoIterator<Item = &'a Task>) -> Self {
        let mut scheduler = NaiveScheduler::default();
        for node in nodes {
            scheduler.nodes.insert(node.id.clone(), node.clone());
        }
        for task in tasks.into_iter().filter(|task| holds_resources(task)) {
            if let Some(node_id) = &task.node_id {
                scheduler.release(&task.id);
                scheduler.hold(task, node_id);
            }
        }
        scheduler
    }

    pub fn place<'a>(&mut self, pending: impl IntoIterator<Item = &'a Task>) -> Vec<Decision> {
        pending.into_iter().map(|task| self.place_one(task)).collect()
    }

    fn place_one(&mut self, task: &Task) -> Decision {
        self.release(&task.id);
        let chosen = match task.spec.strategy {
            Strategy::EveryNode => task
                .node_id
                .as_ref()
                .and_then(|id| self.nodes.get(id))
                .filter(|node| self.eligible(node, &task.spec))
                .map(|node| node.id.clone()),
            Strategy::EmptiestNode => self
                .nodes
                .values()
                .filter(|node| self.eligible(node, &task.spec))
                .min_by_key(|node| self.emptiest_key(node))
                .map(|node| node.id.clone()),
            Strategy::HighAvailability => {
                let mut zone_tasks: BTreeMap<&str, u32> = BTreeMap::new();
                for node in self.nodes.values() {
                    *zone_tasks.entry(zone_of(node)).or_default() += self.service_tasks(node, &task.service_id);
                }
                self.nodes
                    .values()
                    .filter(|node| self.eligible(node, &task.spec))
                    .min_by_key(|node| {
                        (
                            zone_tasks.get(zone_of(node)).copied().unwrap_or(0),
                            self.service_tasks(node, &task.service_id),
                            self.emptiest_key(node),
                        )
                    })
                    .map(|node| node.id.clone())
            }
        };
        match chosen {
            Some(node_id) => {
                self.hold(task, &node_id);
                Decision::Assign { task_id: task.id.clone(), node_id }
            }
            None => Decision::Unplaceable { task_id: task.id.clone(), reason: REFERENCE_REASON.to_string() },
        }
    }

    fn eligible(&self, node: &Node, spec: &ServiceSpec) -> bool {
        let no_load = Load::default();
        let load = self.loads.get(&node.id).unwrap_or(&no_load);
        node.accepts_tasks()
            && spec.tags.iter().all(|tag| node.tags.contains(tag))
            && fits(node.resources.memory_bytes, load.memory_bytes, spec.resources.memory_bytes)
            && fits(node.resources.millicpus, load.millicpus, spec.resources.millicpus)
            && spec.ports.iter().all(|port| !load.ports.contains_key(&(port.host_port, port.protocol)))
    }

    fn emptiest_key<'n>(&self, node: &'n Node) -> (u32, Reverse<u64>, Reverse<u64>, &'n str) {
        let (tasks, memory, cpu) =
            self.loads.get(&node.id).map_or((0, 0, 0), |l| (l.tasks, l.memory_bytes, l.millicpus));
        (
            tasks,
            Reverse(free_or_unlimited(node.resources.memory_bytes, memory)),
            Reverse(free_or_unlimited(node.resources.millicpus, cpu)),
            &node.id,
        )
    }

    fn service_tasks(&self, node: &Node, service_id: &str) -> u32 {
        self.loads.get(&node.id).and_then(|load| load.services.get(service_id)).copied().unwrap_or(0)
    }

    fn hold(&mut self, task: &Task, node_id: &str) {
        let mut ports: Vec<(u16, Protocol)> = task.spec.ports.iter().map(|p| (p.host_port, p.protocol)).collect();
        ports.sort_unstable();
        ports.dedup();
        let load = self.loads.entry(node_id.to_string()).or_default();
        load.memory_bytes = load.memory_bytes.saturating_add(task.spec.resources.memory_bytes);
        load.millicpus = load.millicpus.saturating_add(task.spec.resources.millicpus);
        load.tasks += 1;
        for port in &ports {
            *load.ports.entry(*port).or_default() += 1;
        }
        *load.services.entry(task.service_id.clone()).or_default() += 1;
        let held = Held {
            node_id: node_id.to_string(),
            service_id: task.service_id.clone(),
            spec_resources: task.spec.resources,
            ports,
        };
        self.holdings.insert(task.id.clone(), held);
    }

    fn release(&mut self, task_id: &str) {
        let Some(held) = self.holdings.remove(task_id) else { return };
        let Some(load) = self.loads.get_mut(&held.node_id) else { return };
        load.memory_bytes = load.memory_bytes.saturating_sub(held.spec_resources.memory_bytes);
        load.millicpus = load.millicpus.saturating_sub(held.spec_resources.millicpus);
        load.tasks = load.tasks.saturating_sub(1);
        for port in &held.ports {
            if let Some(count) = load.ports.get_mut(port) {
                *count -= 1;
                if *count == 0 {
                    load.ports.remove(port);
                }
            }
        }
        if let Some(count) = load.services.get_mut(&held.service_id) {
            *count -= 1;
            if *count == 0 {
                load.services.remove(&held.service_id);
            }
        }
    }
}

fn zone_of(node: &Node) -> &str {
    node.tag_value(ZONE_TAG_KEY).unwrap_or("")
}

/// A total of 0 is unknown capacity: everything fits.
fn fits(total: u64, reserved: u64, want: u64) -> bool {
    total == 0 || total.saturating_sub(reserved) >= want
}

fn free_or_unlimited(total: u64, reserved: u64) -> u64 {
    if total == 0 {
        u64::MAX
    } else {
        total.saturating_sub(reserved)
    }
}
