//! Starting the proxy and changing its routes. One task, the route keeper,
//! owns the TCP listeners and applies each new route table in turn: it
//! swaps the table requests read (an `ArcSwap`, so requests never wait on
//! it), retires the backends that left, then opens and closes TCP listeners
//! to match. Requests and connections in progress keep what they started
//! with, so a swap neither reloads nor drops anything.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::ProxyError;
use crate::live::LiveTable;
use crate::routes::RouteTable;
use crate::{http, tcp};

/// Route tables waiting for the route keeper; a caller past this waits.
pub const COMMAND_QUEUE_LEN: usize = 16;

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where to serve the HTTP routes; `None` for a proxy of TCP routes only.
    /// Port 0 picks a free port; `ProxyHandle::http_addr` tells which.
    pub http_listen: Option<SocketAddr>,
    /// The address each TCP route's port is opened on.
    pub tcp_listen_ip: IpAddr,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig { http_listen: None, tcp_listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
    }
}

/// Reaches a running proxy. Cheap to clone; the proxy runs until the
/// `shutdown` token given to `start` is cancelled (dropping every handle
/// only freezes its route table).
#[derive(Clone, Debug)]
pub struct ProxyHandle {
    commands: mpsc::Sender<Command>,
    http_addr: Option<SocketAddr>,
}

#[derive(Debug)]
enum Command {
    SetRoutes { routes: RouteTable, reply: oneshot::Sender<Result<(), ProxyError>> },
}

/// Starts a proxy with an empty route table: every HTTP host gets 404 and
/// no TCP port is open until `set_routes`. Must run inside a tokio runtime.
pub async fn start(config: ProxyConfig, shutdown: CancellationToken) -> Result<ProxyHandle, ProxyError> {
    let table = Arc::new(ArcSwap::from_pointee(LiveTable::default()));
    let http_addr = match config.http_listen {
        Some(addr) => {
            let listener = tcp::bind_unshared(addr).map_err(|source| ProxyError::HttpListen { addr, source })?;
            let bound = listener.local_addr().map_err(|source| ProxyError::HttpListen { addr, source })?;
            info!(addr = %bound, "serving HTTP routes");
            tokio::spawn(http::serve(listener, Arc::clone(&table), shutdown.clone()));
            Some(bound)
        }
        None => None,
    };
    let (commands, inbox) = mpsc::channel(COMMAND_QUEUE_LEN);
    let keeper = RouteKeeper { table, tcp_listen_ip: config.tcp_listen_ip, listeners: HashMap::new(), shutdown };
    tokio::spawn(keeper.run(inbox));
    Ok(ProxyHandle { commands, http_addr })
}

impl ProxyHandle {
    /// Replaces the route table. New requests and connections use `routes`
    /// as soon as this returns (and mostly before); those in progress finish
    /// where they are. Backends that left get no new work and their idle
    /// connections are closed. An invalid table changes nothing; a TCP port
    /// that cannot be opened is reported after the rest of the table took
    /// effect, and is tried again on the next call.
    pub async fn set_routes(&self, routes: RouteTable) -> Result<(), ProxyError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::SetRoutes { routes, reply }).await.map_err(|_| ProxyError::Stopped)?;
        answer.await.map_err(|_| ProxyError::Stopped)?
    }

    /// The address HTTP is served on, with the port picked when it was 0.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
}

struct RouteKeeper {
    table: Arc<ArcSwap<LiveTable>>,
    tcp_listen_ip: IpAddr,
    listeners: HashMap<SocketAddr, Listening>,
    shutdown: CancellationToken,
}

struct Listening {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RouteKeeper {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        loop {
            let command = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                command = inbox.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
            };
            match command {
                Command::SetRoutes { routes, reply } => {
                    let applied = self.apply(&routes).await;
                    // The caller may have stopped waiting; the table stands either way.
                    let _ = reply.send(applied);
                }
            }
        }
    }

    async fn apply(&mut self, routes: &RouteTable) -> Result<(), ProxyError> {
        let compiled = LiveTable::compile(routes, &self.table.load(), self.tcp_listen_ip)?;
        let table = Arc::new(compiled.table);
        self.table.store(Arc::clone(&table));
        for backend in compiled.retired {
            backend.retire();
        }

        let closed: Vec<SocketAddr> =
            self.listeners.keys().copied().filter(|&addr| table.tcp_route(addr).is_none()).collect();
        for addr in closed {
            if let Some(listening) = self.listeners.remove(&addr) {
                listening.stop.cancel();
                // Once the task is gone the socket is closed: a caller that
                // sees set_routes return finds the port refusing connections.
                let _ = listening.task.await;
                info!(%addr, "TCP route closed");
            }
        }

        let mut first_failure = None;
        let mut opened: Vec<SocketAddr> = table.tcp_addrs().filter(|addr| !self.listeners.contains_key(addr)).collect();
        opened.sort_unstable();
        for addr in opened {
            match tcp::bind(addr) {
                Ok(listener) => {
                    let stop = self.shutdown.child_token();
                    let task = tokio::spawn(tcp::serve_port(
                        addr,
                        listener,
                        Arc::clone(&self.table),
                        stop.clone(),
                        self.shutdown.clone(),
                    ));
                    self.listeners.insert(addr, Listening { stop, task });
                    info!(%addr, "TCP route listening");
                }
                Err(source) => {
                    warn!(%addr, error = %source, "cannot listen for a TCP route; will retry on the next route table");
                    first_failure.get_or_insert(ProxyError::TcpListen { addr, source });
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}
