//! How requests spread over a route's backends: round-robin in turn,
//! least-connections away from a backend busy with a slow request.

use berth_proxy::Balance::{LeastConnections, RoundRobin};
use hyper::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_across_three_backends() {
    let backends = [HttpBackend::start("a").await, HttpBackend::start("b").await, HttpBackend::start("c").await];
    let proxy = TestProxy::start().await;
    let all = backends.iter().map(HttpBackend::backend).collect();
    proxy.set_routes(http_table(vec![("web.test", route(all, RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        let (status, name) = client.get("web.test", "/").await;
        assert_eq!(status, StatusCode::OK);
        answers.push(name);
    }
    for backend in &backends {
        assert_eq!(backend.seen.requests(), 10, "{} served {answers:?}", backend.name);
    }
    // In turn, not merely in total.
    for window in answers.windows(3) {
        assert!(window[0] != window[1] && window[1] != window[2] && window[0] != window[2], "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_backend_while_another_is_busy() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![a.backend(), b.backend()], LeastConnections))])).await;

    let proxy_addr = proxy.addr;
    let slow = tokio::spawn(async move { get_once(proxy_addr, "web.test", "/slow").await });
    let (busy, idle) = within("the slow request reaches a backend", async {
        tokio::select! {
            _ = a.slow_started.notified() => (&a, &b),
            _ = b.slow_started.notified() => (&b, &a),
        }
    })
    .await;

    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, idle.name.clone()));
    }
    assert_eq!(busy.seen.requests(), 1, "only the slow request went to the busy backend");

    busy.release_one();
    let answer = unwrap("slow request task", within("slow request", slow).await);
    assert_eq!(answer, (StatusCode::OK, busy.name.clone()));
    // With both idle again, the next two requests go one to each.
    let next = [client.get("web.test", "/").await.1, client.get("web.test", "/").await.1];
    assert_ne!(next[0], next[1]);
}
