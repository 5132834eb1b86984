//! Placement throughput: 100,000 tasks over 10,000 nodes for each strategy,
//! and the speed-up over the reference scheduler that scans every node per
//! task, measured in the same process on a smaller batch.
//!
//! Run with `cargo bench -p berth-scheduler`. A plain `main` (no criterion)
//! so the output is the numbers that matter: placements per second. Each
//! timing is the median of `RUNS` runs, each on a fresh copy of the same
//! scheduler, so no run sees another's placements.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_core::{
    Availability, DesiredState, Health, Node, NodeStatus, PortMapping, Protocol, Resources, ServiceSpec, Strategy,
    Task, TaskState,
};
use berth_scheduler::reference::NaiveScheduler;
use berth_scheduler::{Decision, Scheduler};

const NODES: usize = 10_000;
const ZONES: usize = 10;
const TASKS: usize = 100_000;
const TASKS_PER_SERVICE: usize = 100;
/// The reference scans all nodes per task; this many tasks keep it to seconds.
const BASELINE_TASKS: usize = 1_000;
const RUNS: usize = 5;
/// `cargo bench -p berth-scheduler -- --no-baseline` skips the slow reference runs.
const NO_BASELINE_FLAG: &str = "--no-baseline";

const NODE_MILLICPUS: u64 = 64_000;
const NODE_MEMORY_BYTES: u64 = 256 * 1024 * 1024 * 1024;
const TASK_MILLICPUS: u64 = 250;
const TASK_MEMORY_BYTES: u64 = 512 * 1024 * 1024;
/// One service in this many is constrained to nodes tagged `ssd`.
const SSD_SERVICE_EVERY: usize = 10;
/// One node in this many carries `ssd`.
const SSD_NODE_EVERY: usize = 4;
/// One service in this many publishes a host port.
const PORT_SERVICE_EVERY: usize = 50;
const FIRST_HOST_PORT: u16 = 8_000;

fn main() {
    let nodes: Vec<Node> = (0..NODES).map(node).collect();
    println!(
        "berth-scheduler placement: {NODES} nodes in {ZONES} zones, {TASKS} tasks, median of {RUNS} runs, \
         services of {TASKS_PER_SERVICE} tasks (1 in {SSD_SERVICE_EVERY} tagged ssd, 1 in {PORT_SERVICE_EVERY} with a host port)"
    );
    println!();
    println!(
        "{:<34} {:>8} {:>7} {:>10} {:>10} {:>14} {:>9}",
        "strategy", "tasks", "nodes", "build ms", "place ms", "placements/s", "unplaced"
    );
    let scenarios = [
        (Strategy::EmptiestNode, TASKS_PER_SERVICE, ""),
        (Strategy::HighAvailability, TASKS_PER_SERVICE, ""),
        (Strategy::HighAvailability, TASKS, ", one service"),
        (Strategy::EveryNode, NODES, ""),
    ];
    for (strategy, per_service, note) in scenarios {
        let tasks = batch(strategy, TASKS, per_service);
        let build_started = Instant::now();
        let scheduler = Scheduler::new(&nodes, &[]);
        let build = build_started.elapsed();
        let (place, decisions) = median_run(|| scheduler.clone().place(&tasks));
        let unplaced = decisions.iter().filter(|d| matches!(d, Decision::Unplaceable { .. })).count();
        println!(
            "{:<34} {:>8} {:>7} {:>10.1} {:>10.1} {:>14.0} {:>9}",
            format!("{strategy}{note}"),
            tasks.len(),
            NODES,
            millis(build),
            millis(place),
            per_second(tasks.len(), place),
            unplaced
        );
    }

    if std::env::args().any(|arg| arg == NO_BASELINE_FLAG) {
        return;
    }
    println!();
    println!(
        "baseline: reference::NaiveScheduler (scans every node per task), the first {BASELINE_TASKS} tasks of each batch over the same {NODES} nodes"
    );
    println!("{:<34} {:>14} {:>14} {:>9} {:>10}", "strategy", "indexed/s", "naive/s", "speed-up", "same?");
    for strategy in [Strategy::EmptiestNode, Strategy::HighAvailability, Strategy::EveryNode] {
        let per_service = if strategy == Strategy::EveryNode { NODES } else { TASKS_PER_SERVICE };
        let tasks = batch(strategy, BASELINE_TASKS, per_service);
        let scheduler = Scheduler::new(&nodes, &[]);
        let naive = NaiveScheduler::new(&nodes, &[]);
        let (indexed_time, indexed) = median_run(|| scheduler.clone().place(&tasks));
        let (naive_time, reference) = median_run(|| naive.clone().place(&tasks));
        let indexed_rate = per_second(tasks.len(), indexed_time);
        let naive_rate = per_second(tasks.len(), naive_time);
        println!(
            "{:<34} {:>14.0} {:>14.0} {:>8.0}x {:>10}",
            strategy.as_str(),
            indexed_rate,
            naive_rate,
            indexed_rate / naive_rate,
            if indexed == reference { "yes" } else { "NO" }
        );
    }
}

/// Runs `place` `RUNS` times and returns the median duration and the last
/// decisions.
fn median_run(mut place: impl FnMut() -> Vec<Decision>) -> (Duration, Vec<Decision>) {
    let mut times = Vec::with_capacity(RUNS);
    let mut decisions = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        decisions = black_box(place());
        times.push(started.elapsed());
    }
    times.sort_unstable();
    (times[RUNS / 2], decisions)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn per_second(count: usize, duration: Duration) -> f64 {
    count as f64 / duration.as_secs_f64()
}

fn node(i: usize) -> Node {
    let mut tags = BTreeSet::from([format!("zone:z{}", i % ZONES)]);
    if i % SSD_NODE_EVERY == 0 {
        tags.insert("ssd".to_string());
    }
    Node {
        id: format!("node-{i:05}"),
        name: format!("host-{i:05}"),
        address: String::new(),
        tags,
        resources: Resources { millicpus: NODE_MILLICPUS, memory_bytes: NODE_MEMORY_BYTES },
        availability: Availability::Active,
        status: NodeStatus::Ready,
        status_message: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// `count` pending tasks of one strategy, in services of `per_service`
/// tasks. Replicated strategies: some services constrained to `ssd`, some
/// publishing a host port. Every-node: one task per node per service, the
/// node already named.
fn batch(strategy: Strategy, count: usize, per_service: usize) -> Vec<Task> {
    (0..count)
        .map(|i| {
            let service = i / per_service;
            let node_id = (strategy == Strategy::EveryNode).then(|| format!("node-{:05}", i % NODES));
            let mut spec = ServiceSpec::new(format!("svc-{service}"), "busybox:latest");
            spec.strategy = strategy;
            spec.resources = Resources { millicpus: TASK_MILLICPUS, memory_bytes: TASK_MEMORY_BYTES };
            if strategy != Strategy::EveryNode {
                if service % SSD_SERVICE_EVERY == SSD_SERVICE_EVERY - 1 {
                    spec.tags = vec!["ssd".to_string()];
                }
                if service % PORT_SERVICE_EVERY == PORT_SERVICE_EVERY - 1 {
                    let host_port = FIRST_HOST_PORT + (service / PORT_SERVICE_EVERY) as u16;
                    spec.ports = vec![PortMapping { host_port, container_port: 80, protocol: Protocol::Tcp }];
                }
            }
            Task {
                id: format!("task-{i:06}"),
                service_id: format!("service-{service:04}"),
                service_name: spec.name.clone(),
                service_version: 1,
                slot: (i % per_service) as u32,
                spec,
                node_id,
                desired: DesiredState::Running,
                state: TaskState::Pending,
                health: Health::None,
                container_id: String::new(),
                exit_code: None,
                message: String::new(),
                attempt: 0,
                created_at_ms: 0,
                state_since_ms: 0,
                started_at_ms: 0,
            }
        })
        .collect()
}
