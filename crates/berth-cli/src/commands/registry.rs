//! `berth registry ...`: store, list and forget image registry credentials.
//! The password comes from standard input only and is never shown again.

use std::io::Read;

use anyhow::{bail, Context, Result};
use berth_proto::v1 as proto;
use serde_json::json;

use crate::cli::RegistryCommand;
use crate::client::{new_request_id, Client};
use crate::output::{self, OutputFormat};

/// A password longer than this is not a password.
const MAX_PASSWORD_BYTES: u64 = 64 * 1024;

pub async fn run(client: &mut Client, command: RegistryCommand) -> Result<()> {
    match command {
        RegistryCommand::Login { host, username, password_stdin: _ } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .take(MAX_PASSWORD_BYTES)
                .read_to_string(&mut password)
                .context("reading the password")?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                bail!("no password on standard input (echo \"$PASSWORD\" | berth registry login {host} -u {username} --password-stdin)");
            }
            let request =
                proto::RegistryLoginRequest { request_id: new_request_id(), host: host.clone(), username, password };
            client
                .call(|mut c| {
                    let request = request.clone();
                    async move { c.registry_login(request).await }
                })
                .await?;
            output::emit(format!("credentials for {host} stored"))?;
        }
        RegistryCommand::Ls { output } => {
            let reply = client
                .call(|mut c| async move {
                    c.list_registries(proto::ListRegistriesRequest { consistency: crate::client::read_consistency() })
                        .await
                })
                .await?;
            let mut registries = reply.registries;
            registries.sort_by(|a, b| a.host.cmp(&b.host));
            match output {
                OutputFormat::Json => output::emit_json(&serde_json::Value::Array(
                    registries
                        .iter()
                        .map(|r| json!({ "host": r.host, "username": r.username, "created_at_ms": r.created_at_ms }))
                        .collect(),
                ))?,
                OutputFormat::Table => {
                    let mut table = output::table(&["HOST", "USERNAME"]);
                    for registry in &registries {
                        table.add_row(vec![registry.host.clone(), registry.username.clone()]);
                    }
                    output::emit(output::render(&table))?;
                }
            }
        }
        RegistryCommand::Rm { hosts } => {
            for host in &hosts {
                let request = proto::RemoveRegistryRequest { request_id: new_request_id(), host: host.clone() };
                client
                    .call(|mut c| {
                        let request = request.clone();
                        async move { c.remove_registry(request).await }
                    })
                    .await
                    .with_context(|| format!("removing {host}"))?;
                output::emit(host)?;
            }
        }
    }
    Ok(())
}
