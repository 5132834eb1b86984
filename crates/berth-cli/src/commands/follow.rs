//! Live progress after `service create`, `scale` and `update`: follows the
//! cluster's changes from the write's Raft index, re-lists the service's
//! tasks when one of them changed, and shows what `progress::evaluate`
//! makes of them until the service converges, cannot, or the deadline
//! passes. The judgement is all in `progress`; this is the I/O around it.
//!
//! Progress goes to stderr, so stdout keeps only what a script reads (the
//! service id). At a terminal it is a bar redrawn in place; elsewhere
//! (a CI log, a pipe) it is one plain line per change, with no escape codes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use berth_proto::v1 as proto;
use berth_proto::v1::watch_event::Change;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tonic::Streaming;

use crate::client::Client;
use crate::commands::node;
use crate::output;
use crate::progress::{self, Goal, Progress, RolloutVerdict, Verdict};

/// While watch events stream in, the tasks are re-listed at most this
/// often: a burst of changes costs one read, not one per change.
pub const MIN_REFRESH_GAP_MS: u64 = 100;
/// Re-list this often even without events, in case the watch missed one.
pub const WATCHED_REFRESH_MS: u64 = 1_000;
/// Re-list this often when the manager cannot be watched.
pub const POLL_REFRESH_MS: u64 = 200;
/// Spinner redraw at a terminal.
const BAR_TICK_MS: u64 = 100;
const BAR_TEMPLATE: &str = "{spinner} [{bar:20}] {elapsed:>3} {wide_msg}";

/// How following a service ended.
enum Ending {
    Converged { goal: Goal, progress: Progress },
    Failed { goal: Goal, progress: Progress, why: String, tasks: Vec<proto::Task> },
    TimedOut { goal: Goal, progress: Progress, tasks: Vec<proto::Task> },
}

/// Follows `service` from the Raft index of the write that changed it
/// until its tasks run, and reports the outcome: a summary line on
/// success, the tasks and an error otherwise.
pub async fn follow(client: &mut Client, service: proto::Service, from_index: u64, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let name = service.name.clone();
    let mut view = View::new();
    let ending = follow_until_settled(client, service, from_index, started + timeout, &mut view).await;
    view.clear();
    match ending? {
        Ending::Converged { goal, progress } => {
            say(&progress::summary(&goal, &progress, started.elapsed()));
            Ok(())
        }
        Ending::Failed { goal, progress, why, tasks } => {
            show_tasks(&tasks);
            bail!(
                "{}: {why} (the change stays; see `berth service ps {name}`)",
                progress::status_line(&goal, &progress)
            )
        }
        Ending::TimedOut { goal, progress, tasks } => {
            show_tasks(&tasks);
            bail!(
                "{} after {:.0}s; stopped waiting (--timeout; the change stays and the cluster keeps \
                 working on it, see `berth service ps {name}`)",
                progress::status_line(&goal, &progress),
                timeout.as_secs_f64()
            )
        }
    }
}

/// Follows the service's rollout from the write that started it until it
/// completes, pauses or rolls back, showing the slots updated so far. A
/// rollout that did not complete is an error, with the cluster's reason.
pub async fn follow_rollout(
    client: &mut Client,
    service: proto::Service,
    from_index: u64,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let name = service.name.clone();
    let mut view = View::new();
    let mut watch = open_watch(client, from_index).await;
    let ending = loop {
        let current = crate::commands::service::get(client, &name).await?;
        let Some(rollout) = current.rollout else {
            break Ok(format!("{name}: nothing to roll out"));
        };
        let line = progress::rollout_line(&name, &rollout);
        view.show_line(&line, u64::from(rollout.slots), u64::from(rollout.updated));
        match progress::rollout_verdict(&rollout) {
            RolloutVerdict::Completed => {
                break Ok(format!("{line} in {:.1}s: {}", started.elapsed().as_secs_f64(), rollout.message))
            }
            RolloutVerdict::Paused(why) => {
                break Err(anyhow!(
                    "{line}: paused: {why}\n(fix the spec and `berth service update {name}`, or `berth service \
                     rollback {name}`)"
                ))
            }
            RolloutVerdict::RolledBack(why) => break Err(anyhow!("{name}: {why}")),
            RolloutVerdict::Rolling => {}
        }
        if !wait_for_change(client, &mut watch, &current.id, deadline).await {
            break Err(anyhow!(
                "{line} after {:.0}s; stopped waiting (--timeout; the rollout goes on, see `berth service \
                 inspect {name}`)",
                timeout.as_secs_f64()
            ));
        }
    };
    view.clear();
    say(&ending?);
    Ok(())
}

/// Waits until the service or one of its tasks changes, or a periodic
/// re-read is due; false once the deadline passed.
async fn wait_for_change(
    client: &mut Client,
    watch: &mut Option<Streaming<proto::WatchEvent>>,
    service_id: &str,
    deadline: Instant,
) -> bool {
    let period = if watch.is_some() { WATCHED_REFRESH_MS } else { POLL_REFRESH_MS };
    let refresh_at = Instant::now() + Duration::from_millis(period);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            _ = tokio::time::sleep_until(refresh_at) => return true,
            event = next_event(watch) => match event.and_then(|e| e.change) {
                Some(Change::ServiceUpserted(s)) if s.id == service_id => break,
                Some(Change::TaskUpserted(t)) if t.service_id == service_id => break,
                Some(Change::Resync(_)) => {
                    *watch = open_watch(client, 0).await;
                    break;
                }
                Some(_) => {}
                None => {
                    *watch = None;
                    break;
                }
            },
        }
    }
    // Let a burst of changes settle into one read.
    tokio::time::sleep_until((Instant::now() + Duration::from_millis(MIN_REFRESH_GAP_MS)).min(deadline)).await;
    true
}

async fn follow_until_settled(
    client: &mut Client,
    mut service: proto::Service,
    from_index: u64,
    deadline: Instant,
    view: &mut View,
) -> Result<Ending> {
    let mut watch = open_watch(client, from_index).await;
    let mut last_note: Option<String> = None;
    let mut refresh_now = true;
    let mut last_refresh = Instant::now();
    let mut latest: Option<(Goal, Progress, Vec<proto::Task>)> = None;
    loop {
        if refresh_now {
            let tasks = list_tasks(client, &service.name).await?;
            let every_node = service.spec.as_ref().is_some_and(|s| s.every_node);
            let nodes = if every_node { node::list(client).await? } else { Vec::new() };
            let goal = Goal::new(&service, &nodes);
            let progress = progress::evaluate(&goal, &tasks);
            if progress.note.is_some() {
                last_note.clone_from(&progress.note);
            }
            view.show(&goal, &progress, last_note.as_deref());
            match &progress.verdict {
                Verdict::Converged => return Ok(Ending::Converged { goal, progress }),
                Verdict::Failed(why) => {
                    let why = why.clone();
                    return Ok(Ending::Failed { goal, progress, why, tasks });
                }
                Verdict::Converging => {}
            }
            latest = Some((goal, progress, tasks));
            refresh_now = false;
            last_refresh = Instant::now();
        }
        let period = if watch.is_some() { WATCHED_REFRESH_MS } else { POLL_REFRESH_MS };
        let next_refresh = last_refresh + Duration::from_millis(period);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                let (goal, progress, tasks) = match latest {
                    Some(latest) => latest,
                    None => bail!("no answer about the tasks of {} before the deadline", service.name),
                };
                return Ok(Ending::TimedOut { goal, progress, tasks });
            }
            _ = tokio::time::sleep_until(next_refresh) => refresh_now = true,
            event = next_event(&mut watch) => match event {
                Some(event) => match event.change {
                    Some(Change::ServiceUpserted(changed)) if changed.id == service.id => {
                        service = changed;
                        refresh_now = true;
                    }
                    Some(Change::ServiceRemoved(removed)) if removed.id == service.id => {
                        bail!("service '{}' was removed while waiting for its tasks", removed.name)
                    }
                    Some(Change::TaskUpserted(task)) if task.service_id == service.id => refresh_now = true,
                    Some(Change::TaskRemoved(task)) if task.service_id == service.id => refresh_now = true,
                    Some(Change::NodeUpserted(_) | Change::NodeRemoved(_)) => {
                        refresh_now = service.spec.as_ref().is_some_and(|s| s.every_node);
                    }
                    Some(Change::Resync(_)) => {
                        // The manager ends the stream after a resync: start
                        // over from now and re-list, which covers the gap.
                        watch = open_watch(client, 0).await;
                        refresh_now = true;
                    }
                    _ => {}
                },
                None => {
                    // The stream broke (manager restart, leader change):
                    // poll from here on rather than lose the thread.
                    watch = None;
                    refresh_now = true;
                }
            },
        }
        if refresh_now {
            // Let a burst of events settle into one read.
            let earliest = last_refresh + Duration::from_millis(MIN_REFRESH_GAP_MS);
            tokio::time::sleep_until(earliest.min(deadline)).await;
        }
    }
}

/// A watch from `from_index`, or `None` when the manager cannot be watched
/// (then the caller polls).
async fn open_watch(client: &mut Client, from_index: u64) -> Option<Streaming<proto::WatchEvent>> {
    client.call(|mut c| async move { c.watch(proto::WatchRequest { from_index }).await }).await.ok()
}

/// The next watch event; never resolves without a watch.
async fn next_event(watch: &mut Option<Streaming<proto::WatchEvent>>) -> Option<proto::WatchEvent> {
    match watch {
        Some(stream) => stream.message().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// The service's tasks as the leader knows them: a local read could lag
/// behind the write being followed.
pub async fn list_tasks(client: &mut Client, service: &str) -> Result<Vec<proto::Task>> {
    let request =
        proto::ListTasksRequest { service: service.to_string(), consistency: crate::client::read_consistency() };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.list_tasks(request).await }
        })
        .await?;
    Ok(reply.tasks)
}

/// This host's wall clock, for showing how long ago a task changed.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One line to stderr; a closed stderr is no reason to fail the command.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn show_tasks(tasks: &[proto::Task]) {
    if !tasks.is_empty() {
        say(&output::render(&output::tasks_table(tasks, now_ms())));
    }
}

/// Where progress is shown: a bar at a terminal, plain lines elsewhere.
enum View {
    Bar(ProgressBar),
    Lines { last: Option<String> },
}

impl View {
    fn new() -> View {
        if !std::io::stderr().is_terminal() {
            return View::Lines { last: None };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        // A bad template is a bug here, not the user's problem: fall back
        // to indicatif's plain bar rather than fail the command.
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(BAR_TICK_MS));
        View::Bar(bar)
    }

    fn show(&mut self, goal: &Goal, progress: &Progress, note: Option<&str>) {
        let status = progress::status_line(goal, progress);
        let text = match note {
            Some(note) => format!("{status} ({note})"),
            None => status,
        };
        self.show_line(&text, progress.wanted as u64, progress.running.min(progress.wanted) as u64);
    }

    fn show_line(&mut self, text: &str, length: u64, position: u64) {
        let text = text.to_string();
        match self {
            View::Bar(bar) => {
                bar.set_length(length);
                bar.set_position(position.min(length));
                bar.set_message(text);
            }
            View::Lines { last } => {
                if last.as_deref() != Some(text.as_str()) {
                    say(&text);
                    *last = Some(text);
                }
            }
        }
    }

    fn clear(&mut self) {
        if let View::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeCluster;

    fn task(slot: u32, state: &str, message: &str) -> proto::Task {
        proto::Task {
            id: format!("task-{slot}-{state}"),
            service_id: "id-web".into(),
            service_name: "web".into(),
            slot,
            node_id: "n1".into(),
            node_name: "node-1".into(),
            desired_state: "running".into(),
            state: state.into(),
            message: message.into(),
            created_at_ms: 1,
            state_since_ms: 1,
            ..Default::default()
        }
    }

    fn web(replicas: i64) -> proto::ServiceSpec {
        proto::ServiceSpec {
            name: "web".into(),
            image: "busybox".into(),
            replicas: Some(replicas),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn following_polls_until_every_replica_runs() {
        let cluster = FakeCluster::start().await;
        let service = cluster.insert(web(2));
        cluster.script_tasks([
            vec![],
            vec![task(1, "pending", "waiting for a node"), task(2, "assigned", "")],
            vec![task(1, "running", ""), task(2, "starting", "")],
            vec![task(1, "running", ""), task(2, "running", "")],
        ]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        follow(&mut client, service, 1, Duration::from_secs(10)).await.expect("converges");

        assert!(cluster.task_lists() >= 4, "read until the last snapshot");
    }

    #[tokio::test]
    async fn following_stops_when_every_task_is_rejected() {
        let cluster = FakeCluster::start().await;
        let service = cluster.insert(web(2));
        let rejected = "No such image: does-not-exist:latest";
        cluster.script_tasks([vec![task(1, "rejected", rejected), task(2, "rejected", rejected)]]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let err = follow(&mut client, service, 1, Duration::from_secs(10)).await.expect_err("cannot converge");

        let text = err.to_string();
        assert!(text.starts_with("web: 0/2 running: all 2 tasks were rejected"), "{text}");
        assert!(text.contains(rejected), "{text}");
    }

    #[tokio::test]
    async fn following_gives_up_at_the_deadline_with_the_progress_so_far() {
        let cluster = FakeCluster::start().await;
        let service = cluster.insert(web(2));
        cluster.script_tasks([vec![task(1, "running", ""), task(2, "pending", "no node is ready")]]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let err = follow(&mut client, service, 1, Duration::from_millis(600)).await.expect_err("times out");

        let text = err.to_string();
        assert!(text.starts_with("web: 1/2 running after"), "{text}");
        assert!(text.contains("--timeout"), "{text}");
    }

    fn rollout(state: &str, updated: u32, message: &str) -> proto::Rollout {
        proto::Rollout {
            kind: "redeploy".into(),
            state: state.into(),
            message: message.into(),
            slots: 2,
            updated,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn following_a_rollout_reads_until_it_completes() {
        let cluster = FakeCluster::start().await;
        let service = cluster.insert(web(2));
        cluster.script_rollouts([
            rollout("rolling", 0, ""),
            rollout("rolling", 1, ""),
            rollout("completed", 2, "redeploy completed"),
        ]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        follow_rollout(&mut client, service, 1, Duration::from_secs(10)).await.expect("completes");
        // The script only moves on when read: "completed" is reached after
        // both "rolling" states were read, and nothing is read after it.
        assert_eq!(cluster.rollout_reads(), 3, "every scripted state is read once, the last one ends the follow");
    }

    #[tokio::test]
    async fn a_paused_rollout_is_an_error_with_the_reason_and_what_to_do() {
        let cluster = FakeCluster::start().await;
        let service = cluster.insert(web(2));
        cluster.script_rollouts([rollout("rolling", 0, ""), rollout("paused", 1, "task 1 failed: exited with code 3")]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let err = follow_rollout(&mut client, service, 1, Duration::from_secs(10)).await.expect_err("paused");

        let text = err.to_string();
        assert!(text.starts_with("web: redeploy: 1/2 updated: paused: task 1 failed: exited with code 3"), "{text}");
        assert!(text.contains("berth service rollback web"), "{text}");
    }
}
