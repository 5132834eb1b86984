//! `berth secret ...`: create secrets from a file or standard input, list
//! them (names, sizes and users; never content) and remove them.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use berth_proto::v1 as proto;

use crate::cli::SecretCommand;
use crate::client::{new_request_id, Client};
use crate::output::{self, OutputFormat};

/// The largest secret, as the cluster accepts it; checked here first so a
/// huge file is not read, let alone sent.
const MAX_SECRET_BYTES: u64 = berth_core::secret::MAX_SECRET_BYTES as u64;

pub async fn run(client: &mut Client, command: SecretCommand) -> Result<()> {
    match command {
        SecretCommand::Create { name, file } => {
            let data = read_secret(&file)?;
            let secret = create(client, &name, data).await?;
            output::emit(&secret.id)?;
        }
        SecretCommand::Ls { output } => {
            let mut secrets = list(client).await?;
            secrets.sort_by(|a, b| a.name.cmp(&b.name));
            match output {
                OutputFormat::Json => output::emit_json(&output::secrets_json(&secrets))?,
                OutputFormat::Table => output::emit(output::render(&output::secrets_table(&secrets)))?,
            }
        }
        SecretCommand::Rm { names } => {
            let total = names.len();
            let mut failed = 0;
            for name in &names {
                let request = proto::RemoveSecretRequest { request_id: new_request_id(), name: name.clone() };
                let result = client
                    .call(|mut c| {
                        let request = request.clone();
                        async move { c.remove_secret(request).await }
                    })
                    .await;
                match result {
                    Ok(_) => output::emit(name)?,
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {name}: {e:#}");
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} of {total} secrets were not removed");
        }
    }
    Ok(())
}

/// A file's content, or standard input's for `-`, refused past the limit.
pub fn read_secret(file: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().lock().take(MAX_SECRET_BYTES + 1).read_to_end(&mut data).context("reading standard input")?;
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        opened
            .take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    if data.len() as u64 > MAX_SECRET_BYTES {
        bail!("{} holds more than {MAX_SECRET_BYTES} bytes (500 KiB), the most a secret may hold", file.display());
    }
    Ok(data)
}

pub async fn create(client: &mut Client, name: &str, data: Vec<u8>) -> Result<proto::SecretInfo> {
    let request = proto::CreateSecretRequest { request_id: new_request_id(), name: name.to_string(), data };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.create_secret(request).await }
        })
        .await?;
    reply.secret.context("the manager's reply carried no secret (a manager bug; please report it)")
}

pub async fn list(client: &mut Client) -> Result<Vec<proto::SecretInfo>> {
    let reply = client
        .call(|mut c| async move {
            c.list_secrets(proto::ListSecretsRequest { consistency: crate::client::read_consistency() }).await
        })
        .await?;
    Ok(reply.secrets)
}
