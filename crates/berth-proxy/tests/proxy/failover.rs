//! Requests that meet a dead backend or a dead connection: retried where
//! that is safe, so the client sees an answer; refused with 502 where it
//! is not, or when no backend is left.

use berth_proxy::Backend;
use berth_proxy::Balance::RoundRobin;
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_is_retried_on_another() {
    let a = HttpBackend::start("a").await;
    let gone = Backend { id: "stopped-task".into(), addr: refused_addr().await };
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![gone, a.backend()], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..6 {
        assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "a".to_owned()));
    }
    // Nothing of a request reaches a backend that refuses the connection, so
    // even a POST with a body is retried.
    for _ in 0..2 {
        let answer = client.send(Method::POST, "web.test", "/echo", Bytes::from_static(b"payload")).await;
        assert_eq!(answer, (StatusCode::OK, "payload".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_pooled_connection_is_not_a_client_visible_error() {
    let flaky = ClosesKeepAlive::start("k").await;
    let proxy = TestProxy::start().await;
    let backend = Backend { id: "k".into(), addr: flaky.addr };
    proxy.set_routes(http_table(vec![("web.test", route(vec![backend], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "k".to_owned()));
    // The proxy pooled that connection; the backend drops it under the next
    // request, which the proxy replays on a new connection.
    assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "k".to_owned()));
    assert_eq!(flaky.seen.accepted(), 2);
    assert_eq!(flaky.seen.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_request_lost_on_a_dead_connection_is_not_replayed() {
    let flaky = ClosesKeepAlive::start("k").await;
    let proxy = TestProxy::start().await;
    let backend = Backend { id: "k".into(), addr: flaky.addr };
    proxy.set_routes(http_table(vec![("web.test", route(vec![backend], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "k".to_owned()));
    // The backend may have acted on a POST it read before dying: sending it
    // again could do it twice, so the client gets 502 instead.
    let (status, body) = client.send(Method::POST, "web.test", "/", Bytes::from_static(b"once")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(flaky.seen.accepted(), 1, "no second connection for a replay");
    assert_eq!(flaky.seen.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_whose_backends_all_refuse_gets_502() {
    let gone = [refused_addr().await, refused_addr().await];
    let proxy = TestProxy::start().await;
    let backends = gone.iter().enumerate().map(|(i, &addr)| Backend { id: format!("t{i}"), addr }).collect();
    proxy.set_routes(http_table(vec![("web.test", route(backends, RoundRobin))])).await;
    let (status, body) = get_once(proxy.addr, "web.test", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("web.test"), "{body:?}");
}
