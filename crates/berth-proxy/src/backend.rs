//! One backend as the proxy sees it: its requests/connections in flight (for
//! least-connections) and its pool of idle keep-alive HTTP connections.
//! A backend that leaves the route table is retired: its idle connections
//! are closed at once and none is pooled again, while requests already on it
//! finish on the connections they hold.
//!
//! A backend connection has no task of its own: the request using it drives
//! it (and then its response body does), so a request is served by one task
//! from the client's bytes to the backend's and back, without waking another.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, TrySendError};
use hyper::{Request, Response};
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

type Sender = http1::SendRequest<UpstreamBody>;
type Driver = http1::Connection<TokioIo<TcpStream>, UpstreamBody>;

/// An HTTP/1.1 connection to a backend: the handle requests go in by, and
/// the connection state machine that whoever holds it must poll.
pub(crate) struct BackendConn {
    sender: Sender,
    /// `None` once the connection has closed. Boxed once per connection so
    /// that handing the connection to the pool or a response body moves a
    /// pointer, not the state machine's ~700 bytes.
    driver: Option<Pin<Box<Driver>>>,
}

impl BackendConn {
    /// Lets the connection read and write what it can without waiting.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver {
            // Without hyper's shutdown: the socket closes when the driver
            // drops (see `connect_http` for how).
            if let Poll::Ready(result) = driver.as_mut().poll_without_shutdown(cx) {
                if let Err(error) = result {
                    debug!(%error, "backend connection ended with an error");
                }
                // Dropping the driver hands any request still queued on it
                // back to its sender as unsent.
                self.driver = None;
            }
        }
    }

    /// Whether a request can go out on this connection now.
    async fn usable(&mut self) -> bool {
        // One poll catches a close the backend sent while the connection sat idle.
        poll_fn(|cx| {
            self.drive(cx);
            Poll::Ready(())
        })
        .await;
        self.driver.is_some() && self.sender.is_ready()
    }

    /// Sends a request and waits for the response head, driving the
    /// connection meanwhile. On failure the request comes back if none of it
    /// was written.
    pub(crate) async fn send(
        &mut self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        let mut response = pin!(self.sender.try_send_request(request));
        poll_fn(|cx| {
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

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
    conn: BackendConn,
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
    pub(crate) async fn take_idle(&self) -> Option<BackendConn> {
        let max_age = Duration::from_millis(IDLE_CONN_TIMEOUT_MS);
        loop {
            let IdleConn { mut conn, since } = self.idle.lock().conns.pop_back()?;
            // A close the backend sent after `usable` is caught by the retry in `http`.
            if since.elapsed() < max_age && conn.usable().await {
                return Some(conn);
            }
        }
    }

    /// Offers a connection whose response is complete for reuse.
    pub(crate) fn put_idle(&self, conn: BackendConn) {
        if conn.driver.is_none() || !conn.sender.is_ready() {
            return;
        }
        let mut pool = self.idle.lock();
        if pool.retired {
            return;
        }
        if pool.conns.len() >= MAX_IDLE_CONNS_PER_BACKEND {
            pool.conns.pop_front();
        }
        pool.conns.push_back(IdleConn { conn, since: Instant::now() });
    }

    /// Called when the backend leaves the route table.
    pub(crate) fn retire(&self) {
        let idle = {
            let mut pool = self.idle.lock();
            pool.retired = true;
            std::mem::take(&mut pool.conns)
        };
        debug!(backend = %self.backend.addr, task = %self.backend.id, closed = idle.len(), "backend retired");
        // Closed outside the lock.
        drop(idle);
    }

    /// Opens a new HTTP/1.1 connection.
    ///
    /// The proxy closes a backend connection only once it is of no more use:
    /// its response is complete and the backend said `Connection: close`,
    /// it sat idle too long, its backend left the table, or the client gave
    /// up. Closing it with a reset rather than a FIN keeps the proxy's side
    /// out of TIME_WAIT, which with a backend that closes after every
    /// response (many do) would otherwise pile up one socket per request on
    /// the node and slow every later connect.
    pub(crate) async fn connect_http(&self) -> Result<BackendConn, ConnectError> {
        let stream = connect_tcp(self.backend.addr).await?;
        stream.set_zero_linger()?;
        let (sender, driver) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        Ok(BackendConn { sender, driver: Some(Box::pin(driver)) })
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
