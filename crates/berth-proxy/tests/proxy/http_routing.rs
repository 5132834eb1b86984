//! Requests reach the route their host names — port, case and a trailing
//! dot ignored, wildcards below exact names — and the proxy's own answers
//! when there is no route or no backend; headers added and removed on the
//! way; bodies streamed both ways.

use berth_proxy::Balance::RoundRobin;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_ignoring_port_case_and_trailing_dot() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let proxy = TestProxy::start().await;
    proxy
        .set_routes(http_table(vec![
            ("web.test", route(vec![a.backend()], RoundRobin)),
            ("API.test", route(vec![b.backend()], RoundRobin)),
        ]))
        .await;
    let mut client = Client::connect(proxy.addr).await;
    for (host, want) in [("web.test", "a"), ("web.test:8080", "a"), ("WEB.Test.:80", "a"), ("api.test", "b")] {
        assert_eq!(client.get(host, "/").await, (StatusCode::OK, want.to_owned()), "Host: {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_hosts_match_names_below_them_and_exact_names_win() {
    let (a, b, c) = (HttpBackend::start("a").await, HttpBackend::start("b").await, HttpBackend::start("c").await);
    let proxy = TestProxy::start().await;
    proxy
        .set_routes(http_table(vec![
            ("*.apps.test", route(vec![a.backend()], RoundRobin)),
            ("admin.apps.test", route(vec![b.backend()], RoundRobin)),
            ("*.eu.apps.test", route(vec![c.backend()], RoundRobin)),
        ]))
        .await;
    let mut client = Client::connect(proxy.addr).await;
    for (host, want) in [
        ("shop.apps.test", "a"),
        ("Shop.Apps.Test:8080", "a"),
        ("x.y.apps.test", "a"),
        ("admin.apps.test", "b"),
        ("shop.eu.apps.test", "c"),
    ] {
        assert_eq!(client.get(host, "/").await, (StatusCode::OK, want.to_owned()), "Host: {host}");
    }
    let (status, body) = client.get("apps.test", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a wildcard does not match the name it sits under: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_404_naming_it() {
    let a = HttpBackend::start("a").await;
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![a.backend()], RoundRobin))])).await;
    let (status, body) = get_once(proxy.addr, "Other.Test:8080", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("other.test") && body.len() < 100, "{body:?}");
    assert_eq!(a.seen.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_without_backends_gets_503() {
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![], RoundRobin))])).await;
    let (status, body) = get_once(proxy.addr, "web.test", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("web.test"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_dropped() {
    let a = HttpBackend::start("a").await;
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![a.backend()], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    let headers = [("connection", "keep-alive, x-hop"), ("x-hop", "1"), ("x-forwarded-proto", "https")];
    let (status, body) =
        unwrap("GET /headers", client.try_send(Method::GET, "web.test:8080", "/headers", Bytes::new(), &headers).await);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "xff=127.0.0.1 xfp=http host=web.test:8080 x-hop=- connection=-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_before_the_backend_finishes() {
    let a = HttpBackend::start("a").await;
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![a.backend()], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    let response = unwrap(
        "GET /stream",
        within("GET /stream", client.try_response(Method::GET, "web.test", "/stream", Bytes::new(), &[])).await,
    );
    let mut body = response.into_body();
    // The backend sends its second chunk only once released: seeing the
    // first one now shows the proxy does not wait for the whole body.
    let first = within("first chunk", body.frame()).await;
    let first = first.and_then(|frame| frame.ok()).and_then(|frame| frame.into_data().ok());
    assert_eq!(first.as_deref(), Some(&b"first\n"[..]));
    a.release_one();
    let rest = unwrap("rest", within("rest of the body", body.collect()).await).to_bytes();
    assert_eq!(&rest[..], b"second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_bodies_stream_to_the_backend_and_back() {
    let a = HttpBackend::start("a").await;
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![a.backend()], RoundRobin))])).await;
    let payload: String = (0..4 * 1024 * 1024).map(|i: u32| char::from(b'a' + (i % 26) as u8)).collect();
    let mut client = Client::connect(proxy.addr).await;
    let (status, body) = client.send(Method::POST, "web.test", "/echo", Bytes::from(payload.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == payload, "{} bytes came back for {} sent", body.len(), payload.len());
}

/// A second proxy on the HTTP address another one serves is refused rather
/// than let share the port (SO_REUSEPORT would let the kernel split the
/// connections between the two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_on_a_taken_http_address_is_refused() {
    let first = TestProxy::start().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let config = berth_proxy::ProxyConfig { http_listen: Some(first.addr), tcp_listen_ip: [127, 0, 0, 1].into() };
    match berth_proxy::start(config, shutdown).await {
        Err(berth_proxy::ProxyError::HttpListen { addr, source }) => {
            assert_eq!(addr, first.addr);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        Err(other) => panic!("expected HttpListen for {}, got {other}", first.addr),
        Ok(_) => panic!("a second proxy was let listen on {} beside the first", first.addr),
    }
}
