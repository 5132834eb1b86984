//! The HTTP reverse proxy: accepts HTTP/1.1 keep-alive connections, routes
//! each request by its host to a backend of the route, and streams the
//! request and response through a pooled backend connection.
//!
//! A request that fails before anything of it reached a backend (connect
//! refused, a pooled connection found closed) is retried on another backend;
//! one that fails after being sent is retried only when it can be replayed —
//! an idempotent method with an empty body — which covers the keep-alive race
//! of a backend closing an idle connection just as a request goes out on it.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, field, warn, Instrument, Span};

use crate::balance::Failed;
use crate::body::{Lease, ProxyBody, UpstreamBody};
use crate::live::{LiveRoute, LiveTable};
use crate::routes::{request_host, BadHost, MAX_HOST_BYTES};

/// Tries per request, counting every backend connection a request is sent
/// on or a connect that fails.
pub const MAX_ATTEMPTS_PER_REQUEST: usize = 4;

/// How long a client may take to send a request's headers, so idle or
/// slow-drip connections do not pin a connection slot for ever.
pub const HEADER_READ_TIMEOUT_MS: u64 = 30_000;

/// Client connections served at once; past this the listener stops
/// accepting and new clients wait in the kernel's backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 16_384;

/// Pause after a failed accept (out of file descriptors, usually) before
/// the next one, so the loop does not spin.
pub(crate) const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static HTTP: HeaderValue = HeaderValue::from_static("http");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// besides `Connection` itself and those it names.
static HOP_BY_HOP: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// What every request of one client connection shares.
struct ClientConn {
    table: Arc<ArcSwap<LiveTable>>,
    /// The client's address as an `X-Forwarded-For` value, made once per
    /// connection rather than per request.
    forwarded_for: HeaderValue,
}

/// Accepts client connections on `listener` until `shutdown`; each
/// connection is then closed once its request in progress is answered.
pub(crate) async fn serve(listener: TcpListener, table: Arc<ArcSwap<LiveTable>>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let mut server = http1::Builder::new();
    server.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS)).keep_alive(true);
    loop {
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accepting an HTTP client failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let client = Arc::new(ClientConn { table: Arc::clone(&table), forwarded_for: forwarded_for(peer) });
        let connection = server
            .serve_connection(TokioIo::new(stream), service_fn(move |request| handle(Arc::clone(&client), request)));
        // A token of its own: waiting on a token locks its waiter list on
        // every poll, and one token shared by every connection is a lock
        // every request of every connection would contend on.
        let shutdown = shutdown.child_token();
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            // Biased: the connection is polled first on every wake-up, and
            // select! skips drawing a random branch order.
            let result = tokio::select! {
                biased;
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
}

fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    // An IP address prints as ASCII digits, dots, colons and hex letters.
    HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

async fn handle(client: Arc<ClientConn>, request: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let route = match find_route(&client.table, &request) {
        Ok(route) => route,
        Err((status, text)) => return Ok(local(status, text)),
    };
    let span = debug_span!("http", route = %route.name, method = %request.method(), backend = field::Empty);
    Ok(forward(&client, &route, request, &span).instrument(span.clone()).await)
}

/// Why the proxy answers a request itself: the status and a line of text.
type Refusal = (StatusCode, Bytes);

/// The route for a request, or why it has none.
fn find_route(table: &ArcSwap<LiveTable>, request: &Request<Incoming>) -> Result<Arc<LiveRoute>, Refusal> {
    if request.method() == Method::CONNECT {
        return Err((StatusCode::METHOD_NOT_ALLOWED, Bytes::from_static(b"berth-proxy: CONNECT is not proxied\n")));
    }
    // An absolute-form target names the host in the request line, which
    // then wins over the Host header (RFC 9112 §3.2.2).
    let raw = match (request.uri().authority(), request.headers().get(header::HOST)) {
        (Some(authority), _) => authority.host(),
        (None, Some(host)) => match host.to_str() {
            Ok(host) => host,
            Err(_) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    Bytes::from_static(b"berth-proxy: the Host header is not ASCII\n"),
                ))
            }
        },
        (None, None) => {
            return Err((StatusCode::BAD_REQUEST, Bytes::from_static(b"berth-proxy: the request has no Host header\n")))
        }
    };
    let mut buf = [0; MAX_HOST_BYTES];
    let host = match request_host(raw, &mut buf) {
        Ok(host) => host,
        Err(BadHost::Empty) => {
            return Err((StatusCode::BAD_REQUEST, Bytes::from_static(b"berth-proxy: the Host header is empty\n")))
        }
        Err(BadHost::TooLong) => {
            return Err((
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"berth-proxy: the Host header is longer than 255 bytes\n"),
            ))
        }
    };
    match table.load().http_route(host) {
        Some(route) if route.backends.is_empty() => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(format!("berth-proxy: no backend is up for host {host}\n")),
        )),
        Some(route) => Ok(Arc::clone(route)),
        None => Err((StatusCode::NOT_FOUND, Bytes::from(format!("berth-proxy: no route for host {host}\n")))),
    }
}

fn local(status: StatusCode, text: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn forward(
    client: &ClientConn,
    route: &LiveRoute,
    request: Request<Incoming>,
    span: &Span,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let replayable = parts.method.is_idempotent() && body.is_end_stream();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    add_forwarded(&mut headers, &client.forwarded_for);
    if let Some(authority) = parts.uri.authority() {
        // An absolute-form target may come without a Host header; the
        // backend gets one.
        if !headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, host);
            }
        }
    }
    let mut next = Some(upstream_request(parts.method, origin_form(parts.uri), headers, UpstreamBody::Client(body)));
    let mut failed = Failed::<MAX_ATTEMPTS_PER_REQUEST>::default();
    // After a pooled connection turned out dead, its siblings may be too.
    let mut fresh_only = false;
    let mut last_error = String::new();
    for _ in 0..MAX_ATTEMPTS_PER_REQUEST {
        let Some(request) = next.take() else { break };
        let Some((index, backend)) = route.choose(|i| failed.contains(i)) else { break };
        span.record("backend", field::display(backend.addr()));
        let in_flight = backend.start();
        let pooled = if fresh_only { None } else { backend.take_idle().await };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match backend.connect_http().await {
                Ok(conn) => conn,
                Err(error) => {
                    warn!(route = %route.name, backend = %backend.addr(), task = %backend.backend.id, %error,
                        "backend unreachable; trying another");
                    last_error = format!("{}: {error}", backend.addr());
                    failed.push(index);
                    next = Some(request);
                    continue;
                }
            },
        };
        let spare = replayable.then(|| replay_copy(&request));
        match conn.send(request).await {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                return response.map(|body| ProxyBody::upstream(body, Lease { conn, in_flight }));
            }
            Err(mut error) => {
                let unsent = error.take_message();
                let error = error.into_error();
                last_error = format!("{}: {error}", backend.addr());
                next = unsent.or(spare);
                if next.is_none() {
                    warn!(route = %route.name, backend = %backend.addr(), task = %backend.backend.id, %error,
                        "backend failed a request that cannot be replayed");
                    break;
                }
                if reused {
                    debug!(route = %route.name, backend = %backend.addr(), %error, "pooled connection was dead; retrying");
                    fresh_only = true;
                } else {
                    warn!(route = %route.name, backend = %backend.addr(), task = %backend.backend.id, %error,
                        "backend failed before answering; trying another");
                    failed.push(index);
                }
            }
        }
    }
    let text = format!("berth-proxy: no backend of {} answered ({last_error})\n", route.name);
    local(StatusCode::BAD_GATEWAY, Bytes::from(text))
}

fn upstream_request(method: Method, uri: Uri, headers: HeaderMap, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// The same request with an empty body, kept aside in case the original is
/// lost on a connection that dies before answering.
fn replay_copy(request: &Request<UpstreamBody>) -> Request<UpstreamBody> {
    upstream_request(request.method().clone(), request.uri().clone(), request.headers().clone(), UpstreamBody::Empty)
}

/// `http://web.test/a?b` → `/a?b`: backends get the origin form.
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    match uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over their few names costs
    // less than a hashed lookup per hop-by-hop header.
    if !headers.keys().any(|name| name == header::CONNECTION || HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|token| !token.eq_ignore_ascii_case("close") && !token.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue) {
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(client.clone());
        }
        Entry::Occupied(mut entry) => {
            let mut joined = Vec::with_capacity(64);
            for value in entry.iter() {
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client.as_bytes());
            entry.insert(HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone()));
        }
    }
    headers.insert(&X_FORWARDED_PROTO, HTTP.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, X-Trace"));
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-length"]);
    }

    #[test]
    fn forwarded_for_appends_to_an_existing_chain() {
        let client = forwarded_for(([10, 1, 2, 3], 5000).into());
        let mut headers = HeaderMap::new();
        add_forwarded(&mut headers, &client);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        let mut headers = HeaderMap::new();
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(&mut headers, &client);
        assert_eq!(headers.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(headers[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn forwarded_for_shows_v4_mapped_clients_as_v4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(forwarded_for(mapped), "127.0.0.1");
        assert_eq!(forwarded_for("[::1]:80".parse().unwrap_or_else(|e| panic!("{e}"))), "::1");
    }

    #[test]
    fn absolute_targets_become_origin_form() {
        assert_eq!(origin_form(Uri::from_static("http://web.test/a?b=1")), "/a?b=1");
        assert_eq!(origin_form(Uri::from_static("http://web.test")), "/");
        assert_eq!(origin_form(Uri::from_static("/x")), "/x");
    }
}
