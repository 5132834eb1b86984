//! Why a task cannot be placed, in words a user can act on: which tag no
//! node carries, how much memory was asked for and the most any node has,
//! which host port is taken everywhere.
//!
//! Explaining is the slow path: it runs only after the indexes found no
//! node, and looks at every candidate node once.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use berth_core::{Availability, NodeStatus};

use crate::node_state::{Demand, NodeKey, NodeSlot, PortKey};

pub(crate) const EVERY_NODE_WITHOUT_NODE: &str =
    "an every-node task must name its node, and this one names none (the orchestrator sets it)";

const BYTES_PER_MIB: u64 = 1024 * 1024;
const BYTES_PER_GIB: u64 = 1024 * BYTES_PER_MIB;
const MILLICPUS_PER_CPU: u64 = 1_000;

/// Why no node of a view could take `demand`. `members` are the view's
/// nodes: ready, active and carrying `tags`.
pub(crate) fn explain(nodes: &[NodeSlot], tags: &[String], members: &BTreeSet<NodeKey>, demand: &Demand) -> String {
    if members.is_empty() {
        if nodes.iter().any(|slot| slot.info.as_ref().is_some_and(|info| info.accepts)) {
            return format!("no ready, active node carries tags {}", tag_list(tags));
        }
        return no_node_accepts_tasks(nodes);
    }
    let scope =
        if tags.is_empty() { "no node".to_string() } else { format!("no node carrying tags {}", tag_list(tags)) };
    let members: Vec<&NodeSlot> = members.iter().map(|key| &nodes[key.idx]).collect();
    let want = demand.reservation;

    if !members.iter().any(|slot| slot.has_memory_for(want.memory_bytes)) {
        let (free, name) = most_free(&members, NodeSlot::free_memory);
        return format!(
            "{scope} has {} memory free (most free: {} on {name})",
            memory(want.memory_bytes),
            memory(free)
        );
    }
    if !members.iter().any(|slot| slot.has_cpu_for(want.millicpus)) {
        let (free, name) = most_free(&members, NodeSlot::free_cpu);
        return format!("{scope} has {} free (most free: {} on {name})", cpus(want.millicpus), cpus(free));
    }
    let roomy: Vec<&NodeSlot> = members
        .into_iter()
        .filter(|slot| slot.has_memory_for(want.memory_bytes) && slot.has_cpu_for(want.millicpus))
        .collect();
    if roomy.is_empty() {
        return format!("{scope} has both {} memory and {} free", memory(want.memory_bytes), cpus(want.millicpus));
    }
    if let Some(port) = demand.ports.iter().find(|port| roomy.iter().all(|slot| slot.uses_port(port))) {
        return format!("host port {} is in use on every eligible node", port_name(port));
    }
    let ports: Vec<String> = demand.ports.iter().map(port_name).collect();
    format!("every eligible node already uses one of host ports {}", ports.join(", "))
}

/// The largest known free amount among nodes none of which has enough, and
/// the node it is on (ties to the smallest id). Nodes of unknown capacity
/// always have enough, so none is among these.
fn most_free(members: &[&NodeSlot], free: fn(&NodeSlot) -> Option<u64>) -> (u64, String) {
    members
        .iter()
        .map(|slot| (free(slot).unwrap_or(u64::MAX), Reverse(&slot.id), slot.display_name()))
        .max()
        .map_or((0, String::new()), |(amount, _, name)| (amount, name.to_string()))
}

fn no_node_accepts_tasks(nodes: &[NodeSlot]) -> String {
    let mut down = 0;
    let mut not_ready = 0;
    let mut paused = 0;
    let mut draining = 0;
    for info in nodes.iter().filter_map(|slot| slot.info.as_ref()) {
        match (info.status, info.availability) {
            (NodeStatus::Down, _) => down += 1,
            (NodeStatus::Unknown, _) => not_ready += 1,
            (NodeStatus::Ready, Availability::Pause) => paused += 1,
            (NodeStatus::Ready, Availability::Drain) => draining += 1,
            (NodeStatus::Ready, Availability::Active) => {}
        }
    }
    if down + not_ready + paused + draining == 0 {
        return "no nodes have joined the cluster".to_string();
    }
    let parts: Vec<String> = [(down, "down"), (not_ready, "not ready yet"), (paused, "paused"), (draining, "draining")]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
    format!("no nodes are ready and active: {}", parts.join(", "))
}

/// Whether the node an every-node task names can still run it.
pub(crate) fn check_pinned(slot: &NodeSlot, tags: &[String], demand: &Demand) -> Result<(), String> {
    let name = slot.display_name();
    let Some(info) = &slot.info else {
        return Err(format!("node {name} is not in the cluster"));
    };
    match (info.status, info.availability) {
        (NodeStatus::Down, _) => return Err(format!("node {name} is down")),
        (NodeStatus::Unknown, _) => return Err(format!("node {name} is not ready yet")),
        (NodeStatus::Ready, Availability::Pause) => return Err(format!("node {name} is paused")),
        (NodeStatus::Ready, Availability::Drain) => return Err(format!("node {name} is draining")),
        (NodeStatus::Ready, Availability::Active) => {}
    }
    let missing: Vec<String> = tags.iter().filter(|tag| !info.tags.contains(*tag)).cloned().collect();
    if !missing.is_empty() {
        return Err(format!("node {name} does not carry tags {}", tag_list(&missing)));
    }
    let want = demand.reservation;
    if !slot.has_memory_for(want.memory_bytes) {
        let free = slot.free_memory().unwrap_or(0);
        return Err(format!(
            "node {name} has {} memory free, the task reserves {}",
            memory(free),
            memory(want.memory_bytes)
        ));
    }
    if !slot.has_cpu_for(want.millicpus) {
        let free = slot.free_cpu().unwrap_or(0);
        return Err(format!("node {name} has {} free, the task reserves {}", cpus(free), cpus(want.millicpus)));
    }
    if let Some(port) = demand.ports.iter().find(|port| slot.uses_port(port)) {
        return Err(format!("host port {} is already in use on node {name}", port_name(port)));
    }
    Ok(())
}

fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

fn port_name((port, protocol): &PortKey) -> String {
    format!("{port}/{protocol}")
}

/// Bytes in the unit a person would write: whole GiB, whole MiB, else MiB
/// with one decimal, and plain bytes below one MiB.
pub(crate) fn memory(bytes: u64) -> String {
    if bytes >= BYTES_PER_GIB && bytes % BYTES_PER_GIB == 0 {
        format!("{} GiB", bytes / BYTES_PER_GIB)
    } else if bytes >= BYTES_PER_MIB && bytes % BYTES_PER_MIB == 0 {
        format!("{} MiB", bytes / BYTES_PER_MIB)
    } else if bytes >= BYTES_PER_MIB {
        format!("{:.1} MiB", bytes as f64 / BYTES_PER_MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// Thousandths of a CPU as CPUs: "1 CPU", "1.5 CPUs", "0.25 CPUs".
pub(crate) fn cpus(millicpus: u64) -> String {
    let whole = millicpus / MILLICPUS_PER_CPU;
    let fraction = millicpus % MILLICPUS_PER_CPU;
    if fraction == 0 {
        return if whole == 1 { "1 CPU".to_string() } else { format!("{whole} CPUs") };
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{} CPUs", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_a_person_would_write_them() {
        let cases = [
            (512 * BYTES_PER_MIB, "512 MiB"),
            (2 * BYTES_PER_GIB, "2 GiB"),
            (BYTES_PER_GIB + BYTES_PER_MIB, "1025 MiB"),
            (3 * BYTES_PER_MIB / 2, "1.5 MiB"),
            (1000, "1000 bytes"),
            (0, "0 bytes"),
        ];
        for (bytes, text) in cases {
            assert_eq!(memory(bytes), text, "{bytes} bytes");
        }
        let cases = [(1000, "1 CPU"), (2000, "2 CPUs"), (1500, "1.5 CPUs"), (250, "0.25 CPUs"), (1, "0.001 CPUs")];
        for (millicpus, text) in cases {
            assert_eq!(cpus(millicpus), text, "{millicpus} millicpus");
        }
    }
}
