//! Pulls from a registry that wants a password, on real Docker: a task whose
//! image is on a registry and not on the node is pulled with the cluster's
//! stored credentials; a wrong password rejects the task with the registry's
//! reason, and the right one, stored with `berth registry login`, lets the
//! next task pull and run. `berth registry ls` shows hosts and usernames,
//! never a password. The registry is Debian's `docker-registry` with
//! htpasswd auth on loopback, started and stopped by
//! `scripts/test-registry.sh`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::docker::TEST_IMAGE;
use cluster_tests::proto::{ServiceSpec, Task};
use cluster_tests::workload::{agent_name, describe, docker_cluster, running, sleeper, unique_name};
use cluster_tests::{berth_bin, free_port, request_id, wait_until, AgentOpts, CliOutput, Cluster, CLI_TIMEOUT_MS};
use tokio::io::AsyncWriteExt;

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// Bound on the registry script: its first run installs packages with apt-get.
const SCRIPT_TIMEOUT_MS: u64 = 300_000;
const REGISTRY_USER: &str = "berth-puller";

/// `scripts/test-registry.sh`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-registry.sh")
}

/// A running registry with htpasswd auth on `127.0.0.1:port`. Dropping it
/// removes the images this test pulled from it, stops it and deletes its
/// folder (and with it everything pushed), on failure too.
struct Registry {
    port: u16,
    dir: String,
    password: String,
    /// Image references to untag from the engine when the test ends.
    images: Vec<String>,
}

impl Registry {
    /// Starts a registry that accepts [`REGISTRY_USER`] with `password`.
    async fn start(password: &str) -> Result<Registry> {
        let port = free_port()?;
        let stdout = run_script(
            "start",
            &[
                ("PORT", port.to_string()),
                ("REGISTRY_USER", REGISTRY_USER.into()),
                ("REGISTRY_PASSWORD", password.into()),
            ],
        )
        .await?;
        let dir = stdout
            .lines()
            .find_map(|line| line.strip_prefix("REGISTRY_DIR="))
            .with_context(|| format!("test-registry.sh start printed no REGISTRY_DIR: {stdout:?}"))?
            .to_string();
        eprintln!("registry on 127.0.0.1:{port}: {}", stdout.trim().replace('\n', " "));
        Ok(Registry { port, dir, password: password.to_string(), images: Vec::new() })
    }

    /// `127.0.0.1:PORT`, as images name the registry.
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the test image as `HOST/berth-test/busybox:TAG` and removes
    /// that tag from the engine again, so that only a pull brings it back.
    async fn push_test_image(&mut self, tag: &str) -> Result<String> {
        let target = format!("{}/berth-test/busybox:{tag}", self.host());
        self.images.push(target.clone());
        run_script(
            "push",
            &[
                ("REGISTRY_DIR", self.dir.clone()),
                ("REGISTRY_USER", REGISTRY_USER.into()),
                ("REGISTRY_PASSWORD", self.password.clone()),
                ("SOURCE", TEST_IMAGE.into()),
                ("TARGET", target.clone()),
            ],
        )
        .await?;
        Ok(target)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for image in &self.images {
            // Only a pulled image is there to remove; a missing one is fine.
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let stopped = std::process::Command::new(script()).arg("stop").env("REGISTRY_DIR", &self.dir).output();
        match stopped {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "warning: test-registry.sh stop failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("warning: could not run test-registry.sh stop: {e}"),
        }
    }
}

/// Runs `scripts/test-registry.sh COMMAND` with `env`; its stdout on success.
async fn run_script(command: &str, env: &[(&str, String)]) -> Result<String> {
    let mut run = tokio::process::Command::new(script());
    run.arg(command).stdin(Stdio::null()).kill_on_drop(true);
    for (key, value) in env {
        run.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_millis(SCRIPT_TIMEOUT_MS), run.output())
        .await
        .with_context(|| format!("test-registry.sh {command} did not finish in {SCRIPT_TIMEOUT_MS} ms"))?
        .with_context(|| format!("running test-registry.sh {command}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "test-registry.sh {command} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// Runs `berth ARGS` with `stdin` on its standard input, to completion,
/// within [`CLI_TIMEOUT_MS`]; [`cluster_tests::cli`] gives it none.
async fn cli_with_stdin(args: &[&str], stdin: &str) -> Result<CliOutput> {
    let mut child = tokio::process::Command::new(berth_bin()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running berth {}", args.join(" ")))?;
    let mut input = child.stdin.take().context("berth's stdin was not piped")?;
    input.write_all(stdin.as_bytes()).await.context("writing berth's stdin")?;
    drop(input);
    let output = tokio::time::timeout(Duration::from_millis(CLI_TIMEOUT_MS), child.wait_with_output())
        .await
        .with_context(|| format!("berth {} did not finish in {CLI_TIMEOUT_MS} ms", args.join(" ")))?
        .with_context(|| format!("waiting for berth {}", args.join(" ")))?;
    Ok(CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Every manager's address, as `--manager` takes them.
fn managers(cluster: &Cluster) -> String {
    cluster.managers().iter().map(|m| m.addr().to_string()).collect::<Vec<_>>().join(",")
}

/// `berth ARGS --manager ...`, which must succeed; its output.
async fn berth_ok(cluster: &Cluster, args: &[&str], stdin: &str) -> Result<CliOutput> {
    let managers = managers(cluster);
    let mut all = args.to_vec();
    all.extend(["--manager", &managers]);
    let output = cli_with_stdin(&all, stdin).await?;
    ensure!(output.status.success(), "berth {} failed ({}): {}", args.join(" "), output.status, output.stderr);
    Ok(output)
}

/// `berth registry login HOST -u USER --password-stdin`, the password piped
/// in as a person would (`echo "$PASSWORD" | ...`, with its newline).
async fn registry_login(cluster: &Cluster, host: &str, password: &str) -> Result<()> {
    berth_ok(cluster, &["registry", "login", host, "-u", REGISTRY_USER, "--password-stdin"], &format!("{password}\n"))
        .await?;
    Ok(())
}

/// `berth registry ls` lists `host` with [`REGISTRY_USER`], in JSON and as a
/// table, and none of `passwords` shows anywhere in either output.
async fn check_registry_ls(cluster: &Cluster, host: &str, passwords: &[&str]) -> Result<()> {
    let json = berth_ok(cluster, &["registry", "ls", "-o", "json"], "").await?;
    let listed: serde_json::Value =
        serde_json::from_str(&json.stdout).with_context(|| format!("registry ls -o json: {:?}", json.stdout))?;
    let registries = listed.as_array().with_context(|| format!("registry ls -o json is no array: {listed}"))?;
    let entry = registries
        .iter()
        .find(|r| r["host"] == host)
        .with_context(|| format!("registry ls -o json does not list {host}: {listed}"))?;
    ensure!(entry["username"] == REGISTRY_USER, "{host} is listed with another username: {entry}");
    let table = berth_ok(cluster, &["registry", "ls"], "").await?;
    ensure!(
        table.stdout.contains(host) && table.stdout.contains(REGISTRY_USER),
        "registry ls does not show {host} and {REGISTRY_USER}:\n{}",
        table.stdout
    );
    for output in [&json, &table] {
        for password in passwords {
            ensure!(
                !output.stdout.contains(password) && !output.stderr.contains(password),
                "berth registry ls shows a password:\n{}\n{}",
                output.stdout,
                output.stderr
            );
        }
    }
    Ok(())
}

/// Waits until a task of `service` matching `wanted` exists; returns it.
async fn wait_for_task(cluster: &Cluster, service: &str, what: &str, wanted: impl Fn(&Task) -> bool) -> Result<Task> {
    wait_until(what, CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(service).await?;
        match tasks.iter().find(|t| wanted(t)) {
            Some(task) => Ok(task.clone()),
            None => bail!("not yet:\n{}", describe(&tasks)),
        }
    })
    .await
}

/// `docker image inspect IMAGE`: whether the engine has it.
async fn engine_has_image(image: &str) -> Result<bool> {
    let output = tokio::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .await
        .context("running docker image inspect")?;
    Ok(output.status.success())
}

fn mentions_auth_failure(message: &str) -> bool {
    let message = message.to_lowercase();
    ["unauthorized", "authentication", "no basic auth credentials"].iter().any(|word| message.contains(word))
}

#[tokio::test]
async fn a_wrong_registry_password_rejects_the_task_and_the_right_one_pulls_the_image() -> Result<()> {
    let test = "a_wrong_registry_password_rejects_the_task_and_the_right_one_pulls_the_image";
    // Declared before the cluster so that it drops after it: the cluster's
    // containers go before the registry and its images. Started after it,
    // so that a test skipped for want of Docker starts nothing.
    let mut registry;
    let Some((_engine, cluster)) = docker_cluster(test, 1, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    registry = Registry::start(&uuid_password()).await?;
    let host = registry.host();
    let image = registry.push_test_image(&unique_name("pull")).await?;
    ensure!(!engine_has_image(&image).await?, "{image} is still on the engine after the push; no pull would be needed");

    let wrong = uuid_password();
    registry_login(&cluster, &host, &wrong).await?;
    check_registry_ls(&cluster, &host, &[&wrong, &registry.password]).await?;

    let name = unique_name("private");
    let spec = ServiceSpec { image: image.clone(), ..sleeper(&name, 1) };
    cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;
    let rejected =
        wait_for_task(&cluster, &name, "a task rejected for the wrong password", |t| t.state == "rejected").await?;
    eprintln!("rejected as it should be: {:?}", rejected.message);
    assert!(
        rejected.message.contains(&image) && mentions_auth_failure(&rejected.message),
        "the rejection should name {image} and say the registry refused the credentials: {:?}",
        rejected.message
    );
    assert!(!rejected.message.contains(&wrong), "the rejection shows the password it tried: {:?}", rejected.message);
    assert!(!engine_has_image(&image).await?, "{image} is on the engine although every pull was refused");

    let right = registry.password.clone();
    registry_login(&cluster, &host, &right).await?;
    check_registry_ls(&cluster, &host, &[&wrong, &right]).await?;
    berth_ok(&cluster, &["service", "update", &name, "--env", "X=1", "--detach"], "").await?;
    let version = rejected.service_version;
    let started = wait_for_task(&cluster, &name, "a task of the updated service to run", |t| {
        t.service_version > version && running(std::slice::from_ref(t)).len() == 1
    })
    .await?;
    eprintln!("task {} runs container {:.12}", started.id, started.container_id);
    assert!(engine_has_image(&image).await?, "the task runs but {image} is not on the engine");
    Ok(())
}

#[tokio::test]
async fn without_stored_credentials_a_private_image_is_rejected_with_the_registrys_reason() -> Result<()> {
    let test = "without_stored_credentials_a_private_image_is_rejected_with_the_registrys_reason";
    let mut registry;
    let Some((_engine, cluster)) = docker_cluster(test, 1, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    registry = Registry::start(&uuid_password()).await?;
    let image = registry.push_test_image(&unique_name("anon")).await?;
    let name = unique_name("anonymous");
    let spec = ServiceSpec { image: image.clone(), ..sleeper(&name, 1) };
    cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;
    let rejected =
        wait_for_task(&cluster, &name, "a task rejected for want of credentials", |t| t.state == "rejected").await?;
    eprintln!("rejected as it should be: {:?}", rejected.message);
    assert!(
        rejected.message.contains(&image) && mentions_auth_failure(&rejected.message),
        "the rejection should name {image} and say the registry wants credentials: {:?}",
        rejected.message
    );
    assert!(!engine_has_image(&image).await?, "{image} is on the engine although the registry refused it");
    Ok(())
}

/// A password nobody would guess and that no output contains by chance.
fn uuid_password() -> String {
    format!("pw-{}", uuid::Uuid::new_v4().simple())
}
