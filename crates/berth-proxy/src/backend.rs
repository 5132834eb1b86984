//! One backend as the proxy sees it: its requests/connections in flight (for
//! least-connections) and its pool of idle keep-alive HTTP connections.
//! A backend that leaves the route table is retired: its idle connections
//! are closed at once and none is pooled again, while requests already on it
//! finish on the connections they hold.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::UpstreamBody;
use crate::routes::Backend;

/// How long a connect to a backend may take before the next backend is
/// tried. Backends are containers on the node's own networks: one that has
/// not answered a SYN in this time is as good as down.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Idle keep-alive connections kept per backend; past this the oldest closes.
pub const MAX_IDLE_CONNS_PER_BACKEND: usize = 256;

/// An idle connection older than this is closed instead of reused, so the
/// proxy never holds sockets a backend has long forgotten.
pub const IDLE_CONN_TIMEOUT_MS: u64 = 30_000;

pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

pub(crate) struct BackendState {
    pub(crate) backend: Backend,
    in_flight: AtomicUsize,
    idle: Mutex<IdlePool>,
}

struct IdlePool {
    conns: VecDeque<IdleConn>,
    retired: bool,
}

struct IdleConn {
    sender: Sender,
    since: Instant,
}

/// Why a new connection to a backend could not be made; nothing of the
/// request has been sent, so another backend may always be tried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect: {0}")]
    Tcp(#[from] io::Error),
    #[error("connect: no answer within {CONNECT_TIMEOUT_MS} ms")]
    Timeout,
    #[error("HTTP handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

impl BackendState {
    pub(crate) fn new(backend: Backend) -> Self {
        BackendState {
            backend,
            in_flight: AtomicUsize::new(0),
            idle: Mutex::new(IdlePool { conns: VecDeque::new(), retired: false }),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request or connection on this backend until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// The most recently used idle connection that is still open, if any.
    pub(crate) fn take_idle(&self) -> Option<Sender> {
        let now = Instant::now();
        let max_age = Duration::from_millis(IDLE_CONN_TIMEOUT_MS);
        let mut pool = self.idle.lock();
        while let Some(conn) = pool.conns.pop_back() {
            // `is_ready` is false once hyper has seen the backend close the
            // connection; a close it has not seen yet is caught by the retry
            // in `http`.
            if conn.sender.is_ready() && now.duration_since(conn.since) < max_age {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Offers a connection whose response is complete for reuse.
    pub(crate) fn put_idle(&self, sender: Sender) {
        if !sender.is_ready() {
            return;
        }
        let mut pool = self.idle.lock();
        if pool.retired {
            return;
        }
        if pool.conns.len() >= MAX_IDLE_CONNS_PER_BACKEND {
            pool.conns.pop_front();
        }
        pool.conns.push_back(IdleConn { sender, since: Instant::now() });
    }

    /// Called when the backend leaves the route table.
    pub(crate) fn retire(&self) {
        let idle = {
            let mut pool = self.idle.lock();
            pool.retired = true;
            std::mem::take(&mut pool.conns)
        };
        debug!(backend = %self.backend.addr, task = %self.backend.id, closed = idle.len(), "backend retired");
        // Dropped outside the lock: dropping a sender wakes its connection task.
        drop(idle);
    }

    /// Opens a new HTTP/1.1 connection; its driver runs as its own task
    /// until the last sender drops or the backend closes it.
    pub(crate) async fn connect_http(&self) -> Result<Sender, ConnectError> {
        let stream = connect_tcp(self.backend.addr).await?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        let addr = self.backend.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(backend = %addr, %error, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A TCP connection to `addr` with TCP_NODELAY, or why not within
/// `CONNECT_TIMEOUT_MS`.
pub(crate) async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One request or connection in flight on a backend.
pub(crate) struct InFlight(Arc<BackendState>);

impl InFlight {
    pub(crate) fn backend(&self) -> &Arc<BackendState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
