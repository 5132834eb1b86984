//! The plain TCP proxy: one listener per routed port; each accepted
//! connection goes to a backend of the port's route (another one when the
//! connect fails) and bytes are copied both ways until either side closes.
//! Closing a listener leaves the connections it accepted running.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, warn, Instrument};

use crate::backend::connect_tcp;
use crate::balance::Failed;
use crate::http::ACCEPT_ERROR_BACKOFF_MS;
use crate::live::LiveTable;

/// Backends tried for one TCP connection before it is closed.
pub const MAX_CONNECT_ATTEMPTS_PER_CONNECTION: usize = 3;

/// Connections proxied at once per TCP port; past this the listener stops
/// accepting and new clients wait in the kernel's backlog.
pub const MAX_TCP_CONNECTIONS_PER_PORT: usize = 16_384;

/// The kernel's queue of connections not yet accepted, per listener.
pub const LISTEN_BACKLOG: u32 = 1_024;

/// A listening socket. SO_REUSEADDR, so a port closed and routed again
/// binds at once despite connections still in TIME_WAIT. SO_REUSEPORT, so
/// a route on one address (a service's virtual IP) can listen on a port the
/// proxy also serves on all addresses (80 for HTTP, say): the kernel hands
/// a connection to the listener bound to its exact address first. And
/// IP_FREEBIND, so such an address can be listened on before it is
/// assigned to an interface.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = reusable_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(LISTEN_BACKLOG).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// [`bind`], refused with `AddrInUse` when another socket already listens
/// on `addr`: with SO_REUSEPORT alone, a second proxy of the same user
/// (two agents left on the default HTTP port of one host) would share the
/// port silently, the kernel splitting connections between them. Only for
/// an address this proxy binds before any other (its HTTP listener): the
/// check would also trip over this proxy's own listeners on that port.
pub(crate) fn bind_unshared(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.port() != 0 {
        // Bound without SO_REUSEPORT, the probe conflicts with any
        // listener on the address (TIME_WAIT leftovers do not count).
        reusable_socket(addr)?.bind(&addr.into())?;
    }
    bind(addr)
}

/// A TCP socket for `addr` with SO_REUSEADDR and IP_FREEBIND set.
fn reusable_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    Ok(socket)
}

/// Accepts on `listener` for the route of `addr` until `stop_listening`;
/// the connections run on until they close or `shutdown`.
pub(crate) async fn serve_port(
    addr: SocketAddr,
    listener: TcpListener,
    table: Arc<ArcSwap<LiveTable>>,
    stop_listening: CancellationToken,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS_PER_PORT));
    loop {
        let slot = tokio::select! {
            biased;
            _ = stop_listening.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (client, peer) = tokio::select! {
            biased;
            _ = stop_listening.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%addr, %error, "accepting a TCP client failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
        };
        let table = Arc::clone(&table);
        // Its own token, for the reason given in `http::serve`.
        let shutdown = shutdown.child_token();
        tokio::spawn(async move {
            proxy_connection(addr, client, peer, &table, &shutdown).await;
            drop(slot);
        });
    }
}

async fn proxy_connection(
    addr: SocketAddr,
    mut client: TcpStream,
    peer: SocketAddr,
    table: &ArcSwap<LiveTable>,
    shutdown: &CancellationToken,
) {
    let Some(route) = table.load().tcp_route(addr).cloned() else {
        debug!(%addr, %peer, "address left the route table; closing the connection");
        return;
    };
    if let Err(error) = client.set_nodelay(true) {
        debug!(%addr, %peer, %error, "TCP_NODELAY not set");
    }
    let mut failed = Failed::<MAX_CONNECT_ATTEMPTS_PER_CONNECTION>::default();
    for _ in 0..MAX_CONNECT_ATTEMPTS_PER_CONNECTION {
        let Some((index, backend)) = route.choose(|i| failed.contains(i)) else { break };
        let in_flight = backend.start();
        let mut upstream = match connect_tcp(backend.addr()).await {
            Ok(upstream) => upstream,
            Err(error) => {
                warn!(route = %route.name, backend = %backend.addr(), task = %backend.backend.id, %error,
                    "backend unreachable; trying another");
                failed.push(index);
                continue;
            }
        };
        let span = debug_span!("tcp", route = %route.name, backend = %backend.addr(), client = %peer);
        async {
            tokio::select! {
            biased;
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                    Ok((sent, received)) => debug!(sent, received, "connection closed"),
                    Err(error) => debug!(%error, "connection ended with an error"),
                },
                _ = shutdown.cancelled() => debug!("proxy shutting down; connection closed"),
            }
        }
        .instrument(span)
        .await;
        drop(in_flight);
        return;
    }
    warn!(route = %route.name, %peer, "no backend accepted the connection; closing it");
}
