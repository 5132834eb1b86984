//! What the proxy tests run against, all in-process on 127.0.0.1 ephemeral
//! ports: hyper backends that name themselves and can hold a request until
//! released, TCP echo backends, a backend that drops a keep-alive
//! connection under a request, a proxy, a client, and waits with deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_proxy::{Backend, Balance, ProxyConfig, ProxyHandle, Route, RouteTable};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long any single step of a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `step`, failing the test if it takes longer than `DEADLINE`.
pub async fn within<F: Future>(what: &str, step: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, step).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: not done within {DEADLINE:?}"),
    }
}

/// Waits, up to `DEADLINE`, until `done()` holds; `changed` is notified
/// (with `notify_waiters`) whenever what `done` reads may have changed.
pub async fn wait_for(what: &str, changed: &Notify, done: impl Fn() -> bool) {
    within(what, async {
        loop {
            let notified = changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if done() {
                return;
            }
            notified.await;
        }
    })
    .await;
}

pub fn unwrap<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// An address nothing listens on: connecting to it is refused.
pub async fn refused_addr() -> SocketAddr {
    let listener = unwrap("bind", TcpListener::bind("127.0.0.1:0").await);
    unwrap("local_addr", listener.local_addr())
}

/// A port free right now, for a TCP route.
pub async fn free_port() -> u16 {
    refused_addr().await.port()
}

pub struct TestProxy {
    pub handle: ProxyHandle,
    pub addr: SocketAddr,
    _shutdown: DropGuard,
}

impl TestProxy {
    pub async fn start() -> Self {
        let shutdown = CancellationToken::new();
        let config =
            ProxyConfig { http_listen: Some(([127, 0, 0, 1], 0).into()), tcp_listen_ip: [127, 0, 0, 1].into() };
        let handle = unwrap("start proxy", berth_proxy::start(config, shutdown.clone()).await);
        let addr = handle.http_addr().unwrap_or_else(|| panic!("the proxy serves no HTTP"));
        TestProxy { handle, addr, _shutdown: shutdown.drop_guard() }
    }

    pub async fn set_routes(&self, routes: RouteTable) {
        unwrap("set_routes", within("set_routes", self.handle.set_routes(routes)).await);
    }
}

pub fn route(backends: Vec<Backend>, balance: Balance) -> Route {
    Route { backends, balance }
}

pub fn http_table(entries: Vec<(&str, Route)>) -> RouteTable {
    RouteTable {
        http: entries.into_iter().map(|(host, route)| (host.to_owned(), route)).collect(),
        ..RouteTable::default()
    }
}

pub fn tcp_table(entries: Vec<(u16, Route)>) -> RouteTable {
    RouteTable { tcp: entries.into_iter().collect(), ..RouteTable::default() }
}

/// What a backend has seen; `changed` is notified on every change.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    pub accepted: AtomicUsize,
    pub open: AtomicUsize,
    pub changed: Notify,
}

impl Seen {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn bump(&self, counter: &AtomicUsize, by: isize) {
        if by >= 0 {
            counter.fetch_add(by.unsigned_abs(), Ordering::SeqCst);
        } else {
            counter.fetch_sub(by.unsigned_abs(), Ordering::SeqCst);
        }
        self.changed.notify_waiters();
    }
}

/// An HTTP/1.1 keep-alive backend answering its own name. `/slow` and
/// `/stream` wait for `release`; `/echo` streams the request body back;
/// `/headers` shows the forwarding headers it received.
pub struct HttpBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    /// Notified (one stored permit) when a `/slow` request arrives.
    pub slow_started: Arc<Notify>,
    release: Arc<Semaphore>,
    task: JoinHandle<()>,
}

impl HttpBackend {
    pub async fn start(name: &str) -> Self {
        let listener = unwrap("bind backend", TcpListener::bind("127.0.0.1:0").await);
        Self::serve(name, listener)
    }

    fn serve(name: &str, listener: TcpListener) -> Self {
        let addr = unwrap("local_addr", listener.local_addr());
        let seen = Arc::new(Seen::default());
        let slow_started = Arc::new(Notify::new());
        let release = Arc::new(Semaphore::new(0));
        let app = Arc::new(App {
            name: name.to_owned(),
            seen: Arc::clone(&seen),
            slow_started: Arc::clone(&slow_started),
            release: Arc::clone(&release),
        });
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it closes every connection at once,
            // the way a stopped container does.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let app = Arc::clone(&app);
                connections.spawn(async move {
                    app.seen.bump(&app.seen.accepted, 1);
                    app.seen.bump(&app.seen.open, 1);
                    let service = hyper::service::service_fn(|request| Arc::clone(&app).answer(request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    app.seen.bump(&app.seen.open, -1);
                });
                while connections.try_join_next().is_some() {}
            }
        });
        HttpBackend { name: name.to_owned(), addr, seen, slow_started, release, task }
    }

    pub fn backend(&self) -> Backend {
        Backend { id: self.name.clone(), addr: self.addr }
    }

    /// Lets one waiting `/slow` or `/stream` request finish.
    pub fn release_one(&self) {
        self.release.add_permits(1);
    }

    /// Stops at once: the port refuses connections and open ones close.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct App {
    name: String,
    seen: Arc<Seen>,
    slow_started: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl App {
    async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Result<Response<TestBody>, hyper::Error> {
        self.seen.bump(&self.seen.requests, 1);
        let body = match request.uri().path() {
            "/slow" => {
                self.slow_started.notify_one();
                if let Ok(permit) = self.release.acquire().await {
                    permit.forget();
                }
                TestBody::text(self.name.clone())
            }
            "/stream" => {
                let (chunks, receiver) = mpsc::channel(2);
                let release = Arc::clone(&self.release);
                tokio::spawn(async move {
                    let _ = chunks.send(Bytes::from_static(b"first\n")).await;
                    if let Ok(permit) = release.acquire().await {
                        permit.forget();
                    }
                    let _ = chunks.send(Bytes::from_static(b"second\n")).await;
                });
                TestBody::Channel(receiver)
            }
            "/echo" => TestBody::Incoming(request.into_body()),
            "/headers" => {
                let header = |name: &str| {
                    request.headers().get(name).map_or("-".to_owned(), |v| String::from_utf8_lossy(v.as_bytes()).into())
                };
                TestBody::text(format!(
                    "xff={} xfp={} host={} x-hop={} connection={}",
                    header("x-forwarded-for"),
                    header("x-forwarded-proto"),
                    header("host"),
                    header("x-hop"),
                    header("connection"),
                ))
            }
            _ => TestBody::text(self.name.clone()),
        };
        Ok(Response::new(body))
    }
}

pub enum TestBody {
    Full(Option<Bytes>),
    Incoming(Incoming),
    Channel(mpsc::Receiver<Bytes>),
}

impl TestBody {
    fn text(text: String) -> Self {
        TestBody::Full(Some(Bytes::from(text)))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            TestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Incoming(body) => Pin::new(body).poll_frame(cx),
            TestBody::Channel(chunks) => chunks.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Full(bytes) => bytes.is_none(),
            TestBody::Incoming(body) => body.is_end_stream(),
            TestBody::Channel(_) => false,
        }
    }
}

/// A backend that answers the first request of each connection and, on the
/// second, reads it and closes the connection without a word: the
/// keep-alive race of a backend closing an idle connection as a request
/// goes out on it.
pub struct ClosesKeepAlive {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl ClosesKeepAlive {
    pub async fn start(name: &'static str) -> Self {
        let listener = unwrap("bind", TcpListener::bind("127.0.0.1:0").await);
        let addr = unwrap("local_addr", listener.local_addr());
        let seen = Arc::new(Seen::default());
        let counters = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let seen = Arc::clone(&counters);
                connections.spawn(async move {
                    seen.bump(&seen.accepted, 1);
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    seen.bump(&seen.requests, 1);
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len());
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if read_head(&mut stream).await.is_some() {
                        seen.bump(&seen.requests, 1);
                    }
                    // Dropped here: the second request gets no answer.
                });
                while connections.try_join_next().is_some() {}
            }
        });
        ClosesKeepAlive { addr, seen, task }
    }
}

impl Drop for ClosesKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads up to the end of a request head (a test fixture standing in for a
/// misbehaving server; the proxy itself leaves HTTP parsing to hyper).
async fn read_head(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(())
}

/// A TCP backend that greets with its name and a newline, then echoes.
pub struct TcpBackend {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpBackend {
    pub async fn start(name: &str) -> Self {
        let listener = unwrap("bind", TcpListener::bind("127.0.0.1:0").await);
        let addr = unwrap("local_addr", listener.local_addr());
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let greeting = greeting.clone();
                connections.spawn(async move {
                    if stream.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TcpBackend { name: name.to_owned(), addr, task }
    }

    pub fn backend(&self) -> Backend {
        Backend { id: self.name.clone(), addr: self.addr }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `payload` on a proxied TCP connection and checks it comes back.
pub async fn tcp_echo(stream: &mut TcpStream, payload: &[u8]) {
    within("TCP echo", async {
        unwrap("write", stream.write_all(payload).await);
        let mut echoed = vec![0; payload.len()];
        unwrap("read echo", stream.read_exact(&mut echoed).await);
        assert_eq!(echoed, payload);
    })
    .await;
}

/// Connects to a TCP route and reads the greeting naming the backend.
pub async fn tcp_connect_and_greet(port: u16) -> (TcpStream, String) {
    tcp_connect_and_greet_at(([127, 0, 0, 1], port).into()).await
}

pub async fn tcp_connect_and_greet_at(addr: SocketAddr) -> (TcpStream, String) {
    within("TCP connect", async {
        let mut stream = unwrap("connect to the TCP route", TcpStream::connect(addr).await);
        let mut greeting = Vec::new();
        let mut byte = [0; 1];
        loop {
            let n = unwrap("read greeting", stream.read(&mut byte).await);
            if n == 0 || byte[0] == b'\n' {
                break;
            }
            greeting.push(byte[0]);
        }
        (stream, String::from_utf8_lossy(&greeting).into_owned())
    })
    .await
}

/// A keep-alive client connection to the proxy.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

pub type Answer = (StatusCode, String);

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        unwrap("client connect", Self::try_connect(addr).await)
    }

    pub async fn try_connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Client { sender })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.send(Method::GET, host, path, Bytes::new()).await
    }

    pub async fn send(&mut self, method: Method, host: &str, path: &str, body: Bytes) -> Answer {
        let what = format!("{method} {host}{path}");
        unwrap(&what, within(&what, self.try_send(method, host, path, body, &[])).await)
    }

    pub async fn try_send(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let response = self.try_response(method, host, path, body, headers).await?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub async fn try_response(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>, String> {
        self.sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let mut request = Request::builder().method(method).uri(path).header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|e| format!("request: {e}"))?;
        self.sender.send_request(request).await.map_err(|e| format!("send: {e}"))
    }
}

/// One GET on a fresh connection.
pub async fn get_once(addr: SocketAddr, host: &str, path: &str) -> Answer {
    Client::connect(addr).await.get(host, path).await
}
