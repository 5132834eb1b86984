//! `berth stack ...`: deploy a compose file as a stack, list stacks, their
//! services and tasks, and remove them. The file is read here, with its
//! warnings and errors at line:column; the cluster gets every service of
//! the stack in one request and applies it in one Raft entry.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_compose::{parse_env_file, parse_stack, StackSource};
use berth_proto::v1 as proto;

use crate::cli::{StackCommand, StackDeployArgs, WaitArgs, DEFAULT_PROGRESS_TIMEOUT, DEFAULT_ROLLOUT_TIMEOUT};
use crate::client::{new_request_id, Client};
use crate::commands::{follow, service};
use crate::output::{self, OutputFormat};

/// A compose file larger than this is refused before it is read.
const MAX_COMPOSE_FILE_BYTES: u64 = berth_compose::MAX_STACK_FILE_BYTES as u64;

pub async fn run(client: &mut Client, command: StackCommand) -> Result<()> {
    match command {
        StackCommand::Deploy(args) => deploy(client, &args).await,
        StackCommand::Ls { output } => {
            let reply = client
                .call(|mut c| async move {
                    c.list_stacks(proto::ListStacksRequest { consistency: crate::client::read_consistency() }).await
                })
                .await?;
            match output {
                OutputFormat::Json => Ok(output::emit_json(&output::stacks_json(&reply.stacks))?),
                OutputFormat::Table => Ok(output::emit(output::render(&output::stacks_table(&reply.stacks)))?),
            }
        }
        StackCommand::Services { stack, output } => {
            let services = services_of(client, &stack).await?;
            match output {
                OutputFormat::Json => Ok(output::emit_json(&output::services_json(&services))?),
                OutputFormat::Table => Ok(output::emit(output::render(&output::services_table(&services)))?),
            }
        }
        StackCommand::Ps { stack, output } => {
            let mut tasks = Vec::new();
            for service in services_of(client, &stack).await? {
                tasks.extend(follow::list_tasks(client, &service.name).await?);
            }
            match output {
                OutputFormat::Json => Ok(output::emit_json(&output::tasks_json(&tasks))?),
                OutputFormat::Table => {
                    Ok(output::emit(output::render(&output::tasks_table(&tasks, follow::now_ms())))?)
                }
            }
        }
        StackCommand::Rm { stack } => {
            let request = proto::RemoveStackRequest { request_id: new_request_id(), stack: stack.clone() };
            let reply = client
                .call(|mut c| {
                    let request = request.clone();
                    async move { c.remove_stack(request).await }
                })
                .await?;
            for name in &reply.services {
                output::emit(name)?;
            }
            Ok(())
        }
    }
}

/// The services of `stack`; an unknown stack is an error, not an empty list.
async fn services_of(client: &mut Client, stack: &str) -> Result<Vec<proto::Service>> {
    let services: Vec<proto::Service> = service::list(client)
        .await?
        .into_iter()
        .filter(|s| s.spec.as_ref().is_some_and(|spec| spec.stack == stack))
        .collect();
    if services.is_empty() {
        bail!("stack '{stack}' not found (see `berth stack ls`)");
    }
    Ok(services)
}

/// A stack file read: its services, and the secrets it declares.
pub struct StackFile {
    pub services: Vec<proto::ServiceSpec>,
    pub secrets: Vec<berth_compose::StackSecret>,
}

/// Reads the compose file into the stack's specs, printing its warnings.
pub fn read_compose_file(path: &Path, stack: &str) -> Result<StackFile> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > MAX_COMPOSE_FILE_BYTES {
        bail!("{} is {size} bytes; a compose file may have at most {MAX_COMPOSE_FILE_BYTES}", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let absolute = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let base_dir = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let dotenv = dotenv_variables(&base_dir)?;
    // As docker compose: the shell's variables win over the project's .env.
    let env = |name: &str| {
        std::env::var(name).ok().or_else(|| dotenv.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    };
    let read_file = |p: &Path| std::fs::read_to_string(p);
    let file_name = path.display().to_string();
    let source = StackSource {
        stack,
        file_name: &file_name,
        text: &text,
        base_dir: &base_dir,
        env: &env,
        read_file: &read_file,
    };
    let parsed = parse_stack(&source)?;
    for warning in &parsed.warnings {
        eprintln!("{warning}");
    }
    Ok(StackFile { services: parsed.services.iter().map(berth_api::spec_to_proto).collect(), secrets: parsed.secrets })
}

/// Creates the secrets the file declares with `file:` that do not exist
/// yet; an existing one is left as it is (secrets never change: rotate by
/// renaming). External secrets must exist already.
pub async fn create_missing_secrets(client: &mut Client, secrets: &[berth_compose::StackSecret]) -> Result<()> {
    if secrets.is_empty() {
        return Ok(());
    }
    let existing: Vec<String> = crate::commands::secret::list(client).await?.into_iter().map(|s| s.name).collect();
    for secret in secrets {
        if existing.contains(&secret.name) {
            continue;
        }
        match &secret.file {
            Some(file) if !secret.external => {
                let data = crate::commands::secret::read_secret(file)?;
                crate::commands::secret::create(client, &secret.name, data).await?;
                eprintln!("created secret {}", secret.name);
            }
            _ => bail!("external secret '{}' does not exist (berth secret create {0} FILE)", secret.name),
        }
    }
    Ok(())
}

/// `KEY=VALUE` lines of the `.env` file beside the compose file, if any.
fn dotenv_variables(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(".env");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse_env_file(&text, &|name| std::env::var(name).ok()).with_context(|| format!("in {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

async fn deploy(client: &mut Client, args: &StackDeployArgs) -> Result<()> {
    let file = read_compose_file(&args.compose_file, &args.stack)?;
    if !args.dry_run {
        create_missing_secrets(client, &file.secrets).await?;
    }
    let reply = deploy_services(client, &args.stack, file.services, args.prune, args.dry_run).await?;
    let plan = reply.plan.unwrap_or_default();
    output::emit(output::stack_plan_text(&args.stack, &plan, args.dry_run))?;
    if args.dry_run {
        return Ok(());
    }
    follow_changes(client, &plan, &args.wait).await
}

pub async fn deploy_services(
    client: &mut Client,
    stack: &str,
    services: Vec<proto::ServiceSpec>,
    prune: bool,
    dry_run: bool,
) -> Result<proto::DeployStackReply> {
    let request =
        proto::DeployStackRequest { request_id: new_request_id(), stack: stack.to_string(), services, prune, dry_run };
    Ok(client
        .call(|mut c| {
            let request = request.clone();
            async move { c.deploy_stack(request).await }
        })
        .await?)
}

/// Follows each created service until its tasks run and each updated one
/// until its rollout ends, one after another; reports every failure.
pub async fn follow_changes(client: &mut Client, plan: &proto::StackPlan, wait: &WaitArgs) -> Result<()> {
    if wait.detach {
        return Ok(());
    }
    let mut failed = Vec::new();
    for name in plan.create.iter().chain(&plan.update) {
        let current = service::get(client, name).await?;
        let rolling = current.rollout.as_ref().is_some_and(|r| r.state == "rolling");
        let version = current.version;
        let result = if rolling {
            follow::follow_rollout(client, current, version, wait.timeout_or(DEFAULT_ROLLOUT_TIMEOUT)).await
        } else {
            follow::follow(client, current, version, wait.timeout_or(DEFAULT_PROGRESS_TIMEOUT)).await
        };
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            failed.push(name.clone());
        }
    }
    if !failed.is_empty() {
        bail!("{} of the stack's changed services did not converge: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
