//! `berth trigger ...`: create, list and revoke the secret URLs that
//! redeploy or scale a service when a CI pipeline POSTs to them. The
//! secret is drawn here, once per command, so a create retried across a
//! leader change makes one trigger whose URL is the one printed.

use anyhow::{Context, Result};
use berth_proto::v1 as proto;

use crate::cli::TriggerCommand;
use crate::client::{new_request_id, Client};
use crate::output::{self, OutputFormat};

/// A trigger secret: two random v4 UUIDs, 244 random bits in 64 hex digits.
fn new_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub async fn run(client: &mut Client, command: TriggerCommand) -> Result<()> {
    match command {
        TriggerCommand::Create { service, action, quiet } => {
            let reply = create(client, &service, &action.to_string()).await?;
            if quiet {
                output::emit(&reply.url)?;
            } else {
                let id = reply.trigger.as_ref().map(|t| t.id.as_str()).unwrap_or_default();
                output::emit(format!(
                    "trigger {id}: {action} {service}\nPOST to: {}\n(shown once; `berth trigger rm {id}` revokes it)",
                    reply.url
                ))?;
            }
        }
        TriggerCommand::Ls { service, output } => {
            let triggers = list(client, service.as_deref().unwrap_or_default()).await?;
            match output {
                OutputFormat::Json => output::emit_json(&output::triggers_json(&triggers))?,
                OutputFormat::Table => output::emit(output::render(&output::triggers_table(&triggers)))?,
            }
        }
        TriggerCommand::Rm { ids } => {
            let total = ids.len();
            let mut failed = 0;
            for id in &ids {
                match remove(client, id).await {
                    Ok(()) => output::emit(id)?,
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {id}: {e:#}");
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} of {total} triggers were not removed");
        }
    }
    Ok(())
}

pub async fn create(client: &mut Client, service: &str, action: &str) -> Result<proto::CreateTriggerReply> {
    let request = proto::CreateTriggerRequest {
        request_id: new_request_id(),
        service: service.to_string(),
        action: action.to_string(),
        token: new_secret(),
    };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.create_trigger(request).await }
        })
        .await?;
    reply.trigger.as_ref().context("the manager's reply carried no trigger (a manager bug; please report it)")?;
    Ok(reply)
}

pub async fn list(client: &mut Client, service: &str) -> Result<Vec<proto::Trigger>> {
    let request =
        proto::ListTriggersRequest { service: service.to_string(), consistency: crate::client::read_consistency() };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.list_triggers(request).await }
        })
        .await?;
    let mut triggers = reply.triggers;
    triggers.sort_by(|a, b| (&a.service, a.created_at_ms, &a.id).cmp(&(&b.service, b.created_at_ms, &b.id)));
    Ok(triggers)
}

pub async fn remove(client: &mut Client, id: &str) -> Result<()> {
    let request = proto::RemoveTriggerRequest { request_id: new_request_id(), id: id.to_string() };
    client
        .call(|mut c| {
            let request = request.clone();
            async move { c.remove_trigger(request).await }
        })
        .await?;
    Ok(())
}
