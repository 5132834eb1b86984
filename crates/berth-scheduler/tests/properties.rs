//! Properties over random clusters: the indexed scheduler assigns exactly
//! as the literal reference does, never over-commits a node, never uses an
//! ineligible node, balances identical nodes, decides the same for the same
//! input in any order, and a long-lived scheduler agrees with one rebuilt
//! from the state. Proptest prints the failing input and its seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use berth_core::{Availability, Node, NodeStatus, Protocol, Resources, Strategy as Placement, Task, TaskState};
use berth_scheduler::reference::NaiveScheduler;
use berth_scheduler::{Decision, Scheduler};
use common::*;
use proptest::prelude::*;
use proptest::sample::subsequence;

const NODE_TAGS: [&str; 5] = ["ssd", "gpu", "zone:a", "zone:b", "zone:c"];
const TASK_TAGS: [&str; 3] = ["ssd", "gpu", "zone:a"];
const PORTS: [(u16, Protocol); 3] = [(80, Protocol::Tcp), (80, Protocol::Udp), (443, Protocol::Tcp)];
const SERVICES: usize = 3;
const MAX_NODES: usize = 8;
/// Every-node tasks may name this node, which never exists.
const GHOST_NODE: &str = "ghost";

#[derive(Debug, Clone)]
struct Cluster {
    nodes: Vec<Node>,
    held: Vec<Task>,
    pending: Vec<Task>,
}

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    let availability =
        prop_oneof![6 => Just(Availability::Active), 1 => Just(Availability::Pause), 1 => Just(Availability::Drain)];
    let status = prop_oneof![6 => Just(NodeStatus::Ready), 1 => Just(NodeStatus::Down), 1 => Just(NodeStatus::Unknown)];
    let millicpus = prop::sample::select(vec![0, 1000, 2000, 4000]);
    let memory = prop::sample::select(vec![0, 512 * MIB, GIB, 4 * GIB]);
    (subsequence(NODE_TAGS.to_vec(), 0..=3), availability, status, millicpus, memory).prop_map(
        move |(tags, availability, status, millicpus, memory)| {
            let mut n = sized(node(&format!("n{i}"), &tags), millicpus, memory);
            n.availability = availability;
            n.status = status;
            n
        },
    )
}

/// A task of a random service, strategy, constraint, reservation and ports;
/// every-node tasks name node `target` (an index past the nodes means the
/// ghost node).
fn arb_task(id: String, node_count: usize) -> impl Strategy<Value = Task> {
    let strategy = prop_oneof![
        3 => Just(Placement::EmptiestNode),
        3 => Just(Placement::HighAvailability),
        1 => Just(Placement::EveryNode),
    ];
    let ports = prop_oneof![3 => Just(vec![]), 1 => subsequence(PORTS.to_vec(), 1..=2)];
    (
        0..SERVICES,
        strategy,
        subsequence(TASK_TAGS.to_vec(), 0..=2),
        prop::sample::select(vec![0u64, 250, 1000]),
        prop::sample::select(vec![0u64, 128 * MIB, 512 * MIB]),
        ports,
        0..=node_count,
    )
        .prop_map(move |(service, strategy, tags, cpu, memory, ports, target)| {
            let mut t = with_strategy(task(&id, &format!("s{service}")), strategy);
            if strategy != Placement::EveryNode || target % 2 == 0 {
                t = with_tags(t, &tags);
            }
            t = publishing(reserving(t, cpu, memory), &ports);
            if strategy == Placement::EveryNode {
                let node = if target < node_count { format!("n{target}") } else { GHOST_NODE.to_string() };
                t.node_id = Some(node);
            }
            t
        })
}

fn arb_tasks(prefix: &'static str, node_count: usize, max: usize) -> impl Strategy<Value = Vec<Task>> {
    (0..=max).prop_flat_map(move |n| (0..n).map(|i| arb_task(format!("{prefix}{i}"), node_count)).collect::<Vec<_>>())
}

/// Tasks already running, on a known node or (rarely) on the ghost node.
fn arb_held(node_count: usize) -> impl Strategy<Value = Vec<Task>> {
    arb_tasks("h", node_count, 12).prop_flat_map(move |tasks| {
        let count = tasks.len();
        (Just(tasks), prop::collection::vec(0..=node_count, count)).prop_map(move |(tasks, targets)| {
            tasks
                .into_iter()
                .zip(targets)
                .map(|(t, target)| {
                    let node = if target < node_count { format!("n{target}") } else { GHOST_NODE.to_string() };
                    running_on(t, &node)
                })
                .collect()
        })
    })
}

fn arb_cluster() -> impl Strategy<Value = Cluster> {
    (1..=MAX_NODES).prop_flat_map(|count| {
        let nodes: Vec<_> = (0..count).map(arb_node).collect();
        (nodes, arb_held(count), arb_tasks("p", count, 24)).prop_map(|(nodes, held, pending)| Cluster {
            nodes,
            held,
            pending,
        })
    })
}

fn placements(decisions: &[Decision]) -> Vec<(String, Option<String>)> {
    decisions.iter().map(|d| (d.task_id().to_string(), d.node_id().map(str::to_string))).collect()
}

fn add(total: &mut Resources, more: Resources) {
    total.memory_bytes += more.memory_bytes;
    total.millicpus += more.millicpus;
}

proptest! {
    #[test]
    fn the_indexed_scheduler_assigns_exactly_as_the_reference(cluster in arb_cluster()) {
        let indexed = Scheduler::new(&cluster.nodes, &cluster.held).place(&cluster.pending);
        let reference = NaiveScheduler::new(&cluster.nodes, &cluster.held).place(&cluster.pending);
        prop_assert_eq!(placements(&indexed), placements(&reference));
    }

    #[test]
    fn no_placement_takes_more_than_a_node_has_free(cluster in arb_cluster()) {
        let decisions = Scheduler::new(&cluster.nodes, &cluster.held).place(&cluster.pending);
        let mut reserved: BTreeMap<String, Resources> = BTreeMap::new();
        for t in &cluster.held {
            add(reserved.entry(t.node_id.clone().unwrap_or_default()).or_default(), t.spec.resources);
        }
        for (decision, t) in decisions.iter().zip(&cluster.pending) {
            let Some(node_id) = decision.node_id() else { continue };
            let used = reserved.entry(node_id.to_string()).or_default();
            add(used, t.spec.resources);
            let total = cluster.nodes.iter().find(|n| n.id == node_id).map(|n| n.resources).unwrap_or_default();
            let want = t.spec.resources;
            // A total of 0 is unknown capacity; a zero reservation takes nothing.
            if total.memory_bytes > 0 && want.memory_bytes > 0 {
                prop_assert!(used.memory_bytes <= total.memory_bytes, "{} over-commits memory of {}: {:?}", t.id, node_id, used);
            }
            if total.millicpus > 0 && want.millicpus > 0 {
                prop_assert!(used.millicpus <= total.millicpus, "{} over-commits cpu of {}: {:?}", t.id, node_id, used);
            }
        }
    }

    #[test]
    fn a_task_is_only_ever_placed_on_an_eligible_node(cluster in arb_cluster()) {
        let decisions = Scheduler::new(&cluster.nodes, &cluster.held).place(&cluster.pending);
        let mut ports_in_use: BTreeSet<(String, u16, Protocol)> = cluster
            .held
            .iter()
            .flat_map(|t| t.spec.ports.iter().map(|p| (t.node_id.clone().unwrap_or_default(), p.host_port, p.protocol)))
            .collect();
        for (decision, t) in decisions.iter().zip(&cluster.pending) {
            let Some(node_id) = decision.node_id() else { continue };
            let n = cluster.nodes.iter().find(|n| n.id == node_id);
            prop_assert!(n.is_some_and(Node::accepts_tasks), "{} placed on {}", t.id, node_id);
            let n = n.expect("checked just above");
            prop_assert!(t.spec.tags.iter().all(|tag| n.tags.contains(tag)), "{} lacks tags of {}", node_id, t.id);
            if t.spec.strategy == Placement::EveryNode {
                prop_assert_eq!(t.node_id.as_deref(), Some(node_id));
            }
            for p in &t.spec.ports {
                prop_assert!(
                    ports_in_use.insert((node_id.to_string(), p.host_port, p.protocol)),
                    "port {}/{} used twice on {}", p.host_port, p.protocol, node_id
                );
            }
        }
    }

    #[test]
    fn emptiest_node_keeps_identical_nodes_within_one_task_of_each_other(
        node_count in 1usize..12,
        task_count in 0usize..80,
        millicpus in prop::sample::select(vec![0u64, 64_000]),
    ) {
        let nodes: Vec<_> = (0..node_count).map(|i| sized(node(&format!("n{i:02}"), &["ssd"]), millicpus, 0)).collect();
        let pending: Vec<_> = (0..task_count).map(|i| reserving(task(&format!("t{i}"), &format!("s{}", i % 3)), 100, 0)).collect();
        let decisions = Scheduler::new(&nodes, &[]).place(&pending);
        let counts = tasks_per_node(&decisions);
        let per_node: Vec<usize> = nodes.iter().map(|n| counts.get(&n.id).copied().unwrap_or(0)).collect();
        let (min, max) = (per_node.iter().min().copied().unwrap_or(0), per_node.iter().max().copied().unwrap_or(0));
        prop_assert!(max - min <= 1, "tasks per node: {:?}", per_node);
        prop_assert_eq!(per_node.iter().sum::<usize>(), task_count);
    }

    #[test]
    fn the_same_input_in_any_order_gives_the_same_decisions(
        (cluster, node_order, held_order) in arb_cluster().prop_flat_map(|c| {
            let nodes: Vec<usize> = (0..c.nodes.len()).collect();
            let held: Vec<usize> = (0..c.held.len()).collect();
            (Just(c), Just(nodes).prop_shuffle(), Just(held).prop_shuffle())
        })
    ) {
        let first = Scheduler::new(&cluster.nodes, &cluster.held).place(&cluster.pending);
        let again = Scheduler::new(&cluster.nodes, &cluster.held).place(&cluster.pending);
        prop_assert_eq!(&first, &again);
        let nodes: Vec<&Node> = node_order.iter().map(|&i| &cluster.nodes[i]).collect();
        let held: Vec<&Task> = held_order.iter().map(|&i| &cluster.held[i]).collect();
        let shuffled = Scheduler::new(nodes, held).place(&cluster.pending);
        prop_assert_eq!(outcomes(&first), outcomes(&shuffled));
    }

    #[test]
    fn a_long_lived_scheduler_decides_as_one_rebuilt_from_the_state(
        cluster in arb_cluster(),
        second in arb_tasks("q", MAX_NODES, 16),
        changes in prop::collection::vec((0..MAX_NODES, 0..4u8), 0..4),
        released in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut live = Scheduler::new(&cluster.nodes, &cluster.held);
        let first = live.place(&cluster.pending);

        let mut nodes: BTreeMap<String, Node> = cluster.nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
        let mut holding: BTreeMap<String, Task> = cluster.held.iter().map(|t| (t.id.clone(), t.clone())).collect();
        for (decision, t) in first.iter().zip(&cluster.pending) {
            if let Some(node_id) = decision.node_id() {
                let mut assigned = t.clone();
                assigned.node_id = Some(node_id.to_string());
                assigned.state = TaskState::Assigned;
                holding.insert(assigned.id.clone(), assigned);
            }
        }
        for (which, change) in changes {
            let id = format!("n{}", which % cluster.nodes.len());
            match change {
                0 => {
                    live.remove_node(&id);
                    nodes.remove(&id);
                }
                _ => {
                    let Some(n) = nodes.get_mut(&id) else { continue };
                    match change {
                        1 => n.availability = Availability::Pause,
                        2 => n.availability = Availability::Active,
                        _ => {
                            n.tags.insert("gpu".into());
                        }
                    }
                    live.upsert_node(n);
                }
            }
        }
        if !holding.is_empty() {
            let ids: Vec<String> = holding.keys().cloned().collect();
            for index in released {
                let id = &ids[index.index(ids.len())];
                if let Some(t) = holding.remove(id) {
                    live.task_released(&t);
                }
            }
        }
        let second: Vec<Task> = second
            .into_iter()
            .map(|mut t| {
                if let Some(node_id) = &t.node_id {
                    if !nodes.contains_key(node_id) && node_id != GHOST_NODE {
                        t.node_id = Some(GHOST_NODE.to_string());
                    }
                }
                t
            })
            .collect();

        let rebuilt = Scheduler::new(nodes.values(), holding.values()).place(&second);
        prop_assert_eq!(outcomes(&live.place(&second)), outcomes(&rebuilt));
    }
}
