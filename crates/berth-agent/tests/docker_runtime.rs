//! The Docker runtime against a real Docker Engine, with the image built by
//! `scripts/build-test-image.sh` (no registry is needed or used).
//!
//! Each test owns a fresh node id, so tests running in parallel (or in
//! parallel processes under nextest) never see each other's containers,
//! and a guard removes that node's containers however the test ends.
//! Without Docker the tests print why they are skipped, except under
//! `CI=true`, where a missing engine is a failure.
//!
//! Tests that create volumes or stack networks name them uniquely and hold
//! guards that remove them, declared before the node guard so that the
//! node's containers are gone first (locals drop in reverse order).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_agent::runtime::{
    stack_network_name, ContainerSpec, DiscoveryHost, DockerRuntime, DockerRuntimeConfig, Runtime, RuntimeError,
    RuntimeEvent, RuntimeEventStream, LABEL_NODE, LABEL_SERVICE, LABEL_SLOT, LABEL_STACK, LABEL_TASK,
};
use berth_core::{
    Health, HealthCheck, PortMapping, Protocol, ServiceLink, ServiceSpec, Task, TaskState, VolumeKind, VolumeMount,
};
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
/// How long a short script in a container may take to run and exit; the
/// discovery script retries its first request for up to 10 s itself.
const EXIT_DEADLINE_MS: u64 = 30_000;
/// Containers started at once, per runtime, by the network race test.
const RACING_CONTAINERS_PER_AGENT: usize = 4;

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

/// True when `CI` is set to any value that means yes (`true`, `1`, `yes`).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
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
        Err(e) if under_ci() => panic!("under CI the Docker Engine is unreachable, so {test} cannot run: {e}"),
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

/// A start that comes while a dead container is being torn down waits for
/// the teardown (`wait_down`), and then starts: the wait never blocks it.
#[tokio::test]
async fn a_start_during_a_teardown_goes_ahead_once_the_dead_container_is_down() {
    let Some(runtime) = docker_runtime("a_start_during_a_teardown_goes_ahead_once_the_dead_container_is_down").await
    else {
        return;
    };
    let runtime = std::sync::Arc::new(runtime);
    let node = TestNode::new();
    let mut events = runtime.events(&node.id);
    let dead = runtime.create_and_start(&sleeper(&node)).await.expect("create and start");
    runtime.client().kill_container(&dead, None).await.expect("kill behind the runtime's back");
    wait_for_event(&mut events, EVENT_DEADLINE_MS, "Died", |e| matches!(e, RuntimeEvent::Died { .. })).await;

    let teardown = {
        let (runtime, dead) = (runtime.clone(), dead.clone());
        tokio::spawn(async move { runtime.wait_down(&dead).await })
    };
    let replacement_spec = sleeper(&node);
    let replacement =
        tokio::time::timeout(Duration::from_millis(EVENT_DEADLINE_MS), runtime.create_and_start(&replacement_spec))
            .await
            .expect("the replacement starts within the deadline")
            .expect("create and start the replacement");
    tokio::time::timeout(Duration::from_millis(EVENT_DEADLINE_MS), teardown)
        .await
        .expect("wait_down resolves within the deadline")
        .expect("wait_down does not panic");

    let listed = runtime.list(&node.id).await.expect("list");
    let running: Vec<_> = listed.iter().filter(|c| c.running).map(|c| c.container_id.clone()).collect();
    assert_eq!(running, vec![replacement], "only the replacement runs: {listed:?}");
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
        format!("image '{}' not found on this node (it names no registry to pull from: build or load it on the node, or name its registry)", spec.image)
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
    let config = DockerRuntimeConfig { publish_ip: Ipv4Addr::LOCALHOST.into(), ..DockerRuntimeConfig::default() };
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

/// Runs `docker` with `args`, ignoring failures: for guards cleaning up.
fn docker_quietly(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A stack name of its own for one test; removes the stack's containers and
/// networks when dropped.
struct TestStack {
    name: String,
}

impl TestStack {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        TestStack { name: format!("t{}", &id[..12]) }
    }

    /// A task of `<stack>_<short>`, running `command`, on `node`.
    fn task(&self, node: &TestNode, short: &str, command: &[&str]) -> ContainerSpec {
        let mut service = ServiceSpec::new(format!("{}_{short}", self.name), TEST_IMAGE);
        service.stack = self.name.clone();
        service.command = command.iter().map(|s| s.to_string()).collect();
        ContainerSpec::from_task(&task(service), &node.id)
    }

    fn network_ids(&self) -> Vec<String> {
        docker_quietly(&[
            "network",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label={LABEL_STACK}={}", self.name),
        ])
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let containers = docker_quietly(&["ps", "-aq", "--filter", &format!("label={LABEL_STACK}={}", self.name)]);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            docker_quietly(&args);
        }
        let networks = self.network_ids();
        if !networks.is_empty() {
            let mut args = vec!["network", "rm"];
            args.extend(networks.iter().map(String::as_str));
            docker_quietly(&args);
        }
    }
}

/// A named volume of its own for one test, removed when dropped.
struct TestVolume {
    name: String,
}

impl TestVolume {
    fn new() -> Self {
        TestVolume { name: format!("berth-test-{}", uuid::Uuid::new_v4().simple()) }
    }

    fn mount(&self, target: &str, read_only: bool) -> VolumeMount {
        VolumeMount { kind: VolumeKind::Named, source: self.name.clone(), target: target.into(), read_only }
    }
}

impl Drop for TestVolume {
    fn drop(&mut self) {
        docker_quietly(&["volume", "rm", "-f", &self.name]);
    }
}

fn bind(dir: &tempfile::TempDir, target: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        kind: VolumeKind::Bind,
        source: dir.path().to_string_lossy().into_owned(),
        target: target.into(),
        read_only,
    }
}

/// A container on `node` running `script` in the shell.
fn script(node: &TestNode, script: &str) -> ContainerSpec {
    let mut service = ServiceSpec::new("script", TEST_IMAGE);
    service.command = vec!["sh".into(), "-c".into(), script.into()];
    ContainerSpec::from_task(&task(service), &node.id)
}

/// Starts `spec` and returns its id and exit code once it has exited, the
/// script's checks being its exit code.
async fn run_to_exit(runtime: &DockerRuntime, spec: &ContainerSpec) -> (String, Option<i64>) {
    let mut events = runtime.events(&spec.node_id);
    let id = runtime.create_and_start(spec).await.expect("create and start");
    let died = wait_for_event(
        &mut events,
        EXIT_DEADLINE_MS,
        "Died",
        |e| matches!(e, RuntimeEvent::Died { task_id, .. } if *task_id == spec.task_id),
    )
    .await;
    let RuntimeEvent::Died { exit_code, .. } = died else { unreachable!("waited for Died") };
    (id, exit_code)
}

#[tokio::test]
async fn named_volume_and_bind_mount_are_mounted_read_write() {
    let Some(runtime) = docker_runtime("named_volume_and_bind_mount_are_mounted_read_write").await else {
        return;
    };
    let volume = TestVolume::new();
    let node = TestNode::new();
    let host_dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(host_dir.path().join("in.txt"), "from the host").expect("write on the host");

    let mut writer = script(
        &node,
        r#"test "$(cat /host/in.txt)" = "from the host" || exit 3
           echo kept > /vol/file || exit 4
           echo from the container > /host/out.txt || exit 5"#,
    );
    writer.volumes = vec![volume.mount("/vol", false), bind(&host_dir, "/host", false)];
    let (id, exit_code) = run_to_exit(&runtime, &writer).await;
    assert_eq!(exit_code, Some(0), "the writer's checks failed (see the script for the code)");
    let out = std::fs::read_to_string(host_dir.path().join("out.txt")).expect("the container wrote to the host");
    assert_eq!(out, "from the container\n");

    let inspect = runtime.client().inspect_container(&id, None).await.expect("inspect");
    let mut mounts: Vec<(String, String, String, bool)> = inspect
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let kind = m.typ.map(|t| t.to_string()).unwrap_or_default();
            let name_or_source = if kind == "volume" { m.name } else { m.source };
            (kind, name_or_source.unwrap_or_default(), m.destination.unwrap_or_default(), m.rw.unwrap_or(false))
        })
        .collect();
    mounts.sort();
    let host_path = host_dir.path().to_string_lossy().into_owned();
    assert_eq!(
        mounts,
        vec![
            ("bind".to_string(), host_path, "/host".to_string(), true),
            ("volume".to_string(), volume.name.clone(), "/vol".to_string(), true),
        ]
    );

    // The named volume outlives its first container.
    let mut reader = script(&node, r#"test "$(cat /vol/file)" = kept"#);
    reader.volumes = vec![volume.mount("/vol", false)];
    let (_, exit_code) = run_to_exit(&runtime, &reader).await;
    assert_eq!(exit_code, Some(0), "a second container did not find the file in the named volume");
}

#[tokio::test]
async fn read_only_mounts_refuse_writes() {
    let Some(runtime) = docker_runtime("read_only_mounts_refuse_writes").await else {
        return;
    };
    let volume = TestVolume::new();
    let node = TestNode::new();
    let host_dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(host_dir.path().join("in.txt"), "readable").expect("write on the host");

    let mut spec = script(
        &node,
        r#"test "$(cat /host/in.txt)" = readable || exit 3
           touch /host/written 2>/dev/null && exit 4
           touch /vol/written 2>/dev/null && exit 5
           exit 0"#,
    );
    spec.volumes = vec![volume.mount("/vol", true), bind(&host_dir, "/host", true)];
    let (_, exit_code) = run_to_exit(&runtime, &spec).await;
    assert_eq!(exit_code, Some(0), "3: bind unreadable, 4: bind writable, 5: volume writable");
    assert!(!host_dir.path().join("written").exists());
}

#[tokio::test]
async fn a_bind_mount_of_a_missing_host_path_fails_and_leaves_nothing() {
    let Some(runtime) = docker_runtime("a_bind_mount_of_a_missing_host_path_fails_and_leaves_nothing").await else {
        return;
    };
    let node = TestNode::new();
    let missing = format!("/berth-test-missing-{}", uuid::Uuid::new_v4().simple());
    let mut spec = sleeper(&node);
    spec.volumes =
        vec![VolumeMount { kind: VolumeKind::Bind, source: missing.clone(), target: "/data".into(), read_only: false }];
    let err = runtime.create_and_start(&spec).await.expect_err("the host path does not exist");
    assert!(err.to_string().contains(&missing), "the error names the path: {err}");
    assert!(runtime.list(&node.id).await.expect("list").is_empty());
    assert!(!std::path::Path::new(&missing).exists(), "the engine created the missing path");
}

/// The endpoint of container `id` on the network `network_name`: its
/// network id and aliases.
async fn endpoint(runtime: &DockerRuntime, id: &str, network_name: &str) -> (String, Vec<String>) {
    let inspect = runtime.client().inspect_container(id, None).await.expect("inspect");
    let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let endpoint = networks.get(network_name).unwrap_or_else(|| panic!("{id} is not on {network_name}: {networks:?}"));
    (endpoint.network_id.clone().unwrap_or_default(), endpoint.aliases.clone().unwrap_or_default())
}

#[tokio::test]
async fn stack_containers_reach_each_other_by_service_name() {
    let Some(runtime) = docker_runtime("stack_containers_reach_each_other_by_service_name").await else {
        return;
    };
    let stack = TestStack::new();
    let node = TestNode::new();
    let web = stack.task(&node, "web", &["httpd", "-f", "-p", "80", "-h", "/var/www"]);
    let web_id = runtime.create_and_start(&web).await.expect("start web");

    // The first request waits for httpd; the others must then work at once.
    let check = format!(
        r#"get() {{ wget -q -O- "http://$1/index.html" 2>/dev/null | grep -q "berth test image"; }}
           i=0
           until get web; do i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.1; done
           get {stack}_web || exit 4
           get frontend || exit 5
           nslookup web >/dev/null || exit 6"#,
        stack = stack.name
    );
    let mut client = stack.task(&node, "client", &["sh", "-c", &check]);
    if let Some(network) = client.network.as_mut() {
        network.links.push(ServiceLink { service: format!("{}_web", stack.name), alias: "frontend".into() });
    }
    let (client_id, exit_code) = run_to_exit(&runtime, &client).await;
    assert_eq!(
        exit_code,
        Some(0),
        "3: web unreachable by short name, 4: by full name, 5: by link alias, 6: nslookup failed"
    );

    let network_name = stack_network_name(&stack.name, &node.id);
    let network = runtime.client().inspect_network(&network_name, None).await.expect("the stack network exists");
    assert_eq!(network.driver.as_deref(), Some("bridge"));
    assert_eq!(network.labels.unwrap_or_default().get(LABEL_STACK), Some(&stack.name));
    let (web_network, web_aliases) = endpoint(&runtime, &web_id, &network_name).await;
    assert_eq!(Some(web_network.clone()), network.id);
    assert!(web_aliases.contains(&"web".to_string()), "{web_aliases:?}");
    assert!(web_aliases.contains(&format!("{}_web", stack.name)), "{web_aliases:?}");
    let (client_network, _) = endpoint(&runtime, &client_id, &network_name).await;
    assert_eq!(client_network, web_network);
}

#[tokio::test]
async fn a_standalone_container_stays_on_the_default_network() {
    let Some(runtime) = docker_runtime("a_standalone_container_stays_on_the_default_network").await else {
        return;
    };
    let node = TestNode::new();
    let id = runtime.create_and_start(&sleeper(&node)).await.expect("create and start");
    let inspect = runtime.client().inspect_container(&id, None).await.expect("inspect");
    let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
    assert_eq!(networks.keys().collect::<Vec<_>>(), vec!["bridge"]);
}

/// A discovery name becomes a line of the container's /etc/hosts naming a
/// virtual IP from the upper half of the stack network's subnet, assigned
/// to the network's bridge, and published for the node proxy; a container
/// connecting to the name reaches whatever listens there on the host.
#[tokio::test]
async fn discovery_names_resolve_to_virtual_ips_on_the_stack_networks_bridge() {
    let Some(runtime) = docker_runtime("discovery_names_resolve_to_virtual_ips_on_the_stack_networks_bridge").await
    else {
        return;
    };
    let stack = TestStack::new();
    let node = TestNode::new();
    let ranges = runtime.virtual_ip_ranges();
    let api = DiscoveryHost { name: "api".into(), virtual_ip: 3 };
    let mut first = stack.task(&node, "first", &["sleep", "300"]);
    first.discovery = vec![api.clone()];
    let first_id = runtime.create_and_start(&first).await.expect("start first");

    let range = ranges.borrow().get(&stack.name).cloned().expect("the stack network's range is published");
    let vip = range.address(3).expect("room for number 3");
    let network = runtime
        .client()
        .inspect_network(&stack_network_name(&stack.name, &node.id), None)
        .await
        .expect("the stack network exists");
    let config = network.ipam.and_then(|i| i.config).unwrap_or_default();
    let subnet: ipnet::Ipv4Net = config[0].subnet.as_deref().expect("a subnet").parse().expect("IPv4 subnet");
    assert!(subnet.contains(&vip) && !range.block.contains(&subnet.network()), "{vip} in the upper half of {subnet}");
    let lower_half = subnet.subnets(subnet.prefix_len() + 1).expect("halves").next().expect("a lower half");
    assert_eq!(config[0].ip_range.as_deref(), Some(lower_half.to_string().as_str()), "containers stay below");
    let inspect = runtime.client().inspect_container(&first_id, None).await.expect("inspect");
    let hosts = inspect.host_config.and_then(|h| h.extra_hosts).unwrap_or_default();
    assert_eq!(hosts, vec![format!("api:{vip}")]);
    let addresses = Command::new("ip").args(["-4", "address", "show", "dev", &range.bridge]).output().expect("ip");
    assert!(String::from_utf8_lossy(&addresses.stdout).contains(&format!("{vip}/32")), "{vip} is on {}", range.bridge);

    // What listens on the virtual IP (the node proxy, in an agent) answers
    // a container asking for the name.
    let listener = TcpListener::bind((vip, 0)).expect("listen on the virtual IP");
    let port = listener.local_addr().expect("address").port();
    let accepted = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("a connection from the container");
        let mut said = String::new();
        stream.read_to_string(&mut said).expect("read");
        said
    });
    let mut caller = stack.task(&node, "caller", &["sh", "-c", &format!("echo hello | nc api {port}")]);
    caller.discovery = vec![api];
    let (_, exit_code) = run_to_exit(&runtime, &caller).await;
    assert_eq!(exit_code, Some(0), "nc api {port} failed");
    assert_eq!(accepted.join().expect("listener thread").trim(), "hello");
}

/// On engines before API 1.44 (Docker 20.10) the two runtimes usually both
/// create the network here; the duplicate must be gone by the time every
/// container has started. Two runtimes of one node: an agent restarted
/// while its predecessor still worked (each node has networks of its own).
#[tokio::test]
async fn agents_racing_to_create_a_stack_network_end_up_sharing_one() {
    let Some(first) = docker_runtime("agents_racing_to_create_a_stack_network_end_up_sharing_one").await else {
        return;
    };
    // A second client, as a second agent on the same engine would have.
    let second = DockerRuntime::connect(DockerRuntimeConfig::default()).await.expect("second client");
    let stack = TestStack::new();
    let node = TestNode::new();
    let mut starts = Vec::new();
    for runtime in [&first, &second] {
        let node = &node;
        for i in 0..RACING_CONTAINERS_PER_AGENT {
            let spec = stack.task(node, &format!("s{i}"), &["sleep", "300"]);
            starts.push(async move { (runtime.create_and_start(&spec).await, spec.name) });
        }
    }
    let started = futures::future::join_all(starts).await;

    let networks = stack.network_ids();
    assert_eq!(networks.len(), 1, "one network for the stack: {networks:?}");
    let network_name = stack_network_name(&stack.name, &node.id);
    for (result, name) in started {
        let id = result.unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        let (network_id, _) = endpoint(&first, &id, &network_name).await;
        assert_eq!(network_id, networks[0], "{name} is on another network");
    }
}

#[tokio::test]
async fn the_stack_network_goes_with_the_stacks_last_container() {
    let Some(runtime) = docker_runtime("the_stack_network_goes_with_the_stacks_last_container").await else {
        return;
    };
    let stack = TestStack::new();
    let node = TestNode::new();
    let first = runtime.create_and_start(&stack.task(&node, "a", &["sleep", "300"])).await.expect("start a");
    let second = runtime.create_and_start(&stack.task(&node, "b", &["sleep", "300"])).await.expect("start b");
    // Stopped, it no longer has an endpoint on the network, but still names it.
    runtime.stop(&second, Duration::from_millis(100)).await.expect("stop b");
    assert_eq!(stack.network_ids().len(), 1);

    runtime.remove(&first).await.expect("remove a");
    assert_eq!(stack.network_ids().len(), 1, "removed while a stopped container still names it");
    runtime.remove(&second).await.expect("remove b");
    assert_eq!(stack.network_ids(), Vec::<String>::new(), "the stack's last container is gone");

    // The next task of the stack brings the network back.
    runtime.create_and_start(&stack.task(&node, "c", &["sleep", "300"])).await.expect("start c");
    assert_eq!(stack.network_ids().len(), 1);
}

impl TestStack {
    /// Creates a network of the stack's name and label behind the runtime's
    /// back, as a racing agent would; `None` when the engine refuses a
    /// second network of one name (API 1.44 and later).
    async fn create_network_directly(&self, runtime: &DockerRuntime, node: &TestNode) -> Option<String> {
        let request = bollard::models::NetworkCreateRequest {
            name: stack_network_name(&self.name, &node.id),
            driver: Some("bridge".into()),
            labels: Some([(LABEL_STACK.to_string(), self.name.clone())].into()),
            ..Default::default()
        };
        match runtime.client().create_network(request).await {
            Ok(created) => Some(created.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => None,
            Err(e) => panic!("cannot create a network: {e}"),
        }
    }

    /// Runs a container of the stack outside berth on network `network_id`.
    fn occupy(&self, network_id: &str) {
        let label = format!("{LABEL_STACK}={}", self.name);
        let output = Command::new("docker")
            .args(["run", "-d", "--network", network_id, "--label", &label, TEST_IMAGE, "sleep", "300"])
            .output()
            .expect("docker run");
        assert!(output.status.success(), "docker run: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Attempts at drawing a network id in the upper half of the id space, and
/// then a duplicate whose id sorts before it; each draw succeeds with
/// probability 1/2 or more.
const NETWORK_ID_DRAWS: usize = 32;

#[tokio::test]
async fn duplicate_stack_networks_are_brought_back_to_the_one_in_use() {
    let Some(runtime) = docker_runtime("duplicate_stack_networks_are_brought_back_to_the_one_in_use").await else {
        return;
    };
    let stack = TestStack::new();
    let node = TestNode::new();
    let mut in_use = None;
    for _ in 0..NETWORK_ID_DRAWS {
        let id = stack.create_network_directly(&runtime, &node).await.expect("no network yet");
        if id.as_str() >= "8" {
            in_use = Some(id);
            break;
        }
        runtime.client().remove_network(&id).await.expect("remove the draw");
    }
    let in_use = in_use.unwrap_or_else(|| panic!("no network id from 8 up in {NETWORK_ID_DRAWS} draws"));
    // Occupied while it is the only one: with two of one name, the engine
    // cannot start a container on either.
    stack.occupy(&in_use);
    // A duplicate with a smaller id, so that keeping the smallest id would
    // be wrong.
    let mut drawn = false;
    for _ in 0..NETWORK_ID_DRAWS {
        let Some(duplicate) = stack.create_network_directly(&runtime, &node).await else {
            eprintln!("this engine keeps network names unique; nothing to bring back to one");
            return;
        };
        if duplicate < in_use {
            drawn = true;
            break;
        }
        runtime.client().remove_network(&duplicate).await.expect("remove the draw");
    }
    assert!(drawn, "no duplicate id sorted before {in_use} in {NETWORK_ID_DRAWS} draws");
    assert_eq!(stack.network_ids().len(), 2);

    let id = runtime.create_and_start(&stack.task(&node, "web", &["sleep", "300"])).await.expect("start");
    assert_eq!(stack.network_ids(), vec![in_use.clone()]);
    let (network_id, _) = endpoint(&runtime, &id, &stack_network_name(&stack.name, &node.id)).await;
    assert_eq!(network_id, in_use);
}
