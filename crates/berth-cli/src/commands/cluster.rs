//! `berth cluster status` and `berth join-token`: reads about the cluster
//! itself rather than what runs on it.

use anyhow::Result;
use berth_proto::v1 as proto;

use crate::cli::{ClusterCommand, JoinTokenArgs, TokenRoleArg};
use crate::client::Client;
use crate::output::{self, OutputFormat};

pub async fn run(client: &mut Client, command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status { output } => status(client, output).await,
    }
}

async fn status(client: &mut Client, format: OutputFormat) -> Result<()> {
    let status = client.call(|mut c| async move { c.cluster_status(proto::ClusterStatusRequest {}).await }).await?;
    match format {
        OutputFormat::Json => output::emit_json(&output::cluster_status_json(&status))?,
        OutputFormat::Table => {
            output::emit(output::render(&output::cluster_summary(&status)))?;
            output::emit("")?;
            output::emit(output::render(&output::members_table(&status)))?;
        }
    }
    Ok(())
}

pub async fn join_token(client: &mut Client, args: &JoinTokenArgs) -> Result<()> {
    let role = match args.role {
        TokenRoleArg::Manager => proto::TokenRole::Manager,
        TokenRoleArg::Worker => proto::TokenRole::Worker,
    };
    let reply = client
        .call(|mut c| async move { c.get_join_token(proto::GetJoinTokenRequest { role: role as i32 }).await })
        .await?;
    if args.quiet {
        output::emit(&reply.token)?;
        return Ok(());
    }
    let peer = client.answering_address().unwrap_or(berth_manager::config::DEFAULT_LISTEN);
    let text = match args.role {
        TokenRoleArg::Manager => format!(
            "To add a manager to this cluster, run on the new manager's host:\n\n    \
             berth manager join --peer {peer} --token {}\n\n\
             (use an address of this manager that the new host can reach)",
            reply.token
        ),
        TokenRoleArg::Worker => format!(
            "To add a worker to this cluster, give its agent this token and a manager \
             address such as {peer}:\n\n    {}",
            reply.token
        ),
    };
    output::emit(text)?;
    Ok(())
}
