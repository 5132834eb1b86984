//! One table per placement rule: which nodes are eligible, how each
//! strategy orders them, how every-node tasks are confirmed, what the
//! refusals say, and how the incremental updates keep the indexes true.

mod common;

use berth_core::{Availability, NodeStatus, Protocol, Strategy, TaskState};
use berth_scheduler::{partition_decisions, Decision, NodeUsage, Scheduler};
use common::*;

#[test]
fn six_tasks_over_three_identical_nodes_land_two_per_node() {
    let nodes = [node("n1", &[]), node("n2", &[]), node("n3", &[])];
    let pending: Vec<_> = (0..6).map(|i| task(&format!("t{i}"), "web")).collect();
    let decisions = Scheduler::new(&nodes, &[]).place(&pending);
    assert_eq!(chosen_nodes(&decisions), ["n1", "n2", "n3", "n1", "n2", "n3"]);
    assert!(tasks_per_node(&decisions).values().all(|&count| count == 2));
}

#[test]
fn emptiest_node_orders_by_tasks_then_free_memory_then_free_cpu_then_id() {
    struct Case {
        name: &'static str,
        /// (id, millicpus, memory, tasks already running there)
        nodes: Vec<(&'static str, u64, u64, usize)>,
        expected: &'static str,
    }
    let cases = [
        Case { name: "fewest tasks wins", nodes: vec![("a", 0, 0, 1), ("b", 0, 0, 0)], expected: "b" },
        Case {
            name: "fewest tasks beats more free memory",
            nodes: vec![("a", 4000, 64 * GIB, 1), ("b", 1000, GIB, 0)],
            expected: "b",
        },
        Case {
            name: "then most free memory",
            nodes: vec![("a", 8000, 2 * GIB, 0), ("b", 1000, 4 * GIB, 0)],
            expected: "b",
        },
        Case {
            name: "then most free cpu",
            nodes: vec![("a", 2000, 4 * GIB, 0), ("b", 3000, 4 * GIB, 0)],
            expected: "b",
        },
        Case { name: "then smallest id", nodes: vec![("b", 1000, GIB, 0), ("a", 1000, GIB, 0)], expected: "a" },
        Case {
            name: "unknown memory ranks as the most free",
            nodes: vec![("a", 1000, 64 * GIB, 0), ("b", 1000, 0, 0)],
            expected: "b",
        },
    ];
    for case in cases {
        let nodes: Vec<_> = case.nodes.iter().map(|&(id, cpu, mem, _)| sized(node(id, &[]), cpu, mem)).collect();
        let running: Vec<_> = case
            .nodes
            .iter()
            .flat_map(|&(id, _, _, tasks)| {
                (0..tasks).map(move |i| running_on(task(&format!("{id}-old{i}"), "other"), id))
            })
            .collect();
        let decisions = Scheduler::new(&nodes, &running).place(&[task("t", "web")]);
        assert_eq!(chosen_nodes(&decisions), [case.expected], "{}", case.name);
    }
}

#[test]
fn nodes_that_are_not_ready_and_active_get_no_new_tasks() {
    let cases = [
        (Availability::Pause, NodeStatus::Ready, "no nodes are ready and active: 1 paused"),
        (Availability::Drain, NodeStatus::Ready, "no nodes are ready and active: 1 draining"),
        (Availability::Active, NodeStatus::Down, "no nodes are ready and active: 1 down"),
        (Availability::Active, NodeStatus::Unknown, "no nodes are ready and active: 1 not ready yet"),
        (Availability::Pause, NodeStatus::Down, "no nodes are ready and active: 1 down"),
    ];
    for (availability, status, alone_reason) in cases {
        let mut unfit = node("a-unfit", &[]);
        unfit.availability = availability;
        unfit.status = status;
        let what = format!("{availability}/{status}");
        for strategy in [Strategy::EmptiestNode, Strategy::HighAvailability] {
            let pending: Vec<_> = (0..3).map(|i| with_strategy(task(&format!("t{i}"), "web"), strategy)).collect();
            let with_good = Scheduler::new(&[unfit.clone(), node("b-good", &[])], &[]).place(&pending);
            assert_eq!(chosen_nodes(&with_good), ["b-good"; 3], "{what} with {strategy}");
            let alone = Scheduler::new(std::slice::from_ref(&unfit), &[]).place(&pending[..1]);
            assert_eq!(only_reason(&alone), alone_reason, "{what} with {strategy}");
        }
        let pinned_there =
            Scheduler::new(std::slice::from_ref(&unfit), &[]).place(&[pinned(task("t", "agent"), "a-unfit")]);
        assert!(matches!(pinned_there[0], Decision::Unplaceable { .. }), "{what}: every-node");
    }
}

#[test]
fn a_task_goes_only_to_nodes_carrying_all_its_tags() {
    let nodes = [node("a", &["ssd"]), node("b", &["ssd", "gpu"]), node("c", &["gpu", "zone:x"]), node("d", &[])];
    let cases: [(&[&str], &[&str]); 6] = [
        (&[], &["a", "b", "c", "d"]),
        (&["ssd"], &["a", "b"]),
        (&["gpu"], &["b", "c"]),
        (&["gpu", "ssd"], &["b"]),
        (&["ssd", "gpu", "ssd"], &["b"]),
        (&["zone:x"], &["c"]),
    ];
    for (tags, allowed) in cases {
        let pending: Vec<_> = (0..8).map(|i| with_tags(task(&format!("t{i}"), "web"), tags)).collect();
        let decisions = Scheduler::new(&nodes, &[]).place(&pending);
        let used: Vec<String> = tasks_per_node(&decisions).into_keys().collect();
        assert_eq!(used, allowed, "tags {tags:?}");
        assert_eq!(decisions.iter().filter(|d| d.node_id().is_some()).count(), 8, "tags {tags:?}");
    }
    let refused = Scheduler::new(&nodes, &[]).place(&[with_tags(task("t", "web"), &["ssd", "zone:x"])]);
    assert_eq!(only_reason(&refused), "no ready, active node carries tags [ssd, zone:x]");
}

#[test]
fn a_reservation_must_fit_the_free_capacity() {
    struct Case {
        name: &'static str,
        total: (u64, u64),
        held: (u64, u64),
        want: (u64, u64),
        fits: bool,
    }
    let cases = [
        Case { name: "exactly fits", total: (2000, 2 * GIB), held: (1000, GIB), want: (1000, GIB), fits: true },
        Case { name: "memory short", total: (2000, 2 * GIB), held: (0, GIB + MIB), want: (0, GIB), fits: false },
        Case { name: "cpu short", total: (2000, 2 * GIB), held: (1500, 0), want: (600, 0), fits: false },
        Case {
            name: "unknown memory fits any",
            total: (2000, 0),
            held: (0, 64 * GIB),
            want: (0, 64 * GIB),
            fits: true,
        },
        Case { name: "unknown cpu fits any", total: (0, GIB), held: (64_000, 0), want: (64_000, 0), fits: true },
        Case {
            name: "no reservation fits a full node",
            total: (1000, GIB),
            held: (1000, GIB),
            want: (0, 0),
            fits: true,
        },
        Case {
            name: "over-committed node takes nothing",
            total: (1000, GIB),
            held: (2000, 2 * GIB),
            want: (1, 1),
            fits: false,
        },
    ];
    for case in cases {
        let nodes = [sized(node("n", &[]), case.total.0, case.total.1)];
        let held = [running_on(reserving(task("old", "db"), case.held.0, case.held.1), "n")];
        let decisions = Scheduler::new(&nodes, &held).place(&[reserving(task("t", "web"), case.want.0, case.want.1)]);
        assert_eq!(decisions[0].node_id().is_some(), case.fits, "{}: {decisions:?}", case.name);
    }
}

#[test]
fn a_batch_sees_the_reservations_of_its_own_earlier_placements() {
    let nodes = [sized(node("n1", &[]), 1000, GIB), sized(node("n2", &[]), 1000, GIB)];
    let pending: Vec<_> = (0..5).map(|i| reserving(task(&format!("t{i}"), "web"), 500, 512 * MIB)).collect();
    let decisions = Scheduler::new(&nodes, &[]).place(&pending);
    assert_eq!(chosen_nodes(&decisions), ["n1", "n2", "n1", "n2", "-"]);
    assert_eq!(only_reason(&decisions[4..]), "no node has 512 MiB memory free (most free: 0 bytes on n1)");
}

#[test]
fn a_host_port_is_published_once_per_node_and_protocol() {
    let nodes = [node("n1", &[]), node("n2", &[])];
    let web = |id: &str| publishing(task(id, "web"), &[(8080, Protocol::Tcp)]);
    let decisions = Scheduler::new(&nodes, &[]).place(&[web("t1"), web("t2"), web("t3")]);
    assert_eq!(chosen_nodes(&decisions), ["n1", "n2", "-"]);
    assert_eq!(only_reason(&decisions[2..]), "host port 8080/tcp is in use on every eligible node");

    let held = [running_on(web("old"), "n1")];
    let cases = [
        ("same port over udp", publishing(task("t", "dns"), &[(8080, Protocol::Udp)]), "n1"),
        ("another port", publishing(task("t", "api"), &[(9090, Protocol::Tcp)]), "n1"),
        ("same port and protocol", publishing(task("t", "api"), &[(8080, Protocol::Tcp)]), "n2"),
        (
            "one of several ports taken",
            publishing(task("t", "api"), &[(80, Protocol::Tcp), (8080, Protocol::Tcp)]),
            "n2",
        ),
    ];
    for (name, pending, expected) in cases {
        // n1 has one task more than n2, so without the port rule n2 would win;
        // put a task on n2 too so the tie goes to n1 by id.
        let held = [held[0].clone(), running_on(task("other", "misc"), "n2")];
        let decisions = Scheduler::new(&nodes, &held).place(&[pending]);
        assert_eq!(chosen_nodes(&decisions), [expected], "{name}");
    }
}

#[test]
fn high_availability_spreads_across_zone_values_before_nodes() {
    let nodes = [node("a1", &["zone:a"]), node("a2", &["zone:a"]), node("b1", &["zone:b"])];
    let pending =
        |strategy| -> Vec<_> { (0..4).map(|i| with_strategy(task(&format!("t{i}"), "web"), strategy)).collect() };
    let spread = Scheduler::new(&nodes, &[]).place(&pending(Strategy::HighAvailability));
    assert_eq!(chosen_nodes(&spread), ["a1", "b1", "a2", "b1"]);
    let emptiest = Scheduler::new(&nodes, &[]).place(&pending(Strategy::EmptiestNode));
    assert_eq!(chosen_nodes(&emptiest), ["a1", "a2", "b1", "a1"]);
}

#[test]
fn high_availability_puts_nodes_without_a_zone_in_one_zone_of_their_own() {
    let nodes = [node("n1", &[]), node("n2", &[]), node("z1", &["zone:a"])];
    let pending: Vec<_> =
        (0..4).map(|i| with_strategy(task(&format!("t{i}"), "web"), Strategy::HighAvailability)).collect();
    let decisions = Scheduler::new(&nodes, &[]).place(&pending);
    assert_eq!(chosen_nodes(&decisions), ["n1", "z1", "n2", "z1"]);
}

#[test]
fn high_availability_prefers_fewer_tasks_of_the_service_then_fewer_tasks_overall() {
    struct Case {
        name: &'static str,
        /// (node, service) of the tasks already running
        running: Vec<(&'static str, &'static str)>,
        expected: &'static str,
    }
    let cases = [
        Case {
            name: "a node busy with other services beats one running this service",
            running: vec![("a", "other"), ("a", "other"), ("b", "web")],
            expected: "a",
        },
        Case { name: "equal for the service: fewer tasks overall", running: vec![("a", "other")], expected: "b" },
        Case {
            name: "the zone count comes first, even against an idle node",
            running: vec![("a", "web"), ("c", "other"), ("c", "other")],
            expected: "c",
        },
    ];
    for case in cases {
        let nodes = [node("a", &["zone:x"]), node("b", &["zone:x"]), node("c", &["zone:y"])];
        let running: Vec<_> = case
            .running
            .iter()
            .enumerate()
            .map(|(i, &(on, service))| running_on(task(&format!("old{i}"), service), on))
            .collect();
        // In the first two cases zone y holds no task of web either, so make
        // it unavailable to leave only the node rule deciding.
        let tags: &[&str] = if case.expected == "c" { &[] } else { &["zone:x"] };
        let pending = with_tags(with_strategy(task("t", "web"), Strategy::HighAvailability), tags);
        let decisions = Scheduler::new(&nodes, &running).place(&[pending]);
        assert_eq!(chosen_nodes(&decisions), [case.expected], "{}", case.name);
    }
}

#[test]
fn high_availability_counts_tasks_on_paused_nodes_in_their_zone() {
    let mut paused = node("a1", &["zone:a"]);
    paused.availability = Availability::Pause;
    let nodes = [paused, node("a2", &["zone:a"]), node("b1", &["zone:b"])];
    let running = [running_on(task("old", "web"), "a1")];
    let pending = with_strategy(task("t", "web"), Strategy::HighAvailability);
    let decisions = Scheduler::new(&nodes, &running).place(&[pending]);
    assert_eq!(chosen_nodes(&decisions), ["b1"]);
}

#[test]
fn every_node_tasks_are_confirmed_on_their_node_or_refused_with_why() {
    let mut paused = node("paused", &[]);
    paused.availability = Availability::Pause;
    let mut draining = node("draining", &[]);
    draining.availability = Availability::Drain;
    let mut down = node("down", &[]);
    down.status = NodeStatus::Down;
    let mut joining = node("joining", &[]);
    joining.status = NodeStatus::Unknown;
    let nodes = [
        sized(node("good", &["ssd"]), 2000, 2 * GIB),
        sized(node("small", &["ssd"]), 500, 256 * MIB),
        paused,
        draining,
        down,
        joining,
        node("plain", &[]),
        node("busy", &["ssd"]),
    ];
    let held = [running_on(publishing(task("old", "web"), &[(443, Protocol::Tcp)]), "busy")];
    let agent = |node_id: &str| {
        publishing(
            reserving(with_tags(pinned(task("t", "agent"), node_id), &["ssd"]), 1000, 512 * MIB),
            &[(443, Protocol::Tcp)],
        )
    };
    let cases = [
        ("good", Ok("good")),
        ("small", Err("node small has 256 MiB memory free, the task reserves 512 MiB")),
        ("paused", Err("node paused is paused")),
        ("draining", Err("node draining is draining")),
        ("down", Err("node down is down")),
        ("joining", Err("node joining is not ready yet")),
        ("plain", Err("node plain does not carry tags [ssd]")),
        ("busy", Err("host port 443/tcp is already in use on node busy")),
        ("gone", Err("node gone is not in the cluster")),
    ];
    for (target, expected) in cases {
        let decisions = Scheduler::new(&nodes, &held).place(&[agent(target)]);
        let got = match &decisions[0] {
            Decision::Assign { node_id, .. } => Ok(node_id.as_str()),
            Decision::Unplaceable { reason, .. } => Err(reason.as_str()),
        };
        assert_eq!(got, expected, "pinned to {target}");
    }
    let mut cpu_bound = agent("small");
    cpu_bound.spec.resources.memory_bytes = 0;
    let decisions = Scheduler::new(&nodes, &held).place(&[cpu_bound]);
    assert_eq!(only_reason(&decisions), "node small has 0.5 CPUs free, the task reserves 1 CPU");

    let mut unpinned = agent("good");
    unpinned.node_id = None;
    let decisions = Scheduler::new(&nodes, &held).place(&[unpinned]);
    assert_eq!(
        only_reason(&decisions),
        "an every-node task must name its node, and this one names none (the orchestrator sets it)"
    );
}

#[test]
fn unplaceable_reasons_say_what_is_missing() {
    let two_nodes = || [sized(node("n1", &["ssd"]), 1000, GIB), sized(node("n2", &[]), 2000, 256 * MIB)];
    let down = |id: &str| {
        let mut n = node(id, &[]);
        n.status = NodeStatus::Down;
        n
    };
    let mut paused = node("p", &[]);
    paused.availability = Availability::Pause;
    let held_ports = [
        running_on(publishing(task("o1", "lb"), &[(80, Protocol::Tcp)]), "n1"),
        running_on(publishing(task("o2", "lb"), &[(443, Protocol::Tcp)]), "n2"),
    ];
    let cases = [
        ("no nodes", vec![], vec![], task("t", "web"), "no nodes have joined the cluster"),
        (
            "none ready",
            vec![down("d1"), paused, down("d2")],
            vec![],
            task("t", "web"),
            "no nodes are ready and active: 2 down, 1 paused",
        ),
        (
            "tags",
            two_nodes().to_vec(),
            vec![],
            with_tags(task("t", "web"), &["ssd", "gpu"]),
            "no ready, active node carries tags [gpu, ssd]",
        ),
        (
            "memory",
            two_nodes().to_vec(),
            vec![],
            reserving(task("t", "web"), 0, 2 * GIB),
            "no node has 2 GiB memory free (most free: 1 GiB on n1)",
        ),
        (
            "memory among tagged nodes",
            two_nodes().to_vec(),
            vec![],
            reserving(with_tags(task("t", "web"), &["ssd"]), 0, 1536 * MIB),
            "no node carrying tags [ssd] has 1536 MiB memory free (most free: 1 GiB on n1)",
        ),
        (
            "cpu",
            two_nodes().to_vec(),
            vec![],
            reserving(task("t", "web"), 2500, 0),
            "no node has 2.5 CPUs free (most free: 2 CPUs on n2)",
        ),
        (
            "memory and cpu on different nodes",
            two_nodes().to_vec(),
            vec![],
            reserving(task("t", "web"), 1500, 512 * MIB),
            "no node has both 512 MiB memory and 1.5 CPUs free",
        ),
        (
            "one port everywhere",
            two_nodes().to_vec(),
            vec![held_ports[0].clone(), running_on(publishing(task("o3", "lb"), &[(80, Protocol::Tcp)]), "n2")],
            publishing(task("t", "web"), &[(80, Protocol::Tcp)]),
            "host port 80/tcp is in use on every eligible node",
        ),
        (
            "different ports on different nodes",
            two_nodes().to_vec(),
            held_ports.to_vec(),
            publishing(task("t", "web"), &[(80, Protocol::Tcp), (443, Protocol::Tcp)]),
            "every eligible node already uses one of host ports 80/tcp, 443/tcp",
        ),
    ];
    for (name, nodes, held, pending, expected) in cases {
        for strategy in [Strategy::EmptiestNode, Strategy::HighAvailability] {
            let pending = with_strategy(pending.clone(), strategy);
            let decisions = Scheduler::new(&nodes, &held).place(&[pending]);
            assert_eq!(only_reason(&decisions), expected, "{name} with {strategy}");
        }
    }
}

#[test]
fn the_same_refusal_is_given_to_every_task_of_a_batch_that_cannot_fit() {
    let nodes = [sized(node("n1", &[]), 1000, GIB)];
    let pending: Vec<_> = (0..3).map(|i| reserving(task(&format!("t{i}"), "web"), 0, 4 * GIB)).collect();
    let (assigned, refused) = partition_decisions(Scheduler::new(&nodes, &[]).place(&pending));
    assert!(assigned.is_empty());
    let expected = "no node has 4 GiB memory free (most free: 1 GiB on n1)";
    assert_eq!(refused, [("t0", expected), ("t1", expected), ("t2", expected)].map(|(t, r)| (t.into(), r.into())));
}

#[test]
fn only_assigned_unfinished_tasks_hold_resources() {
    let nodes = [sized(node("n", &[]), 1000, GIB)];
    let full = |id: &str, state: TaskState| {
        let mut held = running_on(reserving(task(id, "db"), 1000, GIB), "n");
        held.state = state;
        held
    };
    let cases = [
        (TaskState::New, true),
        (TaskState::Pending, true),
        (TaskState::Assigned, false),
        (TaskState::Running, false),
        (TaskState::Complete, true),
        (TaskState::Shutdown, true),
        (TaskState::Failed, true),
        (TaskState::Orphaned, true),
    ];
    for (state, room_left) in cases {
        let decisions = Scheduler::new(&nodes, &[full("old", state)]).place(&[reserving(task("t", "web"), 1, 1)]);
        assert_eq!(decisions[0].node_id().is_some(), room_left, "a {state} task on the node");
    }
    let mut stopping = full("old", TaskState::Running);
    stopping.desired = berth_core::DesiredState::Shutdown;
    let decisions = Scheduler::new(&nodes, &[stopping]).place(&[reserving(task("t", "web"), 1, 1)]);
    assert!(decisions[0].node_id().is_none(), "a task asked to stop holds its room until it has");
}

#[test]
fn released_tasks_give_their_room_back_and_holding_twice_counts_once() {
    let nodes = [sized(node("n", &[]), 1000, GIB)];
    let old = running_on(reserving(task("old", "db"), 1000, GIB), "n");
    let mut scheduler = Scheduler::new(&nodes, &[]);
    scheduler.task_started_holding(&old);
    scheduler.task_started_holding(&old);
    assert_eq!(scheduler.usage("n"), Some(NodeUsage { tasks: 1, reserved: old.spec.resources }));
    let want = reserving(task("t", "web"), 1000, GIB);
    assert!(scheduler.place([&want])[0].node_id().is_none());

    scheduler.task_released(&old);
    scheduler.task_released(&old);
    assert_eq!(scheduler.usage("n"), Some(NodeUsage { tasks: 0, reserved: Default::default() }));
    assert_eq!(chosen_nodes(&scheduler.place([&want])), ["n"]);
}

#[test]
fn a_finished_task_passed_as_holding_is_released() {
    let nodes = [node("n", &[])];
    let mut held = running_on(task("old", "db"), "n");
    let mut scheduler = Scheduler::new(&nodes, [&held]);
    held.state = TaskState::Failed;
    scheduler.task_started_holding(&held);
    assert_eq!(scheduler.usage("n").map(|u| u.tasks), Some(0));
}

#[test]
fn a_task_that_moves_is_counted_on_its_new_node_only() {
    let nodes = [node("a", &[]), node("b", &[])];
    let mut moving = running_on(task("m", "db"), "a");
    let mut scheduler = Scheduler::new(&nodes, [&moving]);
    moving.node_id = Some("b".into());
    scheduler.task_started_holding(&moving);
    assert_eq!(scheduler.usage("a").map(|u| u.tasks), Some(0));
    assert_eq!(scheduler.usage("b").map(|u| u.tasks), Some(1));
}

#[test]
fn placing_a_task_again_gives_back_what_it_held() {
    let nodes = [sized(node("n", &[]), 1000, GIB)];
    let mut scheduler = Scheduler::new(&nodes, &[]);
    let t = reserving(task("t", "web"), 1000, GIB);
    assert_eq!(chosen_nodes(&scheduler.place([&t])), ["n"]);
    assert_eq!(chosen_nodes(&scheduler.place([&t])), ["n"], "its own reservation must not block it");
    assert_eq!(scheduler.usage("n").map(|u| u.tasks), Some(1));
}

#[test]
fn node_updates_change_where_tasks_go() {
    let mut a = node("a", &[]);
    let b = node("b", &["ssd"]);
    let mut scheduler = Scheduler::new([&a, &b], &[]);
    let ssd = |id: &str| with_tags(task(id, "web"), &["ssd"]);
    assert_eq!(chosen_nodes(&scheduler.place([&ssd("t1")])), ["b"]);

    a.tags.insert("ssd".into());
    scheduler.upsert_node(&a);
    assert_eq!(chosen_nodes(&scheduler.place([&ssd("t2")])), ["a"], "a joined the ssd view");

    a.availability = Availability::Drain;
    scheduler.upsert_node(&a);
    assert_eq!(chosen_nodes(&scheduler.place([&ssd("t3"), &task("t4", "web")])), ["b", "b"]);

    a.availability = Availability::Active;
    scheduler.upsert_node(&a);
    scheduler.remove_node("b");
    assert_eq!(chosen_nodes(&scheduler.place([&ssd("t5")])), ["a"]);
    assert_eq!(scheduler.usage("b").map(|u| u.tasks), Some(3), "b's tasks stay counted until released");

    scheduler.remove_node("a");
    let decisions = scheduler.place([&task("t6", "web")]);
    assert_eq!(only_reason(&decisions), "no nodes have joined the cluster");
}

#[test]
fn tasks_held_on_a_node_before_it_joins_count_once_it_does() {
    let early = running_on(reserving(task("early", "db"), 0, GIB), "late");
    let mut scheduler = Scheduler::new(&[node("other", &[])], [&early]);
    scheduler.upsert_node(&sized(node("late", &[]), 0, GIB));
    let decisions = scheduler.place([&reserving(with_tags(task("t", "web"), &[]), 0, MIB)]);
    assert_eq!(chosen_nodes(&decisions), ["other"]);
    let decisions =
        Scheduler::new(&[sized(node("late", &[]), 0, GIB)], [&early]).place([&reserving(task("t", "web"), 0, MIB)]);
    assert_eq!(only_reason(&decisions), "no node has 1 MiB memory free (most free: 0 bytes on late)");
}

#[test]
fn reasons_name_a_node_by_its_name_when_it_has_one() {
    let mut n = sized(node("3f9a", &[]), 0, GIB);
    n.name = "worker-1".into();
    let decisions = Scheduler::new(&[n], &[]).place([&reserving(task("t", "web"), 0, 2 * GIB)]);
    assert_eq!(only_reason(&decisions), "no node has 2 GiB memory free (most free: 1 GiB on worker-1)");
}

#[test]
fn decisions_split_into_assignments_and_refusals_in_batch_order() {
    let decisions = vec![
        Decision::Assign { task_id: "t1".into(), node_id: "n1".into() },
        Decision::Unplaceable { task_id: "t2".into(), reason: "why".into() },
        Decision::Assign { task_id: "t3".into(), node_id: "n2".into() },
    ];
    assert_eq!(decisions[1].task_id(), "t2");
    let (assigned, refused) = partition_decisions(decisions);
    assert_eq!(assigned, [("t1".to_string(), "n1".to_string()), ("t3".to_string(), "n2".to_string())]);
    assert_eq!(refused, [("t2".to_string(), "why".to_string())]);
}

#[test]
fn one_real_sized_node_with_hex_ids_takes_every_task_of_a_batch() {
    let nodes = [sized(node("f7f4435d7da704f358aa4cba", &[]), 2_000, 25_232_846_848)];
    let pending: Vec<_> = ["9c648869a220aa00bb11cc22", "babf0598db99aa00bb11cc22", "a7f302d810baaa00bb11cc22"]
        .iter()
        .map(|id| task(id, "79413008bc0da26ec75f4c36"))
        .collect();
    let decisions = Scheduler::new(&nodes, &[]).place(&pending);
    assert_eq!(chosen_nodes(&decisions), ["f7f4435d7da704f358aa4cba"; 3], "{decisions:?}");
}
