//! berth's built-in load balancer, run by the agent on every node: an HTTP
//! reverse proxy that routes by `Host` (exact names and `*.domain`
//! wildcards) and a plain TCP proxy that routes by listening port, both over
//! a route table replaced at runtime without a reload or a dropped request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_proxy::ProxyError> {
//! use berth_proxy::{Backend, Balance, ProxyConfig, Route, RouteTable};
//!
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let config = ProxyConfig { http_listen: Some("0.0.0.0:80".parse().unwrap()), ..ProxyConfig::default() };
//! let proxy = berth_proxy::start(config, shutdown.clone()).await?;
//! let web = Route {
//!     backends: vec![Backend { id: "task-1".into(), addr: "10.0.0.5:8080".parse().unwrap() }],
//!     balance: Balance::RoundRobin,
//! };
//! let mut routes = RouteTable::default();
//! routes.http.insert("web.example.test".into(), web);
//! proxy.set_routes(routes).await?;
//! # Ok(()) }
//! ```
//!
//! Map: `routes` is the table's data, `live` its compiled form (read by every
//! request through an `ArcSwap`), `balance` the choice of a backend,
//! `backend` each backend's counters and idle connections, `http` and `tcp`
//! the two proxies, `proxy` the task that applies new tables.
//! *Invariant:* nothing here parses HTTP by hand (hyper does), and no input
//! from a client or backend can panic the proxy.

mod backend;
mod balance;
mod body;
mod error;
mod http;
mod live;
mod proxy;
mod routes;
mod tcp;

pub use backend::{CONNECT_TIMEOUT_MS, IDLE_CONN_TIMEOUT_MS, MAX_IDLE_CONNS_PER_BACKEND};
pub use error::ProxyError;
pub use http::{HEADER_READ_TIMEOUT_MS, MAX_ATTEMPTS_PER_REQUEST, MAX_HTTP_CONNECTIONS};
pub use proxy::{start, ProxyConfig, ProxyHandle, COMMAND_QUEUE_LEN};
pub use routes::{Backend, Balance, Route, RouteTable, MAX_HOST_BYTES};
pub use tcp::{LISTEN_BACKLOG, MAX_CONNECT_ATTEMPTS_PER_CONNECTION, MAX_TCP_CONNECTIONS_PER_PORT};
