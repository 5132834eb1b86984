//! `berth node ...`: list, inspect, update (availability, tags) and remove
//! worker nodes. Nodes are named by name or id; the manager resolves both.

use anyhow::{Context, Result};
use berth_proto::v1 as proto;

use crate::cli::{NodeCommand, NodeUpdateArgs};
use crate::client::{new_request_id, Client};
use crate::output::{self, OutputFormat};

pub async fn run(client: &mut Client, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Ls { output } => {
            let nodes = list(client).await?;
            match output {
                OutputFormat::Json => output::emit_json(&output::nodes_json(&nodes))?,
                OutputFormat::Table => output::emit(output::render(&output::nodes_table(&nodes)))?,
            }
        }
        NodeCommand::Inspect { node, output } => {
            let node = get(client, &node).await?;
            match output {
                OutputFormat::Json => output::emit_json(&output::node_json(&node))?,
                OutputFormat::Table => output::emit(output::render(&output::node_details(&node)))?,
            }
        }
        NodeCommand::Update(args) => {
            let node = update(client, &args).await?;
            output::emit(&node.name)?;
        }
        NodeCommand::Rm { node } => {
            remove(client, &node).await?;
            output::emit(&node)?;
        }
    }
    Ok(())
}

/// Sorted by name, so the listing is stable between calls.
pub async fn list(client: &mut Client) -> Result<Vec<proto::Node>> {
    let reply = client
        .call(|mut c| async move {
            c.list_nodes(proto::ListNodesRequest { consistency: crate::client::read_consistency() }).await
        })
        .await?;
    let mut nodes = reply.nodes;
    nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(nodes)
}

pub async fn get(client: &mut Client, node: &str) -> Result<proto::Node> {
    let request = proto::GetNodeRequest { node: node.to_string(), consistency: crate::client::read_consistency() };
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.get_node(request).await }
        })
        .await?;
    node_of(reply)
}

pub async fn update(client: &mut Client, args: &NodeUpdateArgs) -> Result<proto::Node> {
    let request = update_request(args);
    let reply = client
        .call(|mut c| {
            let request = request.clone();
            async move { c.update_node(request).await }
        })
        .await?;
    node_of(reply)
}

/// The request `node update` sends; an availability left out stays as it is.
pub fn update_request(args: &NodeUpdateArgs) -> proto::UpdateNodeRequest {
    proto::UpdateNodeRequest {
        request_id: new_request_id(),
        node: args.node.clone(),
        availability: args.availability.map(|a| a.to_string()).unwrap_or_default(),
        tags_add: args.tag_add.clone(),
        tags_rm: args.tag_rm.clone(),
    }
}

pub async fn remove(client: &mut Client, node: &str) -> Result<()> {
    let request = proto::RemoveNodeRequest { request_id: new_request_id(), node: node.to_string() };
    client
        .call(|mut c| {
            let request = request.clone();
            async move { c.remove_node(request).await }
        })
        .await?;
    Ok(())
}

fn node_of(reply: proto::NodeReply) -> Result<proto::Node> {
    reply.node.context("the manager's reply carried no node (a manager bug; please report it)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<NodeCommand, clap::Error> {
        let argv = ["berth", "node"].into_iter().chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Node(command) => command,
            other => panic!("{args:?}: {other:?}"),
        })
    }

    fn update_args(args: &[&str]) -> NodeUpdateArgs {
        match parse(args) {
            Ok(NodeCommand::Update(args)) => args,
            other => panic!("not update: {other:?}"),
        }
    }

    #[test]
    fn update_sends_only_what_was_given() {
        let request = update_request(&update_args(&["update", "w1", "--availability", "drain"]));
        assert_eq!(request.node, "w1");
        assert_eq!(request.availability, "drain");
        assert!(request.tags_add.is_empty() && request.tags_rm.is_empty());

        let request = update_request(&update_args(&[
            "update",
            "w1",
            "--tag-add",
            "ssd",
            "--tag-add",
            "zone:a",
            "--tag-rm",
            "hdd",
        ]));
        assert_eq!(request.availability, "", "left as it is");
        assert_eq!(request.tags_add, ["ssd", "zone:a"]);
        assert_eq!(request.tags_rm, ["hdd"]);
        assert!(!request.request_id.is_empty());
    }

    #[test]
    fn update_without_a_change_or_with_a_bad_availability_is_refused_by_clap() {
        let err = parse(&["update", "w1"]).expect_err("nothing to change");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["update", "w1", "--availability", "off"]).expect_err("not a value");
        assert!(err.to_string().contains("active"), "{err}");
    }
}
