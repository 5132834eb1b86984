//! `berth service ...`: create, list, inspect, list tasks, update, scale
//! and remove.
//!
//! The functions that talk to the cluster return the service they read or
//! wrote; `run` renders. Each write builds its request once, with a fresh
//! request id, and hands that same request to every retry. Unless
//! `--detach`, a write is followed (`follow`) until its tasks run.

use anyhow::{anyhow, Context, Result};
use berth_proto::v1 as proto;
use tonic::Code;

use crate::cli::{CreateArgs, ServiceCommand, UpdateArgs, WaitArgs, DEFAULT_PROGRESS_TIMEOUT, DEFAULT_ROLLOUT_TIMEOUT};
use crate::client::{new_request_id, ApiError, Client};
use crate::commands::follow;
use crate::output::{self, OutputFormat};
use crate::parse::ScaleTarget;
use crate::spec;

/// A service as a write left it, and the Raft index of that write, from
/// which its consequences (new tasks) can be followed.
#[derive(Debug)]
pub struct Written {
    pub service: proto::Service,
    pub index: u64,
}

/// Times `service update` re-reads the service and re-applies its flags
/// after another writer changed it in between. More than a couple means
/// something rewrites the service constantly; telling the user is better
/// than spinning.
pub const MAX_STALE_UPDATE_RETRIES: u32 = 3;

pub async fn run(client: &mut Client, command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            let written = create(client, &args).await?;
            output::emit(&written.service.id)?;
            wait_for_tasks(client, written, &args.wait).await?;
        }
        ServiceCommand::Ls { output } => {
            let services = list(client).await?;
            match output {
                OutputFormat::Json => output::emit_json(&output::services_json(&services))?,
                OutputFormat::Table => output::emit(output::render(&output::services_table(&services)))?,
            }
        }
        ServiceCommand::Inspect { name, output } => {
            let service = get(client, &name).await?;
            match output {
                OutputFormat::Json => output::emit_json(&output::service_json(&service))?,
                OutputFormat::Table => output::emit(output::render(&output::service_details(&service)))?,
            }
        }
        ServiceCommand::Ps { name, output } => {
            let tasks = follow::list_tasks(client, &name).await?;
            match output {
                OutputFormat::Json => output::emit_json(&output::tasks_json(&tasks))?,
                OutputFormat::Table => output::emit(output::render(&output::tasks_table(&tasks, follow::now_ms())))?,
            }
        }
        ServiceCommand::Update(args) => {
            let written = update(client, &args).await?;
            output::emit(&written.service.name)?;
            if is_rolling(&written.service) {
                wait_for_rollout(client, written, &args.wait).await?;
            } else {
                wait_for_tasks(client, written, &args.wait).await?;
            }
        }
        ServiceCommand::Redeploy { name, wait } => {
            let written = redeploy(client, &name).await?;
            output::emit(&written.service.name)?;
            wait_for_rollout(client, written, &wait).await?;
        }
        ServiceCommand::Rollback { name, wait } => {
            let written = rollback(client, &name).await?;
            output::emit(&written.service.name)?;
            wait_for_rollout(client, written, &wait).await?;
        }
        ServiceCommand::Scale { targets, wait } => {
            let total = targets.len();
            let mut failed = 0;
            let mut scaled = Vec::new();
            for target in &targets {
                match scale(client, target).await {
                    Ok(written) => {
                        output::emit(format!("{} scaled to {}", target.name, target.replicas))?;
                        scaled.push(written);
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {}: {e:#}", target.name);
                    }
                }
            }
            // All writes first, so the services converge together; then
            // one progress display after another.
            let mut stuck = 0;
            for written in scaled {
                // The error starts with the service's name already.
                if let Err(e) = wait_for_tasks(client, written, &wait).await {
                    stuck += 1;
                    eprintln!("error: {e:#}");
                }
            }
            if failed > 0 {
                return Err(anyhow!("{failed} of {total} services were not scaled"));
            }
            if stuck > 0 {
                return Err(anyhow!("{stuck} of {total} services did not reach their replica count"));
            }
        }
        ServiceCommand::Rm { names } => {
            let total = names.len();
            let mut failed = 0;
            for name in &names {
                match remove(client, name).await {
                    Ok(_) => output::emit(name)?,
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {name}: {e:#}");
                    }
                }
            }
            if failed > 0 {
                return Err(anyhow!("{failed} of {total} services were not removed"));
            }
        }
    }
    Ok(())
}

/// Follows a write until its tasks run, unless `--detach`.
async fn wait_for_tasks(client: &mut Client, written: Written, wait: &WaitArgs) -> Result<()> {
    if wait.detach {
        return Ok(());
    }
    let timeout = wait.timeout_or(DEFAULT_PROGRESS_TIMEOUT);
    follow::follow(client, written.service, written.index, timeout).await
}

/// Follows a rollout until it completes, pauses or rolls back, unless `--detach`.
async fn wait_for_rollout(client: &mut Client, written: Written, wait: &WaitArgs) -> Result<()> {
    if wait.detach {
        return Ok(());
    }
    let timeout = wait.timeout_or(DEFAULT_ROLLOUT_TIMEOUT);
    follow::follow_rollout(client, written.service, written.index, timeout).await
}

fn is_rolling(service: &proto::Service) -> bool {
    service.rollout.as_ref().is_some_and(|r| r.state == "rolling")
}

/// The reply of every service write names the service; one without is a
/// manager bug, reported rather than unwrapped.
fn reply_service(reply: proto::ServiceReply) -> Result<proto::Service> {
    reply.service.context("the manager's reply carried no service (a manager bug; please report it)")
}

fn written(reply: proto::ServiceReply) -> Result<Written> {
    let index = reply.index;
    Ok(Written { service: reply_service(reply)?, index })
}

pub async fn create(client: &mut Client, args: &CreateArgs) -> Result<Written> {
    let request = proto::CreateServiceRequest { request_id: new_request_id(), spec: Some(spec::create_spec(args)?) };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.create_service(request).await }
        })
        .await?;
    written(reply)
}

pub async fn list(client: &mut Client) -> Result<Vec<proto::Service>> {
    let reply = client
        .call(|mut c| async move {
            c.list_services(proto::ListServicesRequest { consistency: crate::client::read_consistency() }).await
        })
        .await?;
    Ok(reply.services)
}

pub async fn get(client: &mut Client, name: &str) -> Result<proto::Service> {
    reply_service(read(client, name).await?)
}

/// A linearizable read: `update` must start from the newest version or it
/// is refused as stale anyway.
async fn read(client: &mut Client, name: &str) -> Result<proto::ServiceReply, ApiError> {
    let request = proto::GetServiceRequest { name: name.to_string(), consistency: crate::client::read_consistency() };
    client
        .call(|mut c| {
            let request = request.clone();
            async move { c.get_service(request).await }
        })
        .await
}

/// Read, apply the flags, write with the version read. When another writer
/// got in between (FAILED_PRECONDITION), start over from a fresh read, with
/// a new request id: the cluster remembers the refused one's answer.
pub async fn update(client: &mut Client, args: &UpdateArgs) -> Result<Written> {
    // Before any request, so a mistyped command costs no round trip.
    spec::ensure_changes(args)?;
    let mut stale_retries = 0;
    loop {
        let current = reply_service(read(client, &args.name).await?)?;
        let spec = spec::updated_spec(&current.spec.clone().unwrap_or_default(), args)?;
        let request = proto::UpdateServiceRequest {
            request_id: new_request_id(),
            name: args.name.clone(),
            spec: Some(spec),
            expected_version: current.version,
        };
        let result = client
            .call(|mut c| {
                let request = request.clone();
                async move { c.update_service(request).await }
            })
            .await;
        match result {
            Ok(reply) => return written(reply),
            Err(e) if e.code() == Some(Code::FailedPrecondition) && stale_retries < MAX_STALE_UPDATE_RETRIES => {
                stale_retries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn scale(client: &mut Client, target: &ScaleTarget) -> Result<Written> {
    let request = proto::ScaleServiceRequest {
        request_id: new_request_id(),
        name: target.name.clone(),
        replicas: target.replicas,
    };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.scale_service(request).await }
        })
        .await?;
    written(reply)
}

pub async fn redeploy(client: &mut Client, name: &str) -> Result<Written> {
    let request = proto::RedeployServiceRequest { request_id: new_request_id(), name: name.to_string() };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.redeploy_service(request).await }
        })
        .await?;
    written(reply)
}

pub async fn rollback(client: &mut Client, name: &str) -> Result<Written> {
    let request = proto::RollbackServiceRequest { request_id: new_request_id(), name: name.to_string() };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.rollback_service(request).await }
        })
        .await?;
    written(reply)
}

pub async fn remove(client: &mut Client, name: &str) -> Result<proto::RemoveServiceReply> {
    let request = proto::RemoveServiceRequest { request_id: new_request_id(), name: name.to_string() };
    Ok(client
        .call(|mut c| {
            let request = request.clone();
            async move { c.remove_service(request).await }
        })
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::testing::FakeCluster;
    use clap::Parser;

    fn parse(args: &[&str]) -> ServiceCommand {
        let argv = ["berth", "service"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Service(command)) => command,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn update_args(args: &[&str]) -> UpdateArgs {
        match parse(args) {
            ServiceCommand::Update(args) => args,
            other => panic!("not update: {other:?}"),
        }
    }

    fn web() -> proto::ServiceSpec {
        proto::ServiceSpec { name: "web".into(), image: "nginx:1.26".into(), replicas: Some(2), ..Default::default() }
    }

    #[tokio::test]
    async fn update_sends_the_version_it_read() {
        let cluster = FakeCluster::start().await;
        let before = cluster.insert(web());
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let after =
            update(&mut client, &update_args(&["update", "web", "--image", "nginx:1.27"])).await.expect("updated");

        let sent = cluster.update_requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].expected_version, before.version);
        assert_eq!(after.service.spec.map(|s| s.image), Some("nginx:1.27".to_string()));
    }

    #[tokio::test]
    async fn a_stale_update_is_reread_and_reapplied_with_a_new_request_id() {
        let cluster = FakeCluster::start().await;
        cluster.insert(web());
        cluster.concurrent_writes(2);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        update(&mut client, &update_args(&["update", "web", "--replicas", "5"]))
            .await
            .expect("updated on the third try");

        let sent = cluster.update_requests();
        assert_eq!(sent.len(), 3);
        let versions: Vec<u64> = sent.iter().map(|r| r.expected_version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "each retry re-read: {versions:?}");
        let mut ids: Vec<&str> = sent.iter().map(|r| r.request_id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3, "a new write gets a new id");
        let stored = cluster.service("web").and_then(|s| s.spec);
        assert_eq!(stored.and_then(|s| s.replicas), Some(5));
    }

    #[tokio::test]
    async fn update_gives_up_after_the_stale_retry_limit() {
        let cluster = FakeCluster::start().await;
        cluster.insert(web());
        cluster.concurrent_writes(MAX_STALE_UPDATE_RETRIES + 1);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let err =
            update(&mut client, &update_args(&["update", "web", "--replicas", "5"])).await.expect_err("always stale");

        assert!(err.to_string().starts_with("stale version"), "{err}");
        let attempts = cluster.update_requests().len();
        assert_eq!(attempts, 1 + MAX_STALE_UPDATE_RETRIES as usize);
    }

    #[tokio::test]
    async fn update_of_a_missing_service_says_so() {
        let cluster = FakeCluster::start().await;
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let err =
            update(&mut client, &update_args(&["update", "nope", "--replicas", "1"])).await.expect_err("not found");

        assert_eq!(err.to_string(), "service 'nope' not found");
        assert!(cluster.update_requests().is_empty());
    }

    #[tokio::test]
    async fn each_scale_target_is_its_own_write() {
        let cluster = FakeCluster::start().await;
        cluster.insert(web());
        cluster.insert(proto::ServiceSpec { name: "db".into(), ..web() });
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        for text in ["web=3", "db=-1"] {
            let target = crate::parse::scale_target(text).expect("valid target");
            let result = scale(&mut client, &target).await;
            if target.replicas < 0 {
                let err = result.expect_err("negative refused by the manager");
                assert_eq!(err.to_string(), "invalid replicas: -1 is negative");
            } else {
                result.expect("scaled");
            }
        }

        let sent = cluster.scale_requests();
        assert_eq!(sent.len(), 2);
        assert_ne!(sent[0].request_id, sent[1].request_id);
    }
}
