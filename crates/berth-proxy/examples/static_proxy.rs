//! berth's proxy over a fixed route table from the command line, for
//! benchmarks and trying it by hand: every `--host` routes to all
//! `--backend`s, and each `--tcp-listen` port proxies TCP to them.
//!
//! ```text
//! cargo run --release -p berth-proxy --example static_proxy -- \
//!     --http-listen 127.0.0.1:8080 --host web.test \
//!     --backend 127.0.0.1:9001 --backend 127.0.0.1:9002 [--balance least-connections] [--tcp-listen 7000]
//! ```

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use berth_proxy::{Backend, Balance, ProxyConfig, Route, RouteTable};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "berth's proxy with a fixed route table")]
struct Args {
    /// Where to serve HTTP.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// A host routed to the backends (repeatable; `*.domain` for a wildcard).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// A backend address (repeatable).
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
    #[arg(long, value_enum, default_value_t = BalanceArg::RoundRobin)]
    balance: BalanceArg,
    /// A port proxied as plain TCP to the backends (repeatable).
    #[arg(long = "tcp-listen")]
    tcp_ports: Vec<u16>,
    /// The address TCP ports listen on.
    #[arg(long, default_value = "127.0.0.1")]
    tcp_listen_ip: IpAddr,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BalanceArg {
    RoundRobin,
    LeastConnections,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.http_listen.is_some() && args.hosts.is_empty() {
        anyhow::bail!("--http-listen needs at least one --host to route");
    }
    if args.http_listen.is_none() && args.tcp_ports.is_empty() {
        anyhow::bail!("nothing to serve: give --http-listen with --host, or --tcp-listen");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build().context("starting the tokio runtime")?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let balance = match args.balance {
        BalanceArg::RoundRobin => Balance::RoundRobin,
        BalanceArg::LeastConnections => Balance::LeastConnections,
    };
    let backends: Vec<Backend> =
        args.backends.iter().enumerate().map(|(i, &addr)| Backend { id: format!("backend-{i}"), addr }).collect();
    let route = Route { backends, balance };
    let routes = RouteTable {
        http: args.hosts.iter().map(|host| (host.clone(), route.clone())).collect(),
        tcp: args.tcp_ports.iter().map(|&port| (port, route.clone())).collect(),
        ..RouteTable::default()
    };

    let shutdown = CancellationToken::new();
    let config = ProxyConfig { http_listen: args.http_listen, tcp_listen_ip: args.tcp_listen_ip };
    let proxy = berth_proxy::start(config, shutdown.clone()).await.context("starting the proxy")?;
    proxy.set_routes(routes).await.context("applying the route table")?;
    if let Some(addr) = proxy.http_addr() {
        println!("static_proxy: HTTP on {addr} for {}", args.hosts.join(", "));
    }
    for port in &args.tcp_ports {
        println!("static_proxy: TCP on {}:{port}", args.tcp_listen_ip);
    }
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    shutdown.cancel();
    Ok(())
}
