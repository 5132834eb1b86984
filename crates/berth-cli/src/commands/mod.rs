//! One module per command group. Rendering goes through `output`; the
//! calls to the cluster sit in functions that return data, so the logic
//! (retries, read-modify-write) is tested against a fake cluster without
//! capturing stdout.

pub mod agent;
pub mod cluster;
pub mod follow;
pub mod manager;
pub mod node;
pub mod process;
pub mod registry;
pub mod secret;
pub mod service;
pub mod stack;
pub mod trigger;
pub mod up;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::client::Client;

pub async fn run(cli: Cli) -> Result<()> {
    crate::client::set_local_reads(cli.local);
    match cli.command {
        Command::Manager(command) => manager::run(command, &cli.manager).await,
        Command::JoinToken(args) => {
            let mut client = Client::new(&cli.manager)?;
            cluster::join_token(&mut client, &args).await
        }
        Command::Cluster(command) => {
            let mut client = Client::new(&cli.manager)?;
            cluster::run(&mut client, command).await
        }
        Command::Service(command) => {
            let mut client = Client::new(&cli.manager)?;
            service::run(&mut client, command).await
        }
        Command::Node(command) => {
            let mut client = Client::new(&cli.manager)?;
            node::run(&mut client, command).await
        }
        Command::Stack(command) => {
            let mut client = Client::new(&cli.manager)?;
            stack::run(&mut client, command).await
        }
        Command::Registry(command) => {
            let mut client = Client::new(&cli.manager)?;
            registry::run(&mut client, command).await
        }
        Command::Secret(command) => {
            let mut client = Client::new(&cli.manager)?;
            secret::run(&mut client, command).await
        }
        Command::Trigger(command) => {
            let mut client = Client::new(&cli.manager)?;
            trigger::run(&mut client, command).await
        }
        Command::Agent(args) => agent::run(args, &cli.manager).await,
        Command::Up(args) => up::run(args).await,
    }
}
