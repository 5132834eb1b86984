//! Route tables swapped under traffic, as in a rolling redeploy: a backend
//! that leaves finishes what it has and gets nothing new, its idle
//! connections close, and a constant stream of requests loses none.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use berth_proxy::Backend;
use berth_proxy::Balance::RoundRobin;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_finishes_its_in_flight_request_and_gets_no_new_ones() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let proxy = TestProxy::start().await;
    proxy.set_routes(http_table(vec![("web.test", route(vec![a.backend()], RoundRobin))])).await;

    let proxy_addr = proxy.addr;
    let slow = tokio::spawn(async move { get_once(proxy_addr, "web.test", "/slow").await });
    within("the slow request reaches a", a.slow_started.notified()).await;

    proxy.set_routes(http_table(vec![("web.test", route(vec![b.backend()], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..5 {
        assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "b".to_owned()));
    }
    assert_eq!(a.seen.requests(), 1, "a got nothing after it left the table");

    a.release_one();
    let answer = unwrap("slow request task", within("slow request", slow).await);
    assert_eq!(answer, (StatusCode::OK, "a".to_owned()), "the request in flight on a finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_idle_connections_are_closed_and_never_reused() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let proxy = TestProxy::start().await;
    let first_task = Backend { id: "a-1".into(), addr: a.addr };
    proxy.set_routes(http_table(vec![("web.test", route(vec![first_task], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..3 {
        assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "a".to_owned()));
    }
    assert_eq!((a.seen.accepted(), a.seen.open()), (1, 1), "one keep-alive connection, pooled");

    proxy.set_routes(http_table(vec![("web.test", route(vec![b.backend()], RoundRobin))])).await;
    wait_for("the pooled connection to the removed backend closes", &a.seen.changed, || a.seen.open() == 0).await;

    // A new task on the same address is another backend: new connections.
    let second_task = Backend { id: "a-2".into(), addr: a.addr };
    proxy.set_routes(http_table(vec![("web.test", route(vec![second_task], RoundRobin))])).await;
    assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "a".to_owned()));
    assert_eq!(a.seen.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_task_on_a_reused_address_never_gets_the_old_tasks_connections() {
    let a = HttpBackend::start("a").await;
    let proxy = TestProxy::start().await;
    let first_task = Backend { id: "a-1".into(), addr: a.addr };
    proxy.set_routes(http_table(vec![("web.test", route(vec![first_task], RoundRobin))])).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "a".to_owned()));
    // Swapped in one step, with the old task's connection still pooled.
    let second_task = Backend { id: "a-2".into(), addr: a.addr };
    proxy.set_routes(http_table(vec![("web.test", route(vec![second_task], RoundRobin))])).await;
    assert_eq!(client.get("web.test", "/").await, (StatusCode::OK, "a".to_owned()));
    assert_eq!(a.seen.accepted(), 2);
}

/// Clients sending GETs back to back until told to stop; counts answers.
struct Load {
    stop: CancellationToken,
    ok: Arc<AtomicUsize>,
    failures: Arc<parking_lot::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Requests per client at most, so the loop is bounded even if `stop` is never called.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;

impl Load {
    fn start(proxy: std::net::SocketAddr, clients: usize) -> Self {
        let stop = CancellationToken::new();
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), Arc::clone(&ok), Arc::clone(&failures));
                tokio::spawn(async move {
                    let mut client = None;
                    for _ in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.is_cancelled() {
                            return;
                        }
                        if client.is_none() {
                            match Client::try_connect(proxy).await {
                                Ok(connected) => client = Some(connected),
                                Err(error) => {
                                    failures.lock().push(error);
                                    continue;
                                }
                            }
                        }
                        let Some(connected) = client.as_mut() else { continue };
                        match connected.try_send(Method::GET, "web.test", "/", Bytes::new(), &[]).await {
                            Ok((StatusCode::OK, _)) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok((status, body)) => failures.lock().push(format!("{status}: {body}")),
                            Err(error) => {
                                failures.lock().push(error);
                                client = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failures, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        for task in self.tasks {
            unwrap("load client", within("load client stops", task).await);
        }
        (self.ok.load(Ordering::SeqCst), std::mem::take(&mut *self.failures.lock()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_loop_across_route_swaps_loses_nothing() {
    const GENERATIONS: usize = 12;
    const REQUESTS_PER_GENERATION: usize = 20;
    let proxy = TestProxy::start().await;
    let table = |live: &VecDeque<HttpBackend>| {
        http_table(vec![("web.test", route(live.iter().map(HttpBackend::backend).collect(), RoundRobin))])
    };
    let mut live = VecDeque::from([HttpBackend::start("g0").await, HttpBackend::start("g1").await]);
    proxy.set_routes(table(&live)).await;
    let load = Load::start(proxy.addr, 4);

    for generation in 2..2 + GENERATIONS {
        let new = HttpBackend::start(&format!("g{generation}")).await;
        live.push_back(new);
        proxy.set_routes(table(&live)).await;
        if let Some(new) = live.back() {
            wait_for("the new backend takes traffic", &new.seen.changed, || {
                new.seen.requests() >= REQUESTS_PER_GENERATION
            })
            .await;
        }
        let Some(old) = live.pop_front() else { continue };
        if generation % 3 == 0 {
            // A task that dies before the table catches up.
            old.stop();
            proxy.set_routes(table(&live)).await;
        } else {
            // A rolling redeploy: out of the table first, then stopped.
            proxy.set_routes(table(&live)).await;
            old.stop();
        }
    }

    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= GENERATIONS * REQUESTS_PER_GENERATION, "only {ok} requests answered");
}
