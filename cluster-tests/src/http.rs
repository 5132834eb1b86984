//! Plain HTTP/1.1 exchanges over a fresh connection each, as curl would
//! make them: what the tests of the load balancer and the trigger URLs send.
//! Hand-written on purpose: the tests must see exactly the status a client
//! gets, with no client library retrying or following anything.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bounds every exchange.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(5);

/// Sends `head` and `body`, reads the answer to its end; the status code
/// and the body, trimmed.
async fn exchange(addr: &str, head: String, body: &[u8]) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.write_all(head.as_bytes()).await?;
        // A refused body may close the connection before all of it is read.
        let _ = stream.write_all(body).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split_whitespace().nth(1).context("no status line")?;
        let status = status.parse::<u16>().with_context(|| format!("bad status line in {answer:?}"))?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(HTTP_DEADLINE, exchange).await.context("the exchange took too long")?
}

/// `GET /` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str) -> Result<(u16, String)> {
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange(&addr.to_string(), head, b"").await
}

/// `POST path` with `body`; the status code.
pub async fn post(addr: &str, path: &str, body: &[u8]) -> Result<u16> {
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    Ok(exchange(addr, head, body).await?.0)
}
