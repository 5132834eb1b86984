//! TCP routes: bytes copied both ways to a backend of the port's route,
//! listeners that open and close with the table while the connections they
//! accepted carry on, and a refused backend passed over.

use berth_proxy::Backend;
use berth_proxy::Balance::{LeastConnections, RoundRobin};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_round_trips_bytes() {
    let (a, b) = (TcpBackend::start("a").await, TcpBackend::start("b").await);
    let proxy = TestProxy::start().await;
    let port = free_port().await;
    proxy.set_routes(tcp_table(vec![(port, route(vec![a.backend(), b.backend()], RoundRobin))])).await;
    let mut greeted = Vec::new();
    for _ in 0..4 {
        let (mut stream, greeting) = tcp_connect_and_greet(port).await;
        tcp_echo(&mut stream, b"ping").await;
        tcp_echo(&mut stream, &vec![7; 256 * 1024]).await;
        greeted.push(greeting);
    }
    assert_eq!(greeted, ["a", "b", "a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_opens_and_closes_with_the_table() {
    let a = TcpBackend::start("a").await;
    let proxy = TestProxy::start().await;
    let port = free_port().await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "nothing listens before the route");

    proxy.set_routes(tcp_table(vec![(port, route(vec![a.backend()], LeastConnections))])).await;
    let (mut held, greeting) = tcp_connect_and_greet(port).await;
    assert_eq!(greeting, "a");

    proxy.set_routes(tcp_table(vec![])).await;
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "the port closed with its route");
    tcp_echo(&mut held, b"still here").await;

    proxy.set_routes(tcp_table(vec![(port, route(vec![a.backend()], RoundRobin))])).await;
    let (mut again, greeting) = tcp_connect_and_greet(port).await;
    assert_eq!(greeting, "a");
    tcp_echo(&mut again, b"back").await;
    tcp_echo(&mut held, b"and the first one too").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connection_passes_over_a_refused_backend() {
    let a = TcpBackend::start("a").await;
    let gone = Backend { id: "stopped-task".into(), addr: refused_addr().await };
    let proxy = TestProxy::start().await;
    let port = free_port().await;
    proxy.set_routes(tcp_table(vec![(port, route(vec![gone, a.backend()], RoundRobin))])).await;
    for _ in 0..4 {
        let (mut stream, greeting) = tcp_connect_and_greet(port).await;
        assert_eq!(greeting, "a");
        tcp_echo(&mut stream, b"ping").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_route_shares_a_port_with_a_port_route() {
    let (a, b) = (TcpBackend::start("a").await, TcpBackend::start("b").await);
    let proxy = TestProxy::start().await;
    let port = free_port().await;
    // Another loopback address stands for a service's virtual IP.
    let virtual_ip: std::net::SocketAddr = ([127, 0, 0, 7], port).into();
    let routes = berth_proxy::RouteTable {
        tcp: [(port, route(vec![a.backend()], RoundRobin))].into(),
        tcp_at: [(virtual_ip, route(vec![b.backend()], RoundRobin))].into(),
        ..Default::default()
    };
    proxy.set_routes(routes).await;
    let (mut to_port, greeting) = tcp_connect_and_greet(port).await;
    assert_eq!(greeting, "a");
    let (mut to_address, greeting) = tcp_connect_and_greet_at(virtual_ip).await;
    assert_eq!(greeting, "b", "the address route answers on its own address");
    tcp_echo(&mut to_port, b"ping").await;
    tcp_echo(&mut to_address, b"pong").await;

    proxy.set_routes(tcp_table(vec![(port, route(vec![a.backend()], RoundRobin))])).await;
    assert!(TcpStream::connect(virtual_ip).await.is_err(), "the address closed with its route");
}
