//! What can go wrong when starting the proxy or handing it a route table.
//! Failures of single requests never surface here: they become HTTP error
//! responses (404, 502, 503) or closed TCP connections, and a log line.

use std::io;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen for HTTP on {addr}: {source}; pick a free address or stop what holds it")]
    HttpListen { addr: SocketAddr, source: io::Error },

    #[error(
        "cannot listen on {addr} for a TCP route: {source}; the rest of the route table is in force and the \
         address is tried again on the next set_routes"
    )]
    TcpListen { addr: SocketAddr, source: io::Error },

    #[error("invalid HTTP route host {host:?}: {reason}")]
    InvalidHost { host: String, reason: &'static str },

    #[error("HTTP route hosts {first:?} and {second:?} are the same host; keep one of them")]
    DuplicateHost { first: String, second: String },

    #[error("invalid TCP route port 0: a route needs the fixed port to listen on (1-65535)")]
    InvalidPort,

    #[error("two TCP routes listen on {addr}")]
    DuplicateTcpAddress { addr: SocketAddr },

    #[error("the proxy has shut down; start a new one")]
    Stopped,
}
