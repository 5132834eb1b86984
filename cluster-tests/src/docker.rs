//! The local Docker Engine as the cluster tests see it: whether it is there
//! at all (a missing engine skips a test outside CI and fails it under
//! `CI=true`), the test image built once per test process, the containers
//! berth created (found by the labels the agent puts on them), and a
//! `docker kill` behind berth's back.
//!
//! Every agent of every test shares this one engine; a test only ever looks
//! at containers labelled with the node ids of its own agents or the id of
//! its own service, so tests running in parallel do not see each other.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;

/// Built by `scripts/build-test-image.sh`: static busybox (sleep, sh, httpd,
/// ...) and nothing else, so no registry is needed.
pub const TEST_IMAGE: &str = "berth-test/busybox:latest";
/// The labels the agent puts on every container it creates.
pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_SERVICE: &str = "berth.service";
pub const LABEL_NODE: &str = "berth.node";
pub const LABEL_SLOT: &str = "berth.slot";

/// One container, as `docker ps -a` lists it.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    pub labels: HashMap<String, String>,
}

impl Container {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }

    pub fn task_id(&self) -> &str {
        self.label(LABEL_TASK)
    }

    pub fn node_id(&self) -> &str {
        self.label(LABEL_NODE)
    }

    pub fn service_id(&self) -> &str {
        self.label(LABEL_SERVICE)
    }

    pub fn slot(&self) -> Option<u32> {
        self.label(LABEL_SLOT).parse().ok()
    }
}

/// A client of the local engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// The local engine with the test image built, or `None` after printing
    /// why `test` is skipped. Under `CI=true` an unreachable engine is an
    /// error: CI must run these tests, not skip them quietly.
    pub async fn for_test(test: &str) -> Result<Option<Engine>> {
        match Engine::connect().await {
            Ok(engine) => {
                ensure_test_image()?;
                Ok(Some(engine))
            }
            Err(e) if crate::under_ci() => {
                Err(e.context(format!("under CI the Docker Engine is unreachable, so {test} cannot run")))
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: the Docker Engine is unreachable: {e:#}");
                Ok(None)
            }
        }
    }

    /// Connects (`DOCKER_HOST`, else the default socket), negotiates the API
    /// version and pings.
    pub async fn connect() -> Result<Engine> {
        let docker = Docker::connect_with_local_defaults()
            .context("connecting to the Docker Engine")?
            .negotiate_version()
            .await
            .context("negotiating the Docker API version")?;
        docker.ping().await.context("pinging the Docker Engine")?;
        Ok(Engine { docker })
    }

    /// Every container, running or not, carrying all of `labels`
    /// (`key=value` or just `key`).
    pub async fn containers(&self, labels: &[String]) -> Result<Vec<Container>> {
        if labels.is_empty() {
            bail!("refusing to list every container of a shared engine: name a label");
        }
        let filters = HashMap::from([("label", labels.to_vec())]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let summaries = self.docker.list_containers(Some(options)).await.context("listing containers")?;
        let mut containers: Vec<Container> = summaries
            .into_iter()
            .map(|s| Container {
                id: s.id.unwrap_or_default(),
                name: s
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                state: s.state.map(|state| state.to_string()).unwrap_or_default(),
                labels: s.labels.unwrap_or_default(),
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// The containers of the service with id `service_id`.
    pub async fn service_containers(&self, service_id: &str) -> Result<Vec<Container>> {
        self.containers(&[format!("{LABEL_SERVICE}={service_id}")]).await
    }

    /// The containers berth created on the node with id `node_id`.
    pub async fn node_containers(&self, node_id: &str) -> Result<Vec<Container>> {
        self.containers(&[format!("{LABEL_NODE}={node_id}")]).await
    }

    /// SIGKILL a container behind berth's back, as a crashing process or the
    /// OOM killer would.
    pub async fn kill(&self, container_id: &str) -> Result<()> {
        let options = KillContainerOptions { signal: "SIGKILL".to_string() };
        self.docker
            .kill_container(container_id, Some(options))
            .await
            .with_context(|| format!("docker kill {container_id}"))
    }

    /// Builds `tag` from the test image with a `marker` label, as a user's
    /// `docker build` would (so the engine announces the tag); returns the
    /// new image's id.
    pub async fn build_from_test_image(&self, tag: &str, marker: &str) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        let dockerfile = format!("FROM {TEST_IMAGE}\nLABEL berth.test.marker={marker}\n");
        let mut child = tokio::process::Command::new("docker")
            .args(["build", "-q", "-t", tag, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running docker build")?;
        let mut stdin = child.stdin.take().context("docker build stdin")?;
        stdin.write_all(dockerfile.as_bytes()).await.context("writing the Dockerfile")?;
        drop(stdin);
        let output = child.wait_with_output().await.context("waiting for docker build")?;
        if !output.status.success() {
            bail!("docker build -t {tag} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        ensure!(id.starts_with("sha256:"), "docker build printed no image id: {id:?}");
        Ok(id)
    }

    /// The id of the image a container was created from.
    pub async fn container_image_id(&self, container_id: &str) -> Result<String> {
        let inspected = self
            .docker
            .inspect_container(container_id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .with_context(|| format!("docker inspect {container_id}"))?;
        inspected.image.context("the container has no image id")
    }

    /// Removes an image tag (and the image, when nothing else uses it).
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let output = tokio::process::Command::new("docker")
            .args(["rmi", "-f", image])
            .output()
            .await
            .context("running docker rmi")?;
        ensure!(output.status.success(), "docker rmi {image}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(())
    }

    /// Force-removes every container of the nodes with these ids; returns how
    /// many went.
    pub async fn remove_node_containers(&self, node_ids: &[String]) -> Result<usize> {
        let mut removed = 0;
        for node_id in node_ids {
            for container in self.node_containers(node_id).await? {
                let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
                match self.docker.remove_container(&container.id, Some(options)).await {
                    Ok(()) => removed += 1,
                    // Removed meanwhile, or already being removed.
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
                    Err(e) => return Err(anyhow!(e).context(format!("removing container {}", container.name))),
                }
            }
            // The nodes' stack networks, now that nothing uses them.
            let filters = HashMap::from([("label", vec![format!("berth.node={node_id}")])]);
            let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
            for network in self.docker.list_networks(Some(options)).await? {
                if let Some(id) = network.id {
                    match self.docker.remove_network(&id).await {
                        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                        Err(e) => return Err(anyhow!(e).context(format!("removing network {id}"))),
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Removes the containers of these nodes from a plain (non-async) context
/// such as `Drop`, on a thread of its own since the caller may be inside a
/// tokio runtime. Errors are printed, not returned: this is cleanup.
pub fn remove_node_containers_blocking(node_ids: Vec<String>) {
    if node_ids.is_empty() {
        return;
    }
    let cleanup = std::thread::spawn(move || -> Result<usize> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async { Engine::connect().await?.remove_node_containers(&node_ids).await })
    });
    match cleanup.join() {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => eprintln!("removed {removed} containers of this test's agents"),
        Ok(Err(e)) => eprintln!("warning: could not remove this test's containers: {e:#}"),
        Err(_) => eprintln!("warning: the container cleanup thread panicked"),
    }
}

/// Runs `scripts/build-test-image.sh` once per test process; the script
/// returns at once when the image exists and serialises concurrent builds
/// across processes itself.
pub fn ensure_test_image() -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| build_test_image().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn build_test_image() -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh");
    let output = Command::new(&script).output().with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
