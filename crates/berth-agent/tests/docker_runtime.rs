//! The Docker runtime against a real Docker Engine, with the image built by
//! `scripts/build-test-image.sh` (no registry is needed or used).
//!
//! Each test owns a fresh node id, so tests running in parallel (or in
//! parallel processes under nextest) never see each other's containers,
//! and a guard removes that node's containers however the test ends.
//! Without Docker the tests print why they are skipped, except under
//! `CI=true`, where a missing engine is a failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_agent::runtime::{
    ContainerSpec, DockerRuntime, DockerRuntimeConfig, Runtime, RuntimeError, RuntimeEvent, RuntimeEventStream,
    LABEL_NODE, LABEL_SERVICE, LABEL_SLOT, LABEL_TASK,
};
use berth_core::{Health, HealthCheck, PortMapping, Protocol, ServiceSpec, Task, TaskState};
use futures::StreamExt;
use tokio::time::Instant;

const TEST_IMAGE: &str = "berth-test/busybox:latest";
/// How long an engine event may take to reach the stream.
const EVENT_DEADLINE_MS: u64 = 10_000;
/// Health checks run every 200 ms in these tests; this leaves room for a
/// loaded machine.
const HEALTH_DEADLINE_MS: u64 = 20_000;
const HEALTH_INTERVAL_MS: u64 = 200;
/// How long a published port may take to start answering.
const PORT_DEADLINE_MS: u64 = 10_000;
/// Between connection attempts to a port that is not answering yet.
const PORT_RETRY_MS: u64 = 50;
/// Docker's exit status for a process killed by SIGKILL.
const SIGKILL_EXIT_CODE: i64 = 137;

static IMAGE_BUILT: OnceLock<()> = OnceLock::new();

/// Builds the test image once per process; the script itself is
/// idempotent and serialised across processes.
fn ensure_test_image() {
    IMAGE_BUILT.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
        let output = Command::new(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed ({}):\n{}\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The runtime, or `None` (after saying so) when Docker is unreachable
/// outside CI.
async fn docker_runtime(test: &str) -> Option<DockerRuntime> {
    docker_runtime_with(test, DockerRuntimeConfig::default()).await
}

async fn docker_runtime_with(test: &str, config: DockerRuntimeConfig) -> Option<DockerRuntime> {
    match DockerRuntime::connect(config).await {
        Ok(runtime) => {
            ensure_test_image();
            Some(runtime)
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the Docker Engine is unreachable, so {test} cannot run: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: the Docker Engine is unreachable: {e}");
            None
        }
    }
}

/// A node id of its own for one test; removes the node's containers when
/// dropped, even if the test panicked.
struct TestNode {
    id: String,
}

impl TestNode {
    fn new() -> Self {
        TestNode { id: format!("test-node-{}", uuid::Uuid::new_v4()) }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop may run while a panic unwinds out of
        // the async test, where no runtime call can be awaited.
        let filter = format!("label={LABEL_NODE}={}", self.id);
        let listed = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output();
        if let Ok(listed) = listed {
            let ids: Vec<String> =
                String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&ids).output();
            }
        }
    }
}

fn task(service: ServiceSpec) -> Task {
    Task {
        service_version: 1,
        state: TaskState::Assigned,
        ..Task::new(uuid::Uuid::new_v4().simple().to_string(), format!("svc-{}", service.name), 1, service)
    }
}

/// A container running `sleep 300` from the test image on `node`.
fn sleeper(node: &TestNode) -> ContainerSpec {
    let mut service = ServiceSpec::new("sleeper", TEST_IMAGE);
    service.command = vec!["sleep".into(), "300".into()];
    ContainerSpec::from_task(&task(service), &node.id)
}

fn with_health(mut spec: ContainerSpec, command: &str) -> ContainerSpec {
    spec.health = Some(HealthCheck {
        command: command.into(),
        interval_ms: HEALTH_INTERVAL_MS,
        timeout_ms: 2_000,
        retries: 1,
        start_period_ms: 0,
    });
    spec
}

/// The first event satisfying `wanted`, or a panic listing what did arrive
/// once `deadline_ms` has passed.
async fn wait_for_event(
    events: &mut RuntimeEventStream,
    deadline_ms: u64,
    what: &str,
    wanted: impl Fn(&RuntimeEvent) -> bool,
) -> RuntimeEvent {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("event stream ended while waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("no {what} within {deadline_ms} ms; saw {seen:?}"),
        }
    }
}

#[tokio::test]
async fn started_container_is_listed_with_berths_labels() {
    let Some(runtime) = docker_runtime("started_container_is_listed_with_berths_labels").await else {
        return;
    };
    let node = TestNode::new();
    let mut spec = sleeper(&node);
    spec.labels.insert("team".into(), "blue".into());
    spec.resources.millicpus = 250;
    spec.resources.memory_bytes = 32 << 20;

    let id = runtime.create_and_start(&spec).await.expect("create and start");

    let listed = runtime.list(&node.id).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let info = &listed[0];
    assert_eq!(info.container_id, id);
    assert_eq!(info.name, spec.name);
    assert_eq!(info.task_id, spec.task_id);
    assert_eq!(info.service_id, spec.service_id);
    assert_eq!(info.slot, Some(spec.slot));
    assert_eq!(info.node_id, node.id);
    assert!(info.running);
    assert_eq!(info.exit_code, None);
    assert_eq!(info.health, Health::None);
    assert!(info.image_id.starts_with("sha256:"), "{}", info.image_id);

    let inspect = runtime.client().inspect_container(&id, None).await.expect("inspect");
    let labels = inspect.config.and_then(|c| c.labels).expect("container has labels");
    assert_eq!(labels.get(LABEL_TASK), Some(&spec.task_id));
    assert_eq!(labels.get(LABEL_SERVICE), Some(&spec.service_id));
    assert_eq!(labels.get(LABEL_NODE), Some(&node.id));
    assert_eq!(labels.get(LABEL_SLOT), Some(&"1".to_string()));
    assert_eq!(labels.get("team"), Some(&"blue".to_string()));
    let host = inspect.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.memory, Some(32 << 20));
    assert_eq!(host.restart_policy.and_then(|p| p.name).map(|n| n.to_string()), Some("no".to_string()));
}

#[tokio::test]
async fn killed_container_is_announced_as_died_promptly() {
    let Some(runtime) = docker_runtime("killed_container_is_announced_as_died_promptly").await else {
        return;
    };
    let node = TestNode::new();
    let spec = sleeper(&node);
    let mut events = runtime.events(&node.id);

    let id = runtime.create_and_start(&spec).await.expect("create and start");
    let started =
        wait_for_event(&mut events, EVENT_DEADLINE_MS, "Started", |e| matches!(e, RuntimeEvent::Started { .. })).await;
    assert_eq!(started, RuntimeEvent::Started { task_id: spec.task_id.clone(), container_id: id.clone() });

    runtime.client().kill_container(&id, None).await.expect("kill behind the runtime's back");
    let died = wait_for_event(&mut events, EVENT_DEADLINE_MS, "Died", |e| matches!(e, RuntimeEvent::Died { .. })).await;
    assert_eq!(
        died,
        RuntimeEvent::Died {
            task_id: spec.task_id.clone(),
            container_id: id.clone(),
            exit_code: Some(SIGKILL_EXIT_CODE)
        }
    );
    let listed = runtime.list(&node.id).await.expect("list");
    assert!(!listed[0].running);
    assert_eq!(listed[0].exit_code, Some(SIGKILL_EXIT_CODE));
}

#[tokio::test]
async fn events_before_the_first_poll_are_not_lost() {
    let Some(runtime) = docker_runtime("events_before_the_first_poll_are_not_lost").await else {
        return;
    };
    let node = TestNode::new();
    let spec = sleeper(&node);
    // Subscribed, but not polled until the container has started and died.
    let mut events = runtime.events(&node.id);
    let id = runtime.create_and_start(&spec).await.expect("create and start");
    runtime.client().kill_container(&id, None).await.expect("kill");
    let died = wait_for_event(&mut events, EVENT_DEADLINE_MS, "Died", |e| matches!(e, RuntimeEvent::Died { .. })).await;
    assert_eq!(died.task_id(), Some(spec.task_id.as_str()));
}

/// Runs a container whose health check is `command` and expects the engine
/// to announce `expected`, and `list` to agree.
async fn health_is_announced(test: &str, command: &str, expected: Health) {
    let Some(runtime) = docker_runtime(test).await else {
        return;
    };
    let node = TestNode::new();
    let spec = with_health(sleeper(&node), command);
    let mut events = runtime.events(&node.id);
    let id = runtime.create_and_start(&spec).await.expect("create and start");
    let changed = wait_for_event(&mut events, HEALTH_DEADLINE_MS, "HealthChanged", |e| {
        matches!(e, RuntimeEvent::HealthChanged { .. })
    })
    .await;
    assert_eq!(
        changed,
        RuntimeEvent::HealthChanged { task_id: spec.task_id.clone(), container_id: id, health: expected }
    );
    let listed = runtime.list(&node.id).await.expect("list");
    assert_eq!(listed[0].health, expected);
}

#[tokio::test]
async fn failing_health_check_is_announced_as_unhealthy() {
    health_is_announced("failing_health_check_is_announced_as_unhealthy", "false", Health::Unhealthy).await;
}

#[tokio::test]
async fn passing_health_check_is_announced_as_healthy() {
    health_is_announced("passing_health_check_is_announced_as_healthy", "true", Health::Healthy).await;
}

#[tokio::test]
async fn missing_image_is_image_not_found_and_creates_nothing() {
    let Some(runtime) = docker_runtime("missing_image_is_image_not_found_and_creates_nothing").await else {
        return;
    };
    let node = TestNode::new();
    let mut spec = sleeper(&node);
    spec.image = format!("berth-test/absent-{}:latest", uuid::Uuid::new_v4().simple());

    let err = runtime.create_and_start(&spec).await.expect_err("the image does not exist");
    assert_eq!(err, RuntimeError::ImageNotFound { image: spec.image.clone() });
    assert_eq!(
        err.to_string(),
        format!("image '{}' not found on this node (no registry is reachable; build or load it here)", spec.image)
    );
    assert!(runtime.list(&node.id).await.expect("list").is_empty());
    let by_name = runtime.client().inspect_container(&spec.name, None).await;
    assert!(by_name.is_err(), "a container named {} exists", spec.name);
}

#[tokio::test]
async fn stop_then_remove_leaves_nothing_for_the_node() {
    let Some(runtime) = docker_runtime("stop_then_remove_leaves_nothing_for_the_node").await else {
        return;
    };
    let node = TestNode::new();
    let spec = sleeper(&node);
    let id = runtime.create_and_start(&spec).await.expect("create and start");
    let mut events = runtime.events(&node.id);

    // `sleep` as PID 1 ignores SIGTERM, so this exercises the kill after
    // the grace period.
    runtime.stop(&id, Duration::from_millis(500)).await.expect("stop");
    let listed = runtime.list(&node.id).await.expect("list");
    assert!(!listed[0].running);
    assert_eq!(listed[0].exit_code, Some(SIGKILL_EXIT_CODE));
    runtime.stop(&id, Duration::from_millis(500)).await.expect("stopping a stopped container succeeds");

    runtime.remove(&id).await.expect("remove");
    assert!(runtime.list(&node.id).await.expect("list").is_empty());
    runtime.remove(&id).await.expect("removing a removed container succeeds");

    wait_for_event(&mut events, EVENT_DEADLINE_MS, "Died", |e| matches!(e, RuntimeEvent::Died { .. })).await;
    let removed =
        wait_for_event(&mut events, EVENT_DEADLINE_MS, "Removed", |e| matches!(e, RuntimeEvent::Removed { .. })).await;
    assert_eq!(removed, RuntimeEvent::Removed { task_id: spec.task_id, container_id: id.clone() });
    let err = runtime.stop(&id, Duration::from_secs(1)).await.expect_err("gone");
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn removing_a_running_container_kills_it() {
    let Some(runtime) = docker_runtime("removing_a_running_container_kills_it").await else {
        return;
    };
    let node = TestNode::new();
    let id = runtime.create_and_start(&sleeper(&node)).await.expect("create and start");
    runtime.remove(&id).await.expect("remove");
    assert!(runtime.list(&node.id).await.expect("list").is_empty());
}

#[tokio::test]
async fn containers_and_events_of_another_node_are_not_seen() {
    let Some(runtime) = docker_runtime("containers_and_events_of_another_node_are_not_seen").await else {
        return;
    };
    let ours = TestNode::new();
    let theirs = TestNode::new();
    let mut events = runtime.events(&ours.id);
    let their_id = runtime.create_and_start(&sleeper(&theirs)).await.expect("create theirs");
    let our_spec = sleeper(&ours);
    let our_id = runtime.create_and_start(&our_spec).await.expect("create ours");

    let listed = runtime.list(&ours.id).await.expect("list");
    assert_eq!(listed.iter().map(|c| c.container_id.as_str()).collect::<Vec<_>>(), vec![our_id.as_str()]);

    // Theirs dies first; the first death our stream reports must be ours.
    runtime.client().kill_container(&their_id, None).await.expect("kill theirs");
    runtime.client().kill_container(&our_id, None).await.expect("kill ours");
    let died = wait_for_event(&mut events, EVENT_DEADLINE_MS, "Died", |e| matches!(e, RuntimeEvent::Died { .. })).await;
    assert_eq!(died.task_id(), Some(our_spec.task_id.as_str()));
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_and_leaves_nothing() {
    let Some(runtime) = docker_runtime("a_command_that_cannot_start_fails_and_leaves_nothing").await else {
        return;
    };
    let node = TestNode::new();
    let mut spec = sleeper(&node);
    spec.command = vec!["/bin/no-such-program".into()];
    let err = runtime.create_and_start(&spec).await.expect_err("cannot start");
    assert!(matches!(err, RuntimeError::StartFailed { .. }), "{err:?}");
    assert!(runtime.list(&node.id).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_second_container_for_the_same_task_is_name_in_use() {
    let Some(runtime) = docker_runtime("a_second_container_for_the_same_task_is_name_in_use").await else {
        return;
    };
    let node = TestNode::new();
    let spec = sleeper(&node);
    runtime.create_and_start(&spec).await.expect("first");
    let err = runtime.create_and_start(&spec).await.expect_err("second");
    assert_eq!(err, RuntimeError::NameInUse { name: spec.name.clone() });
    assert_eq!(runtime.list(&node.id).await.expect("list").len(), 1);
}

/// A loopback port that was free a moment ago.
fn free_local_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn http_get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[tokio::test]
async fn published_port_reaches_the_container() {
    let config = DockerRuntimeConfig { publish_ip: Ipv4Addr::LOCALHOST.into() };
    let Some(runtime) = docker_runtime_with("published_port_reaches_the_container", config).await else {
        return;
    };
    let node = TestNode::new();
    let host_port = free_local_port();
    let mut service = ServiceSpec::new("web", TEST_IMAGE);
    service.command = ["httpd", "-f", "-p", "80", "-h", "/var/www"].map(String::from).to_vec();
    service.ports = vec![PortMapping { host_port, container_port: 80, protocol: Protocol::Tcp }];
    let spec = ContainerSpec::from_task(&task(service), &node.id);
    runtime.create_and_start(&spec).await.expect("create and start");

    let deadline = Instant::now() + Duration::from_millis(PORT_DEADLINE_MS);
    let answer = loop {
        let attempt = tokio::task::spawn_blocking(move || http_get(host_port)).await.expect("request thread");
        match attempt {
            Ok(answer) if answer.contains("berth test image") => break answer,
            other if Instant::now() >= deadline => {
                panic!("port {host_port} did not serve the page within {PORT_DEADLINE_MS} ms: {other:?}")
            }
            // Polling a socket that has no event to wait on; bounded above.
            _ => tokio::time::sleep(Duration::from_millis(PORT_RETRY_MS)).await,
        }
    };
    assert!(answer.starts_with("HTTP/1."), "{answer}");
}

#[tokio::test]
async fn host_resources_come_from_the_engine() {
    let Some(runtime) = docker_runtime("host_resources_come_from_the_engine").await else {
        return;
    };
    let resources = runtime.resources().await.expect("resources");
    assert!(resources.millicpus >= 1_000, "{resources:?}");
    assert_eq!(resources.millicpus % 1_000, 0, "{resources:?}");
    assert!(resources.memory_bytes > 0, "{resources:?}");
}

#[tokio::test]
async fn api_version_is_negotiated_down_to_the_engines() {
    let Some(runtime) = docker_runtime("api_version_is_negotiated_down_to_the_engines").await else {
        return;
    };
    let engine = runtime.client().version().await.expect("version");
    assert_eq!(Some(runtime.api_version()), engine.api_version);
}
