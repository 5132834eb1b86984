//! An in-memory [`Runtime`] for the agent's unit tests: containers are
//! records, images are a set of names, and the test plays the engine's part
//! (a container dying, a health check flipping) through inherent methods
//! that announce the same events Docker would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{Health, Resources};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::{
    ContainerInfo, ContainerSpec, ImageEventStream, ImageTagged, Runtime, RuntimeError, RuntimeEvent,
    RuntimeEventStream,
};

/// Events kept for a slow subscriber before it is told it missed some
/// (as [`RuntimeEvent::StreamInterrupted`]).
pub const MEMORY_EVENT_BUFFER: usize = 1024;
/// The exit status `stop` gives a container: 128 + SIGTERM, as for a
/// process that honours SIGTERM.
pub const STOPPED_EXIT_CODE: i64 = 143;
/// The exit status `remove` of a running container gives it: 128 + SIGKILL.
pub const KILLED_EXIT_CODE: i64 = 137;
/// What `resources` reports unless the test sets something else.
pub const DEFAULT_HOST_RESOURCES: Resources = Resources { millicpus: 4_000, memory_bytes: 8 << 30 };

#[derive(Debug, Clone)]
struct Container {
    spec: ContainerSpec,
    running: bool,
    exit_code: Option<i64>,
    health: Health,
}

#[derive(Debug)]
struct State {
    images: BTreeSet<String>,
    containers: BTreeMap<String, Container>,
    next_id: u64,
    resources: Resources,
}

/// A fake engine holding containers in memory. Cheap to share behind an
/// `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct MemoryRuntime {
    state: Mutex<State>,
    /// Every event with the node it belongs to; subscribers filter.
    events: broadcast::Sender<(String, RuntimeEvent)>,
    image_events: broadcast::Sender<ImageTagged>,
}

impl Default for MemoryRuntime {
    fn default() -> Self {
        MemoryRuntime::new()
    }
}

impl MemoryRuntime {
    /// An engine with no images and no containers.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(MEMORY_EVENT_BUFFER);
        let (image_events, _) = broadcast::channel(MEMORY_EVENT_BUFFER);
        MemoryRuntime {
            image_events,
            state: Mutex::new(State {
                images: BTreeSet::new(),
                containers: BTreeMap::new(),
                next_id: 1,
                resources: DEFAULT_HOST_RESOURCES,
            }),
            events,
        }
    }

    /// Makes `image` present, so containers can be created from it.
    pub fn add_image(&self, image: impl Into<String>) -> &Self {
        self.state.lock().images.insert(image.into());
        self
    }

    /// Plays `docker tag`: `image` now names the image `image_id`.
    pub fn retag(&self, image: &str, image_id: &str) {
        self.state.lock().images.insert(image.to_string());
        let _ = self.image_events.send(ImageTagged { image: image.into(), image_id: image_id.into() });
    }

    pub fn set_resources(&self, resources: Resources) {
        self.state.lock().resources = resources;
    }

    /// Plays a container's process exiting with `exit_code`.
    pub fn exit(&self, container_id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        let mut state = self.state.lock();
        let container = find(&mut state, container_id)?;
        if container.running {
            container.running = false;
            container.exit_code = Some(exit_code);
            let event = RuntimeEvent::Died {
                task_id: container.spec.task_id.clone(),
                container_id: container_id.to_string(),
                exit_code: Some(exit_code),
            };
            self.announce(&container.spec.node_id, event);
        }
        Ok(())
    }

    /// Plays a container's health check result changing. As with Docker,
    /// only a change is announced.
    pub fn set_health(&self, container_id: &str, health: Health) -> Result<(), RuntimeError> {
        let mut state = self.state.lock();
        let container = find(&mut state, container_id)?;
        if container.health != health {
            container.health = health;
            let event = RuntimeEvent::HealthChanged {
                task_id: container.spec.task_id.clone(),
                container_id: container_id.to_string(),
                health,
            };
            self.announce(&container.spec.node_id, event);
        }
        Ok(())
    }

    /// The spec a container was created from, for assertions.
    pub fn spec_of(&self, container_id: &str) -> Option<ContainerSpec> {
        self.state.lock().containers.get(container_id).map(|c| c.spec.clone())
    }

    fn announce(&self, node_id: &str, event: RuntimeEvent) {
        // No subscriber is not an error: events are only for whoever listens.
        let _ = self.events.send((node_id.to_string(), event));
    }
}

fn find<'a>(state: &'a mut State, container_id: &str) -> Result<&'a mut Container, RuntimeError> {
    state
        .containers
        .get_mut(container_id)
        .ok_or_else(|| RuntimeError::ContainerNotFound { container_id: container_id.to_string() })
}

#[async_trait]
impl Runtime for MemoryRuntime {
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut state = self.state.lock();
        if !state.images.contains(&spec.image) {
            return Err(RuntimeError::ImageNotFound { image: spec.image.clone() });
        }
        if state.containers.values().any(|c| c.spec.name == spec.name) {
            return Err(RuntimeError::NameInUse { name: spec.name.clone() });
        }
        let container_id = format!("mem{:061x}", state.next_id);
        state.next_id += 1;
        let health = if spec.health.is_some() { Health::Starting } else { Health::None };
        state
            .containers
            .insert(container_id.clone(), Container { spec: spec.clone(), running: true, exit_code: None, health });
        self.announce(
            &spec.node_id,
            RuntimeEvent::Started { task_id: spec.task_id.clone(), container_id: container_id.clone() },
        );
        Ok(container_id)
    }

    async fn stop(&self, container_id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.exit(container_id, STOPPED_EXIT_CODE)
    }

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        if self.exit(container_id, KILLED_EXIT_CODE).is_err() {
            return Ok(());
        }
        let removed = self.state.lock().containers.remove(container_id);
        if let Some(container) = removed {
            self.announce(
                &container.spec.node_id,
                RuntimeEvent::Removed { task_id: container.spec.task_id, container_id: container_id.to_string() },
            );
        }
        Ok(())
    }

    async fn list(&self, node_id: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let state = self.state.lock();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| c.spec.node_id == node_id)
            .map(|(id, c)| ContainerInfo {
                container_id: id.clone(),
                name: c.spec.name.clone(),
                task_id: c.spec.task_id.clone(),
                service_id: c.spec.service_id.clone(),
                slot: Some(c.spec.slot),
                node_id: c.spec.node_id.clone(),
                running: c.running,
                exit_code: c.exit_code,
                health: c.health,
                image_id: format!("sha256:{}", c.spec.image),
            })
            .collect())
    }

    fn events(&self, node_id: &str) -> RuntimeEventStream {
        let node_id = node_id.to_string();
        BroadcastStream::new(self.events.subscribe())
            .filter_map(move |item| {
                let event = match item {
                    Ok((node, event)) => (node == node_id).then_some(event),
                    Err(BroadcastStreamRecvError::Lagged(missed)) => Some(RuntimeEvent::StreamInterrupted {
                        reason: format!("the subscriber fell {missed} events behind"),
                    }),
                };
                futures::future::ready(event)
            })
            .boxed()
    }

    fn image_events(&self) -> ImageEventStream {
        BroadcastStream::new(self.image_events.subscribe()).filter_map(|item| futures::future::ready(item.ok())).boxed()
    }

    async fn resources(&self) -> Result<Resources, RuntimeError> {
        Ok(self.state.lock().resources)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use berth_core::{HealthCheck, Resources, VolumeKind, VolumeMount};

    use super::*;

    const IMAGE: &str = "berth-test/busybox:latest";

    fn spec(node_id: &str, task_id: &str) -> ContainerSpec {
        ContainerSpec {
            task_id: task_id.into(),
            service_id: "svc".into(),
            service_name: "web".into(),
            node_id: node_id.into(),
            slot: 1,
            name: format!("berth-web.1.{task_id}"),
            image: IMAGE.into(),
            command: vec![],
            entrypoint: vec![],
            env: vec![],
            ports: vec![],
            expose: vec![],
            health: None,
            resources: Resources::default(),
            labels: BTreeMap::new(),
            volumes: vec![],
            network: None,
            proxied_ports: Vec::new(),
            discovery: Vec::new(),
            secrets: Vec::new(),
            registry: None,
        }
    }

    fn runtime() -> MemoryRuntime {
        let runtime = MemoryRuntime::new();
        runtime.add_image(IMAGE);
        runtime
    }

    async fn next(events: &mut RuntimeEventStream) -> RuntimeEvent {
        events.next().await.expect("memory event streams never end")
    }

    #[tokio::test]
    async fn created_container_is_listed_running_on_its_node_only() {
        let rt = runtime();
        let id = rt.create_and_start(&spec("n1", "t1")).await.expect("create");
        let listed = rt.list("n1").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].container_id, id);
        assert_eq!(listed[0].task_id, "t1");
        assert!(listed[0].running);
        assert_eq!(listed[0].exit_code, None);
        assert!(rt.list("n2").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn missing_image_is_refused_and_creates_nothing() {
        let rt = MemoryRuntime::new();
        let err = rt.create_and_start(&spec("n1", "t1")).await.expect_err("no image");
        assert_eq!(err, RuntimeError::ImageNotFound { image: IMAGE.into() });
        assert!(rt.list("n1").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_second_container_with_the_same_name_is_refused() {
        let rt = runtime();
        rt.create_and_start(&spec("n1", "t1")).await.expect("create");
        let err = rt.create_and_start(&spec("n1", "t1")).await.expect_err("duplicate");
        assert!(matches!(err, RuntimeError::NameInUse { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn events_of_the_node_arrive_in_order_and_others_are_filtered() {
        let rt = runtime();
        let mut events = rt.events("n1");
        let other = rt.create_and_start(&spec("n2", "t2")).await.expect("create");
        let id = rt.create_and_start(&spec("n1", "t1")).await.expect("create");
        rt.exit(&other, 1).expect("exit");
        rt.exit(&id, 3).expect("exit");
        assert_eq!(next(&mut events).await, RuntimeEvent::Started { task_id: "t1".into(), container_id: id.clone() });
        assert_eq!(
            next(&mut events).await,
            RuntimeEvent::Died { task_id: "t1".into(), container_id: id.clone(), exit_code: Some(3) }
        );
        let listed = rt.list("n1").await.expect("list");
        assert!(!listed[0].running);
        assert_eq!(listed[0].exit_code, Some(3));
    }

    #[tokio::test]
    async fn health_changes_are_announced_once_per_change() {
        let rt = runtime();
        let mut with_health = spec("n1", "t1");
        with_health.health = Some(HealthCheck::new("true"));
        let id = rt.create_and_start(&with_health).await.expect("create");
        assert_eq!(rt.list("n1").await.expect("list")[0].health, Health::Starting);
        let mut events = rt.events("n1");
        rt.set_health(&id, Health::Healthy).expect("health");
        rt.set_health(&id, Health::Healthy).expect("health");
        rt.set_health(&id, Health::Unhealthy).expect("health");
        for expected in [Health::Healthy, Health::Unhealthy] {
            assert_eq!(
                next(&mut events).await,
                RuntimeEvent::HealthChanged { task_id: "t1".into(), container_id: id.clone(), health: expected }
            );
        }
    }

    #[tokio::test]
    async fn stop_then_remove_leaves_nothing_and_remove_is_idempotent() {
        let rt = runtime();
        let id = rt.create_and_start(&spec("n1", "t1")).await.expect("create");
        let mut events = rt.events("n1");
        rt.stop(&id, Duration::from_secs(1)).await.expect("stop");
        rt.stop(&id, Duration::from_secs(1)).await.expect("second stop");
        rt.remove(&id).await.expect("remove");
        rt.remove(&id).await.expect("second remove");
        assert!(rt.list("n1").await.expect("list").is_empty());
        assert_eq!(
            next(&mut events).await,
            RuntimeEvent::Died { task_id: "t1".into(), container_id: id.clone(), exit_code: Some(STOPPED_EXIT_CODE) }
        );
        assert_eq!(next(&mut events).await, RuntimeEvent::Removed { task_id: "t1".into(), container_id: id });
    }

    #[tokio::test]
    async fn stopping_an_unknown_container_is_not_found() {
        let rt = runtime();
        let err = rt.stop("nope", Duration::from_secs(1)).await.expect_err("unknown");
        assert!(err.is_not_found(), "{err:?}");
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_it_missed_events() {
        let rt = runtime();
        let mut events = rt.events("n1");
        let id = rt.create_and_start(&spec("n1", "t1")).await.expect("create");
        for i in 0..=MEMORY_EVENT_BUFFER {
            let health = if i % 2 == 0 { Health::Healthy } else { Health::Unhealthy };
            rt.set_health(&id, health).expect("health");
        }
        assert!(matches!(next(&mut events).await, RuntimeEvent::StreamInterrupted { .. }));
    }

    #[tokio::test]
    async fn volumes_and_the_stack_network_are_recorded_with_the_container() {
        let rt = runtime();
        let mut with_mounts = spec("n1", "t1");
        with_mounts.volumes = vec![VolumeMount {
            kind: VolumeKind::Named,
            source: "data".into(),
            target: "/data".into(),
            read_only: true,
        }];
        with_mounts.network = Some(crate::runtime::StackNetwork {
            stack: "shop".into(),
            node_id: "n1".into(),
            name: "berth-stack-shop-n1".into(),
            aliases: vec!["web".into(), "shop_web".into()],
            links: vec![],
        });
        let id = rt.create_and_start(&with_mounts).await.expect("create");
        assert_eq!(rt.spec_of(&id), Some(with_mounts));
    }

    #[tokio::test]
    async fn usable_as_a_shared_trait_object() {
        let rt: std::sync::Arc<dyn Runtime> = std::sync::Arc::new(runtime());
        assert_eq!(rt.resources().await.expect("resources"), DEFAULT_HOST_RESOURCES);
    }
}
