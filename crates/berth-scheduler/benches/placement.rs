//! Placement throughput: 100,000 tasks over 10,000 nodes for each strategy,
//! and the speed-up over the reference scheduler that scans every node per
//! task, measured in the same process on a smaller batch.
//!
//! Run with `cargo bench -p berth-scheduler` (add `-- --no-baseline` to skip
//! the slow reference). A plain `main` (no criterion) so the output is the
//! numbers that matter: placements per second. Each timing is the median
//! of `RUNS` runs, each on a fresh copy of the same scheduler (the copy is
//! not timed), so no run sees another's placements. Rates are given by
//! wall time and by on-CPU time: on a shared machine the second is the one
//! that does not move with other processes' load.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_core::{
    Availability, Node, NodeStatus, PortMapping, Protocol, Resources, ServiceSpec, Strategy, Task, TaskState,
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
/// A timing shorter than this is too coarse for the on-CPU clock.
const MIN_TIMED: Duration = Duration::from_millis(100);
/// At most this many batches per timing, each on its own copy of the scheduler.
const MAX_REPEATS: u32 = 200;
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
        "{:<34} {:>8} {:>7} {:>9} {:>9} {:>14} {:>16} {:>9}",
        "strategy", "tasks", "nodes", "build ms", "place ms", "placements/s", "on-CPU placem./s", "unplaced"
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
        let (place, decisions) = median_run(|| scheduler.clone(), |s| s.place(&tasks));
        let unplaced = decisions.iter().filter(|d| matches!(d, Decision::Unplaceable { .. })).count();
        println!(
            "{:<34} {:>8} {:>7} {:>9.1} {:>9.1} {:>14.0} {:>16} {:>9}",
            format!("{strategy}{note}"),
            tasks.len(),
            NODES,
            millis(build),
            millis(place.wall),
            per_second(tasks.len(), place.wall),
            on_cpu_rate(tasks.len(), place),
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
    println!(
        "{:<34} {:>12} {:>10} {:>9} {:>16} {:>14} {:>15} {:>6}",
        "strategy",
        "indexed/s",
        "naive/s",
        "speed-up",
        "on-CPU indexed/s",
        "on-CPU naive/s",
        "on-CPU speed-up",
        "same?"
    );
    for strategy in [Strategy::EmptiestNode, Strategy::HighAvailability, Strategy::EveryNode] {
        let per_service = if strategy == Strategy::EveryNode { NODES } else { TASKS_PER_SERVICE };
        let tasks = batch(strategy, BASELINE_TASKS, per_service);
        let scheduler = Scheduler::new(&nodes, &[]);
        let naive = NaiveScheduler::new(&nodes, &[]);
        let (indexed_time, indexed) = median_run(|| scheduler.clone(), |s| s.place(&tasks));
        let (naive_time, reference) = median_run(|| naive.clone(), |s| s.place(&tasks));
        let indexed_rate = per_second(tasks.len(), indexed_time.wall);
        let naive_rate = per_second(tasks.len(), naive_time.wall);
        let on_cpu_speed_up = match (indexed_time.on_cpu, naive_time.on_cpu) {
            (Some(indexed), Some(naive)) if !indexed.is_zero() => {
                format!("{:.0}x", naive.as_secs_f64() / indexed.as_secs_f64())
            }
            _ => "-".to_string(),
        };
        println!(
            "{:<34} {:>12.0} {:>10.0} {:>8.0}x {:>16} {:>14} {:>15} {:>6}",
            strategy.as_str(),
            indexed_rate,
            naive_rate,
            indexed_rate / naive_rate,
            on_cpu_rate(tasks.len(), indexed_time),
            on_cpu_rate(tasks.len(), naive_time),
            on_cpu_speed_up,
            if indexed == reference { "yes" } else { "NO" }
        );
    }
}

/// Wall time, and the time this thread actually ran, which leaves out the
/// time other processes on a busy machine took the CPU.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    on_cpu: Option<Duration>,
}

/// Runs `place` `RUNS` times, each on a fresh state from `prepare` (not
/// timed), and returns the median wall and on-CPU times per batch and the
/// last decisions. A batch faster than `MIN_TIMED` is placed several times
/// per timing (on as many fresh states), since the on-CPU clock only
/// advances at scheduler ticks.
fn median_run<S>(
    mut prepare: impl FnMut() -> S,
    mut place: impl FnMut(&mut S) -> Vec<Decision>,
) -> (Timing, Vec<Decision>) {
    let mut state = prepare();
    let started = Instant::now();
    let mut decisions = black_box(place(&mut state));
    let once = started.elapsed();
    drop(state);
    let repeats = (MIN_TIMED.as_nanos() / once.as_nanos().max(1)).clamp(1, MAX_REPEATS as u128) as u32;

    let mut walls = Vec::with_capacity(RUNS);
    let mut cpus = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut states: Vec<S> = (0..repeats).map(|_| prepare()).collect();
        let cpu_before = thread_cpu_time();
        let started = Instant::now();
        for state in &mut states {
            decisions = black_box(place(state));
        }
        walls.push(started.elapsed() / repeats);
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu_time()) {
            cpus.push(after.saturating_sub(before) / repeats);
        }
    }
    walls.sort_unstable();
    cpus.sort_unstable();
    let on_cpu = (cpus.len() == RUNS).then(|| cpus[RUNS / 2]).filter(|d| !d.is_zero());
    (Timing { wall: walls[RUNS / 2], on_cpu }, decisions)
}

/// How long this thread has run on a CPU (Linux's schedstat), if known.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn on_cpu_rate(count: usize, timing: Timing) -> String {
    timing.on_cpu.map_or_else(|| "-".to_string(), |on_cpu| format!("{:.0}", per_second(count, on_cpu)))
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
        agent_version: String::new(),
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
                service_version: 1,
                node_id,
                state: TaskState::Pending,
                ..Task::new(format!("task-{i:06}"), format!("service-{service:04}"), (i % per_service) as u32, spec)
            }
        })
        .collect()
}
