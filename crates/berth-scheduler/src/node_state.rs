//! One node as the scheduler sees it: what it offers, what the tasks held
//! there reserve, whether a task's demand fits, and the key that orders
//! nodes for `emptiest-node`.
//!
//! Capacity 0 means unknown, hence unlimited (see the crate docs); every
//! comparison of free capacity goes through [`free`] so that rule lives in
//! one place.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use berth_core::{Availability, NodeStatus, Protocol, Resources, ServiceSpec};

/// A hash map whose iteration order depends only on what was inserted: std's
/// default hasher seeds itself from the OS, and this crate takes no
/// randomness. No decision depends on iteration order anyway; this keeps it
/// so by construction.
pub(crate) type DetMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The multiply-rotate hash of rustc's `FxHasher`: several times faster
/// than SipHash on the short ids and small integers used as keys here, and
/// unseeded. It offers no defence against chosen keys; the keys are ids
/// that managers generate and indexes, never client-chosen strings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHasher {
    hash: u64,
}

impl IdHasher {
    const MULTIPLIER: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::MULTIPLIER);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type NodeIdx = usize;
pub(crate) type ServiceIdx = usize;
pub(crate) type ZoneIdx = usize;
pub(crate) type ViewIdx = usize;

/// A published host port: the same number may be used once for TCP and once
/// for UDP on one node.
pub(crate) type PortKey = (u16, Protocol);

/// A node total of this value means the agent could not measure the
/// resource: any reservation fits.
pub(crate) const UNKNOWN_CAPACITY: u64 = 0;

/// Free amount of one resource, `None` when the capacity is unknown.
pub(crate) fn free(total: u64, reserved: u64) -> Option<u64> {
    (total != UNKNOWN_CAPACITY).then(|| total.saturating_sub(reserved))
}

/// Orders nodes for `emptiest-node`: fewest tasks, most free memory, most
/// free CPU, smallest id. `idx` only finds the node again; ids are unique,
/// so it never decides a comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NodeKey {
    pub tasks: u32,
    pub free_memory: Reverse<u64>,
    pub free_cpu: Reverse<u64>,
    pub id: OrderedId,
    pub idx: NodeIdx,
}

/// A node id that compares like the string, but mostly by one integer: the
/// first `PREFIX_BYTES` bytes big-endian, zero-padded, then the whole string
/// when those are equal. Nodes in a uniform cluster tie on everything but
/// the id, so this comparison is the hot one.
///
/// Why it orders like the string: where two prefixes first differ, either
/// both bytes are real and differ as in the strings, or one string has
/// ended (padding 0) and the other goes on with a non-zero byte, so the
/// shorter sorts first as it does for strings. Equal prefixes defer to the
/// strings themselves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OrderedId {
    prefix: u128,
    full: Arc<str>,
}

impl OrderedId {
    const PREFIX_BYTES: usize = 16;

    pub fn new(id: Arc<str>) -> OrderedId {
        let mut prefix = [0u8; Self::PREFIX_BYTES];
        let head = &id.as_bytes()[..id.len().min(Self::PREFIX_BYTES)];
        prefix[..head.len()].copy_from_slice(head);
        OrderedId { prefix: u128::from_be_bytes(prefix), full: id }
    }
}

/// What one task asks of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Demand {
    pub reservation: Resources,
    /// Sorted, without duplicates.
    pub ports: Vec<PortKey>,
}

// By hand: berth-core's `Resources` does not derive `Hash`.
impl std::hash::Hash for Demand {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.reservation.memory_bytes.hash(state);
        self.reservation.millicpus.hash(state);
        self.ports.hash(state);
    }
}

impl Demand {
    pub fn of(spec: &ServiceSpec) -> Demand {
        let mut ports: Vec<PortKey> = spec.ports.iter().map(|p| (p.host_port, p.protocol)).collect();
        ports.sort_unstable();
        ports.dedup();
        Demand { reservation: spec.resources, ports }
    }
}

/// The node record itself, as last reported.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub name: String,
    pub tags: BTreeSet<String>,
    pub zone: ZoneIdx,
    pub total: Resources,
    pub availability: Availability,
    pub status: NodeStatus,
    pub accepts: bool,
}

/// The sum of what the tasks held on one node ask for.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeLoad {
    pub reserved: Resources,
    pub tasks: u32,
    /// How many held tasks publish each port (more than one only when the
    /// replicated state already had a conflict).
    pub ports: DetMap<PortKey, u32>,
    /// Held tasks per service; services with none are absent.
    pub services: DetMap<ServiceIdx, u32>,
}

impl NodeLoad {
    pub fn add(&mut self, service: ServiceIdx, demand: &Demand) {
        self.reserved.memory_bytes = self.reserved.memory_bytes.saturating_add(demand.reservation.memory_bytes);
        self.reserved.millicpus = self.reserved.millicpus.saturating_add(demand.reservation.millicpus);
        self.tasks = self.tasks.saturating_add(1);
        for port in &demand.ports {
            *self.ports.entry(*port).or_default() += 1;
        }
        *self.services.entry(service).or_default() += 1;
    }

    pub fn remove(&mut self, service: ServiceIdx, demand: &Demand) {
        self.reserved.memory_bytes = self.reserved.memory_bytes.saturating_sub(demand.reservation.memory_bytes);
        self.reserved.millicpus = self.reserved.millicpus.saturating_sub(demand.reservation.millicpus);
        self.tasks = self.tasks.saturating_sub(1);
        for port in &demand.ports {
            decrement(&mut self.ports, port, 1);
        }
        decrement(&mut self.services, &service, 1);
    }
}

/// Lowers a count and forgets the key at zero, so maps only hold live
/// entries and `contains_key` means "at least one".
pub(crate) fn decrement<K: std::hash::Hash + Eq, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, u32, S>,
    key: &K,
    by: u32,
) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(by);
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// A node id the scheduler knows of: a node it was told about, or one that
/// tasks are still held on after the node itself was removed.
#[derive(Debug, Clone)]
pub(crate) struct NodeSlot {
    pub id: Arc<str>,
    pub ordered_id: OrderedId,
    /// `None` when the node was removed (or never reported) but tasks are
    /// still held on it; such a slot is in no index.
    pub info: Option<NodeInfo>,
    pub load: NodeLoad,
    /// The constraint views this node belongs to; empty unless it accepts tasks.
    pub views: Vec<ViewIdx>,
}

impl NodeSlot {
    pub fn new(id: Arc<str>) -> NodeSlot {
        let ordered_id = OrderedId::new(Arc::clone(&id));
        NodeSlot { id, ordered_id, info: None, load: NodeLoad::default(), views: Vec::new() }
    }

    pub fn key(&self, idx: NodeIdx) -> Option<NodeKey> {
        self.info.as_ref()?;
        Some(NodeKey {
            tasks: self.load.tasks,
            free_memory: Reverse(self.free_memory().unwrap_or(u64::MAX)),
            free_cpu: Reverse(self.free_cpu().unwrap_or(u64::MAX)),
            id: self.ordered_id.clone(),
            idx,
        })
    }

    pub fn free_memory(&self) -> Option<u64> {
        let total = self.info.as_ref().map_or(UNKNOWN_CAPACITY, |i| i.total.memory_bytes);
        free(total, self.load.reserved.memory_bytes)
    }

    pub fn free_cpu(&self) -> Option<u64> {
        let total = self.info.as_ref().map_or(UNKNOWN_CAPACITY, |i| i.total.millicpus);
        free(total, self.load.reserved.millicpus)
    }

    pub fn has_memory_for(&self, want: u64) -> bool {
        self.free_memory().is_none_or(|f| f >= want)
    }

    pub fn has_cpu_for(&self, want: u64) -> bool {
        self.free_cpu().is_none_or(|f| f >= want)
    }

    pub fn uses_port(&self, port: &PortKey) -> bool {
        self.load.ports.contains_key(port)
    }

    /// Room and ports, for a node already known to accept the task's tags.
    pub fn fits(&self, demand: &Demand) -> bool {
        self.info.is_some()
            && self.has_memory_for(demand.reservation.memory_bytes)
            && self.has_cpu_for(demand.reservation.millicpus)
            && !demand.ports.iter().any(|p| self.uses_port(p))
    }

    /// How a reason names the node: its name, or its id when it has none.
    pub fn display_name(&self) -> &str {
        match &self.info {
            Some(info) if !info.name.is_empty() => &info.name,
            _ => &self.id,
        }
    }
}
