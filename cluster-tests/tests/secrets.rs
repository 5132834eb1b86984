//! Secrets on real agents and Docker: a secret appears read-only at
//! /run/secrets in the containers that use it, is found in the clear
//! nowhere on disk (managers' Raft logs and snapshots, the agent's data
//! dir) nor in what the CLI prints, and rotates by a rolling update.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::workload::{agent_name, docker_cluster, sleeper_command, unique_name};
use cluster_tests::{cli, AgentOpts, CliOutput, Cluster};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

async fn berth(cluster: &Cluster, args: &[&str]) -> Result<CliOutput> {
    let manager = cluster.manager(0).addr().to_string();
    let all: Vec<&str> = ["--manager", manager.as_str()].into_iter().chain(args.iter().copied()).collect();
    let out = cli(&all).await?;
    ensure!(out.status.success(), "berth {} failed:\n{}{}", args.join(" "), out.stdout, out.stderr);
    Ok(out)
}

/// `docker exec CONTAINER ARGS...`: its exit status and stdout.
async fn exec(container: &str, args: &[&str]) -> Result<(bool, String)> {
    let output = tokio::process::Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(args)
        .output()
        .await
        .context("running docker exec")?;
    Ok((output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8], found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_containing(&path, needle, found);
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            found.push(path.display().to_string());
        }
    }
}

async fn running_container(cluster: &Cluster, service: &str, not: &[String]) -> Result<String> {
    cluster_tests::wait_until(&format!("a new running task of {service}"), CONVERGE_DEADLINE, || async {
        let tasks = cluster.wait_running(service, 1, Duration::from_secs(5)).await?;
        let task = &tasks[0];
        if not.contains(&task.container_id) {
            bail!("still the old container");
        }
        Ok(task.container_id.clone())
    })
    .await
}

#[tokio::test]
async fn a_secret_is_mounted_read_only_found_nowhere_in_the_clear_and_rotates() -> Result<()> {
    let test = "a_secret_is_mounted_read_only_found_nowhere_in_the_clear_and_rotates";
    let Some((_engine, cluster)) = docker_cluster(test, 1, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let value = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    let file = dir.path().join("db-password");
    std::fs::write(&file, &value)?;
    let file = file.display().to_string();
    berth(&cluster, &["secret", "create", "db-password", &file]).await?;

    let name = unique_name("vault");
    let mut create = vec!["service", "create", name.as_str(), "--image", cluster_tests::docker::TEST_IMAGE];
    create.extend(["--secret", "db-password", "--update-monitor", "0s", "--"]);
    let command = sleeper_command();
    create.extend(command.iter().map(String::as_str));
    berth(&cluster, &create).await?;
    let container = running_container(&cluster, &name, &[]).await?;

    let (read, content) = exec(&container, &["cat", "/run/secrets/db-password"]).await?;
    ensure!(read && content == value, "the secret reads {content:?} in the container");
    let (written, _) = exec(&container, &["sh", "-c", "echo x > /run/secrets/db-password"]).await?;
    ensure!(!written, "the secret's mount is writable");

    let mut found = Vec::new();
    for manager in cluster.managers() {
        files_containing(&manager.data_dir(), value.as_bytes(), &mut found);
    }
    files_containing(&cluster.agent(0).data_dir(), value.as_bytes(), &mut found);
    ensure!(found.is_empty(), "the secret is in the clear in {found:?}");
    for args in [vec!["secret", "ls", "-o", "json"], vec!["service", "inspect", name.as_str(), "-o", "json"]] {
        let out = berth(&cluster, &args).await?;
        ensure!(!out.stdout.contains(&value), "berth {} prints the secret", args.join(" "));
    }
    let refused = cli(&["--manager", &cluster.manager(0).addr().to_string(), "secret", "rm", "db-password"]).await?;
    ensure!(!refused.status.success(), "a secret in use was removed");

    // Rotation: a new secret under the same file name, rolled out.
    let rotated = format!("r0tated-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.path().join("db-password-2"), &rotated)?;
    let file2 = dir.path().join("db-password-2").display().to_string();
    berth(&cluster, &["secret", "create", "db-password-2", &file2]).await?;
    berth(
        &cluster,
        &["service", "update", &name, "--secret-rm", "db-password", "--secret", "db-password-2:db-password"],
    )
    .await?;
    let replaced = running_container(&cluster, &name, &[container]).await?;
    let (read, content) = exec(&replaced, &["cat", "/run/secrets/db-password"]).await?;
    ensure!(read && content == rotated, "after rotation the secret reads {content:?}");
    berth(&cluster, &["secret", "rm", "db-password"]).await?;
    Ok(())
}
