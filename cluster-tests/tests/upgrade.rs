//! Rolling upgrade and downgrade of managers between the previous release
//! (built from its revision in RELEASES.md by `scripts/build-release.sh`)
//! and this build. Three managers start on the previous release; each is
//! replaced in turn on its own data directory while writes go on, and one
//! is taken back down and up again while the cluster is mixed. No
//! acknowledged write is lost and no manager of the previous release ever
//! stops (it never meets a record it cannot read): the cluster version
//! stays at the previous level, and the stores stay in the format it
//! reads, until every manager runs this build. Then the cluster version
//! rises, and the previous release refuses a data directory, naming both
//! formats, without changing a byte of it. With agents and Docker: a
//! service behind the agents' proxies serves a request loop through the
//! whole roll of managers and agents, in both mixed orders (a new agent
//! with old managers, old agents with new managers), and none of its
//! containers is restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::proto::{ReadConsistency, ServiceSpec};
use cluster_tests::workload::{agent_name, hostname_web, unique_name};
use cluster_tests::{
    berth_bin, free_port, list_services, names, previous_release_bin, request_id, service_spec, wait_until, AgentOpts,
    Cluster, ClusterOpts, Engine,
};

const DEADLINE: Duration = Duration::from_secs(20);
/// Acknowledged writes between two steps of the upgrade.
const WRITES_PER_STEP: usize = 4;

#[tokio::test]
async fn managers_roll_from_the_previous_release_and_back_without_losing_a_write() -> Result<()> {
    let previous = previous_release_bin()?;
    let current = berth_bin()?;
    let opts = ClusterOpts { bin: Some(previous.clone()), ..ClusterOpts::default() };
    let mut cluster = Cluster::start(3, opts).await?;
    let mut acked = BTreeSet::new();
    write_some(&cluster, "before", &mut acked).await?;

    // One manager at a time to this build; the one before stays the
    // previous release, so the cluster is mixed for a while.
    for i in 0..cluster.len() {
        upgrade(&mut cluster, i, &current).await?;
        write_some(&cluster, &format!("after-m{}", i + 1), &mut acked).await?;
        check_every_write_kept(&cluster, &acked).await?;
        if i + 1 < cluster.len() {
            // Mixed: the level stays where the previous release is.
            let status = cluster.manager(i).status().await?;
            assert_eq!(status.cluster_version, "0.1", "the cluster version rose with an old manager still a member");
            assert_eq!(
                store_format(&cluster.manager(i).data_dir())?,
                "1",
                "a store left the previous release's format"
            );
        }
        if i == 0 {
            // A way back while the cluster is mixed: the upgraded manager
            // goes back to the previous release on its data dir, and up again.
            upgrade(&mut cluster, 0, &previous).await?;
            write_some(&cluster, "downgraded-m1", &mut acked).await?;
            check_every_write_kept(&cluster, &acked).await?;
            upgrade(&mut cluster, 0, &current).await?;
        }
    }

    // Every manager runs this build: the cluster version rises, and every
    // store is marked so the previous release no longer opens it.
    wait_until("the cluster version to rise once every manager runs this build", DEADLINE, || async {
        let status = cluster.manager(0).status().await?;
        ensure!(status.cluster_version == "0.2", "the cluster version is {:?}", status.cluster_version);
        Ok(())
    })
    .await?;
    wait_until("every store to be raised to format 2", DEADLINE, || async {
        for manager in cluster.managers() {
            let format = store_format(&manager.data_dir())?;
            ensure!(format == "2", "{} is in store format {format}", manager.name());
        }
        Ok(())
    })
    .await?;

    // Back to the previous release now: refused, nothing changed.
    let last = cluster.len() - 1;
    cluster.kill(last)?;
    let before = tree_digest(&cluster.manager(last).data_dir())?;
    cluster.managers_mut()[last].set_binary(previous.clone());
    cluster.managers_mut()[last].start()?;
    let status = cluster.manager(last).wait_exit(DEADLINE).await?;
    ensure!(!status.success(), "the previous release opened a store of a raised cluster: {status}");
    let log = std::fs::read_to_string(cluster.manager(last).log_path()).context("reading the manager's log")?;
    let refusal = log.lines().rev().find(|l| l.contains("format version")).unwrap_or_default().to_string();
    ensure!(
        refusal.contains("format version 2") && refusal.contains("reads formats 1 to 1"),
        "the previous release must refuse naming both formats; its log ends:\n{}",
        cluster.manager(last).log_tail(15)
    );
    assert_eq!(tree_digest(&cluster.manager(last).data_dir())?, before, "a refused start changed the data dir");

    // This build takes the manager back, and it catches up.
    upgrade(&mut cluster, last, &current).await?;
    write_some(&cluster, "end", &mut acked).await?;
    check_every_write_kept(&cluster, &acked).await
}

/// Stops manager `i`, starts it on `bin` with the same data dir and port,
/// and waits until it answers and the cluster agrees on a leader.
async fn upgrade(cluster: &mut Cluster, i: usize, bin: &Path) -> Result<()> {
    if cluster.manager(i).is_running() {
        cluster.kill(i)?;
    }
    cluster.managers_mut()[i].set_binary(bin.to_path_buf());
    cluster.restart(i).await?;
    cluster.leader().await?;
    for manager in cluster.managers() {
        manager.check_alive()?;
    }
    Ok(())
}

async fn write_some(cluster: &Cluster, prefix: &str, acked: &mut BTreeSet<String>) -> Result<()> {
    for k in 0..WRITES_PER_STEP {
        let name = format!("{prefix}-{k}");
        cluster.create_acked(service_spec(&name), &request_id(), DEADLINE).await?;
        acked.insert(name);
    }
    Ok(())
}

/// Every manager, old or new, serves every acknowledged write.
async fn check_every_write_kept(cluster: &Cluster, acked: &BTreeSet<String>) -> Result<()> {
    for manager in cluster.managers() {
        let seen = wait_until(&format!("a linearizable read on {}", manager.name()), DEADLINE, || async {
            Ok(names(&list_services(manager.addr(), ReadConsistency::Linearizable).await?))
        })
        .await?;
        let lost: Vec<_> = acked.difference(&seen).collect();
        ensure!(lost.is_empty(), "{} lost acknowledged writes: {lost:?}", manager.name());
    }
    Ok(())
}

/// The number in a manager's store `FORMAT` file.
fn store_format(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("raft").join("FORMAT");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().trim_start_matches("berth-store-format ").to_string())
}

/// Every file under `dir` with its length and contents' hash.
fn tree_digest(dir: &Path) -> Result<BTreeMap<PathBuf, (u64, u64)>> {
    use std::hash::{Hash, Hasher};
    let mut digest = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path())?;
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut hasher);
                digest.insert(entry.path(), (bytes.len() as u64, hasher.finish()));
            }
        }
    }
    Ok(digest)
}

const HOST: &str = "upgrade.test";
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

fn web(name: &str, replicas: i64) -> ServiceSpec {
    hostname_web(name, replicas, HOST)
}

/// Requests sent to the first proxy that answers, as a client behind two
/// nodes does: a request fails only if no proxy serves it.
struct RequestLoop {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl RequestLoop {
    fn start(proxies: Vec<SocketAddr>) -> RequestLoop {
        let (stop, served, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let task = tokio::spawn({
            let (stop, served, failed): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
                (stop.clone(), Arc::clone(&served), Arc::clone(&failed));
            async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let mut last = String::new();
                    let mut ok = false;
                    for proxy in &proxies {
                        match cluster_tests::http::get(*proxy, HOST).await {
                            Ok((200, body)) if !body.is_empty() => {
                                ok = true;
                                break;
                            }
                            Ok((status, body)) => last = format!("{proxy}: {status} {body:?}"),
                            Err(e) => last = format!("{proxy}: {e:#}"),
                        }
                    }
                    if ok {
                        served.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(last);
                    }
                }
                errors
            }
        });
        RequestLoop { stop, served, failed, task }
    }

    async fn finish(self) -> Result<(usize, usize, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.task.await.context("the request loop panicked")?;
        Ok((self.served.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst), errors))
    }
}

/// Every task of the service with its container, sorted: a restart shows
/// as a new task or a new container.
async fn containers(cluster: &Cluster, name: &str) -> Result<Vec<(String, String)>> {
    let mut running: Vec<(String, String)> = cluster
        .tasks(name)
        .await?
        .into_iter()
        .filter(|t| t.desired_state == "running")
        .map(|t| (t.id, t.container_id))
        .collect();
    running.sort();
    Ok(running)
}

#[tokio::test]
async fn a_service_serves_every_request_while_managers_and_agents_roll_to_this_build() -> Result<()> {
    let test = "a_service_serves_every_request_while_managers_and_agents_roll_to_this_build";
    let Some(_engine) = Engine::for_test(test).await? else { return Ok(()) };
    let previous = previous_release_bin()?;
    let current = berth_bin()?;
    let mut cluster = Cluster::start(3, ClusterOpts { bin: Some(previous.clone()), ..ClusterOpts::default() }).await?;
    let agents = agent_count()?;
    let proxies =
        (0..agents).map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))).collect::<Result<Vec<_>>>()?;
    let listen = proxies.clone();
    let old = previous.clone();
    cluster.start_agents(agents, |i| AgentOpts::named(agent_name(i)).proxy(listen[i]).bin(old.clone())).await?;

    let name = unique_name("upgrade");
    let replicas = i64::try_from(agents)?;
    cluster.create_acked(web(&name, replicas), &request_id(), CONVERGE_DEADLINE).await?;
    let before = wait_until(&format!("{agents} ready tasks of {name}, one per node"), CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let ready: Vec<_> = tasks.iter().filter(|t| t.desired_state == "running" && t.ready).collect();
        let nodes: BTreeSet<&str> = ready.iter().map(|t| t.node_id.as_str()).collect();
        if ready.len() != agents || nodes.len() != agents || ready.iter().any(|t| t.container_id.is_empty()) {
            bail!("{} ready tasks on {} nodes", ready.len(), nodes.len());
        }
        containers(&cluster, &name).await
    })
    .await?;
    for proxy in &proxies {
        wait_until(&format!("{proxy} to serve {HOST}"), CONVERGE_DEADLINE, || async {
            let (status, body) = cluster_tests::http::get(*proxy, HOST).await?;
            ensure!(status == 200 && !body.is_empty(), "{proxy} answered {status} {body:?}");
            Ok(())
        })
        .await?;
    }

    let requests = RequestLoop::start(proxies.clone());
    let started = std::time::Instant::now();
    let mut acked = BTreeSet::new();
    // A new agent under old managers first, then the managers (so the
    // other agents, still old, run under new ones), then the other agents.
    upgrade_agent(&mut cluster, 0, &current).await?;
    write_some(&cluster, "agent-a1", &mut acked).await?;
    for i in 0..cluster.len() {
        upgrade(&mut cluster, i, &current).await?;
        write_some(&cluster, &format!("manager-m{}", i + 1), &mut acked).await?;
        if i + 1 < cluster.len() {
            // With a manager of 0.1 still a member, no record of 0.2 (such
            // as an agent's release) may be written: the stores stay format 1.
            let format = store_format(&cluster.manager(i).data_dir())?;
            ensure!(
                format == "1",
                "a 0.2 record was written with a 0.1 manager still a member (store format {format})"
            );
        }
    }
    let release = wait_until("the cluster version to rise once every manager runs this build", DEADLINE, || async {
        let status = cluster.manager(0).status().await?;
        ensure!(status.cluster_version == "0.2", "the cluster version is {:?}", status.cluster_version);
        Ok(status.members[0].version.clone())
    })
    .await?;
    for i in 1..agents {
        upgrade_agent(&mut cluster, i, &current).await?;
        write_some(&cluster, &format!("agent-a{}", i + 1), &mut acked).await?;
    }
    let rolled_in = started.elapsed();
    let (served, failed, errors) = requests.finish().await?;

    // scripts/bench/upgrade.sh reads this line.
    eprintln!(
        "rolled 3 managers and {agents} agents in {} ms; {served} requests served, {failed} failed",
        rolled_in.as_millis()
    );
    ensure!(failed == 0, "{failed} of {} requests failed during the upgrade: {errors:?}", served + failed);
    ensure!(served > 0, "the request loop sent nothing");
    check_every_write_kept(&cluster, &acked).await?;
    assert_eq!(containers(&cluster, &name).await?, before, "a task or container was replaced during the upgrade");
    // The agent's release is a 0.2 field, recorded only once the cluster is
    // at 0.2 (an agent that registered before shows it once it registers
    // again, as it does whenever the leader changes).
    let last = cluster.node(&agent_name(agents - 1)).await?;
    assert_eq!(last.agent_version, release, "node ls shows the release of the agent upgraded last");
    Ok(())
}

/// Agents in the roll: `BERTH_UPGRADE_AGENTS` (the benchmark uses 3), else 2.
fn agent_count() -> Result<usize> {
    let agents = match std::env::var("BERTH_UPGRADE_AGENTS") {
        Ok(n) => n.parse().with_context(|| format!("BERTH_UPGRADE_AGENTS={n} is not a number"))?,
        Err(_) => 2,
    };
    ensure!(agents >= 2, "the roll needs at least 2 agents, so that one proxy serves while another restarts");
    Ok(agents)
}

/// Stops agent `i` (its containers keep running), starts it on `bin`, and
/// waits until its node is ready again.
async fn upgrade_agent(cluster: &mut Cluster, i: usize, bin: &Path) -> Result<()> {
    cluster.kill_agent(i)?;
    cluster.agent_mut(i).set_binary(bin.to_path_buf());
    cluster.restart_agent(i).await
}
