//! The CLI's connection to the cluster: any of the given managers will do.
//!
//! [`Client::call`] tries the managers in turn and retries through leader
//! elections, restarts and a manager that is down, until
//! [`CLIENT_RETRY_DEADLINE_MS`]. A retried write carries the request id it
//! was first sent with (the caller builds the request once, with
//! [`new_request_id`], and the retry loop resends that same request), so a
//! write whose reply was lost is applied once: the state machine answers a
//! known request id with its first response.
//!
//! Only failures that say "try again" are retried. A refusal (invalid
//! argument, not found, stale version, ...) is final and goes back to the
//! user at once with the manager's message.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use berth_proto::v1::cluster_api_client::ClusterApiClient;
use indicatif::ProgressBar;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long a command keeps retrying before it gives up. Long enough to
/// ride out a leader election and a manager restart, short enough that a
/// cluster that is really down is reported while the user still waits.
pub const CLIENT_RETRY_DEADLINE_MS: u64 = 6_000;
/// First pause after every manager has been tried once; doubles each round.
pub const RETRY_BACKOFF_FIRST_MS: u64 = 50;
pub const RETRY_BACKOFF_MAX_MS: u64 = 500;
/// Establishing a connection (TCP and HTTP/2) to one manager. A paused
/// manager's kernel still accepts TCP, so this bounds the handshake too.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// One request to one manager. A manager cut off from the majority may hold
/// a request; this lets the next manager have a go.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Spinner refresh while waiting for the cluster.
const SPINNER_TICK_MS: u64 = 100;

/// A fresh id for one logical write. Build the request with it once and
/// let [`Client::call`] resend that request; a different write (another
/// service, or a re-read-and-retry after a stale version) needs a new id,
/// since the cluster would answer a reused id with the first write's result.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Why a command could not get an answer it can use.
#[derive(Debug)]
pub enum ApiError {
    /// A `--manager` address that is not HOST:PORT.
    BadAddress { address: String, reason: String },
    /// No manager accepted a connection until the deadline.
    Unreachable { addresses: Vec<String>, detail: String, waited: Duration },
    /// Managers answered, but only with "unavailable" (no leader, no
    /// quorum) until the deadline.
    Unavailable { address: String, message: String, waited: Duration },
    /// A manager answered with a final refusal.
    Refused { address: String, code: Code, message: String },
}

impl ApiError {
    /// The gRPC code of a refusal, to tell a stale version from other errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            ApiError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadAddress { address, reason } => write!(
                f,
                "invalid manager address '{address}': {reason} (expected HOST:PORT, e.g. {})",
                berth_manager::config::DEFAULT_LISTEN
            ),
            ApiError::Unreachable { addresses, detail, waited } => write!(
                f,
                "no manager reachable at {} within {} (is `berth manager init` running? \
                 set --manager or BERTH_MANAGER to reach another); last error: {detail}",
                addresses.join(", "),
                seconds(*waited)
            ),
            ApiError::Unavailable { address, message, waited } => write!(
                f,
                "the cluster is unavailable: {message} (still so after {}, last asked \
                 {address}; a majority of managers must be up and connected)",
                seconds(*waited)
            ),
            ApiError::Refused { address, code: Code::Unimplemented, message } => write!(
                f,
                "the manager at {address} does not support this request ({message}); \
                 is it running an older berth?"
            ),
            ApiError::Refused { code, message, .. } if message.is_empty() => {
                write!(f, "request refused: {}", code.description())
            }
            ApiError::Refused { message, .. } => f.write_str(message),
        }
    }
}

impl StdError for ApiError {}

/// `14.6s`: how long a command waited, to the tenth of a second.
fn seconds(waited: Duration) -> String {
    format!("{:.1}s", waited.as_secs_f64())
}

/// A failure the retry loop may see past.
enum Failure {
    /// Fatal: a refusal to report as is.
    Refused(Status),
    /// Could not connect: nothing was sent.
    Connect(String),
    /// The manager answered "try again", or the request was lost in flight.
    Retriable(Status),
}

/// Statuses that mean "not now" rather than "no". Retrying them is safe
/// even for writes, because of request ids.
fn is_retriable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => true,
        // A connection that breaks mid-request surfaces as Unknown or
        // Internal with the local transport error attached as its source;
        // a status the manager sent carries no source.
        Code::Unknown | Code::Internal => status.source().is_some(),
        _ => false,
    }
}

/// An error and its causes on one line; tonic's top-level transport error
/// says only "transport error".
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub struct Client {
    addresses: Vec<String>,
    endpoints: Vec<Endpoint>,
    /// Index of the manager to try next.
    next: usize,
    /// The last manager that answered, kept so later calls of the same
    /// command skip the managers that were down.
    connected: Option<(usize, ClusterApiClient<Channel>)>,
    deadline: Duration,
}

impl Client {
    /// Checks the addresses; connects lazily, on the first call.
    pub fn new(addresses: &[String]) -> Result<Self, ApiError> {
        let mut kept = Vec::new();
        let mut endpoints = Vec::new();
        for address in addresses.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            let uri = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
            let endpoint = Endpoint::from_shared(uri)
                .map_err(|e| ApiError::BadAddress { address: address.to_string(), reason: error_chain(&e) })?;
            kept.push(address.to_string());
            endpoints.push(endpoint);
        }
        if endpoints.is_empty() {
            return Err(ApiError::BadAddress { address: addresses.join(","), reason: "no address given".to_string() });
        }
        Ok(Client {
            addresses: kept,
            endpoints,
            next: 0,
            connected: None,
            deadline: Duration::from_millis(CLIENT_RETRY_DEADLINE_MS),
        })
    }

    /// Shortens the retry deadline, so tests of giving up run fast.
    #[cfg(test)]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The manager that answered the last call, to show in hints.
    pub fn answering_address(&self) -> Option<&str> {
        self.connected.as_ref().and_then(|(i, _)| self.addresses.get(*i)).map(String::as_str)
    }

    /// Runs `op` against a manager until it succeeds, is refused, or the
    /// deadline passes. `op` is called once per attempt and must send the
    /// same request each time (clone it in; do not build a new request id).
    pub async fn call<T, F, Fut>(&mut self, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut(ClusterApiClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let mut backoff = Duration::from_millis(RETRY_BACKOFF_FIRST_MS);
        let mut failures_this_round = 0;
        let mut last_connect_error = String::new();
        // The last "try again" a manager sent: once a manager answers, the
        // final error is about the cluster, not about reaching it.
        let mut last_answer: Option<(String, String)> = None;
        let mut spinner: Option<ProgressBar> = None;

        let result = loop {
            let index = self.next;
            let address = self.addresses[index].clone();
            match self.attempt(index, &mut op, deadline).await {
                Ok(value) => break Ok(value),
                Err(Failure::Refused(status)) => {
                    break Err(ApiError::Refused {
                        address,
                        code: status.code(),
                        message: status.message().to_string(),
                    })
                }
                Err(Failure::Connect(detail)) => {
                    last_connect_error = format!("{address}: {detail}");
                }
                Err(Failure::Retriable(status)) => {
                    // A manager's own explanation ("no quorum ...") beats a
                    // local "no answer in time" from a later, shorter try.
                    let ours = status.code() == Code::DeadlineExceeded && last_answer.is_some();
                    if !ours {
                        last_answer = Some((address.clone(), status.message().to_string()));
                    }
                }
            }
            self.connected = None;
            self.next = (index + 1) % self.endpoints.len();

            // Every manager gets one try before the first pause: with one
            // of three down, the user should not wait for it.
            failures_this_round += 1;
            let pause = if failures_this_round >= self.endpoints.len() { backoff } else { Duration::ZERO };
            let now = Instant::now();
            // Give up rather than wake at the deadline for an attempt with
            // no time left, whose "timed out" would hide the real reason.
            if now + pause >= deadline {
                let waited = now - started;
                break Err(match last_answer {
                    Some((address, message)) => ApiError::Unavailable { address, message, waited },
                    None => {
                        ApiError::Unreachable { addresses: self.addresses.clone(), detail: last_connect_error, waited }
                    }
                });
            }
            let spinner = spinner.get_or_insert_with(|| {
                let bar = ProgressBar::new_spinner();
                bar.enable_steady_tick(Duration::from_millis(SPINNER_TICK_MS));
                bar
            });
            spinner.set_message(match &last_answer {
                Some((address, message)) => {
                    format!("waiting for the cluster ({address}: {message})")
                }
                None => format!("waiting for a manager ({last_connect_error})"),
            });
            if !pause.is_zero() {
                failures_this_round = 0;
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MAX_MS));
            }
        };
        if let Some(spinner) = spinner {
            spinner.finish_and_clear();
        }
        result
    }

    async fn attempt<T, F, Fut>(&mut self, index: usize, op: &mut F, deadline: Instant) -> Result<T, Failure>
    where
        F: FnMut(ClusterApiClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let client = match &self.connected {
            Some((i, client)) if *i == index => client.clone(),
            _ => {
                let limit = remaining.min(Duration::from_millis(CONNECT_TIMEOUT_MS));
                let endpoint = self.endpoints[index].clone().connect_timeout(limit);
                let channel = match tokio::time::timeout(limit, endpoint.connect()).await {
                    Ok(Ok(channel)) => channel,
                    Ok(Err(e)) => return Err(Failure::Connect(error_chain(&e))),
                    Err(_) => return Err(Failure::Connect(format!("no connection within {}ms", limit.as_millis()))),
                };
                let client = ClusterApiClient::new(channel);
                self.connected = Some((index, client.clone()));
                client
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let limit = remaining.min(Duration::from_millis(REQUEST_TIMEOUT_MS));
        match tokio::time::timeout(limit, op(client)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_retriable(&status) => Err(Failure::Retriable(status)),
            Ok(Err(status)) => Err(Failure::Refused(status)),
            Err(_) => {
                Err(Failure::Retriable(Status::deadline_exceeded(format!("no answer within {}ms", limit.as_millis()))))
            }
        }
    }
}

/// Set once from `--local`: how reads are served.
static LOCAL_READS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub fn set_local_reads(local: bool) {
    let _ = LOCAL_READS.set(local);
}

/// The read consistency every read request asks for.
pub fn read_consistency() -> i32 {
    if LOCAL_READS.get().copied().unwrap_or(false) {
        berth_proto::v1::ReadConsistency::Local as i32
    } else {
        berth_proto::v1::ReadConsistency::Linearizable as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeCluster;
    use berth_proto::v1 as proto;

    fn create_request(name: &str) -> proto::CreateServiceRequest {
        proto::CreateServiceRequest {
            request_id: new_request_id(),
            spec: Some(proto::ServiceSpec { name: name.into(), image: "busybox".into(), ..Default::default() }),
        }
    }

    async fn create(
        client: &mut Client,
        request: proto::CreateServiceRequest,
    ) -> Result<proto::ServiceReply, ApiError> {
        client
            .call(|mut c| {
                let request = request.clone();
                async move { c.create_service(request).await }
            })
            .await
    }

    #[tokio::test]
    async fn a_write_retried_through_unavailable_keeps_its_request_id() {
        let cluster = FakeCluster::start().await;
        cluster.fail_next([Status::unavailable("no leader"), Status::unavailable("election in progress")]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");
        let request = create_request("web");

        let reply = create(&mut client, request.clone()).await.expect("created after retries");

        assert_eq!(reply.service.map(|s| s.name), Some("web".to_string()));
        let seen = cluster.create_requests();
        assert_eq!(seen.len(), 3, "two refused attempts and the one that worked");
        assert!(
            seen.iter().all(|r| r.request_id == request.request_id),
            "every attempt carries the first request id: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_keeps_the_managers_message() {
        let cluster = FakeCluster::start().await;
        cluster.fail_next([Status::invalid_argument("invalid replicas: -1 is negative")]);
        let mut client = Client::new(&[cluster.address()]).expect("valid address");

        let err = create(&mut client, create_request("web")).await.expect_err("refused");

        assert_eq!(err.code(), Some(Code::InvalidArgument));
        assert_eq!(err.to_string(), "invalid replicas: -1 is negative");
        assert_eq!(cluster.create_requests().len(), 1, "not retried");
    }

    #[tokio::test]
    async fn a_manager_that_is_down_is_skipped() {
        let down = FakeCluster::unused_address().await;
        let cluster = FakeCluster::start().await;
        let mut client = Client::new(&[down, cluster.address()]).expect("valid addresses");

        create(&mut client, create_request("web")).await.expect("second manager answers");

        assert_eq!(client.answering_address(), Some(cluster.address().as_str()));
    }

    #[tokio::test]
    async fn nobody_listening_gives_the_init_hint() {
        let down = FakeCluster::unused_address().await;
        let mut client =
            Client::new(std::slice::from_ref(&down)).expect("valid address").with_deadline(Duration::from_millis(300));

        let err = create(&mut client, create_request("web")).await.expect_err("unreachable");

        let text = err.to_string();
        assert!(text.starts_with(&format!("no manager reachable at {down}")), "{text}");
        assert!(text.contains("berth manager init"), "{text}");
    }

    #[tokio::test]
    async fn a_cluster_without_quorum_is_reported_as_such() {
        let cluster = FakeCluster::start().await;
        cluster.fail_next(std::iter::repeat_n(Status::unavailable("no quorum"), 1_000));
        let mut client =
            Client::new(&[cluster.address()]).expect("valid address").with_deadline(Duration::from_millis(300));

        let err = create(&mut client, create_request("web")).await.expect_err("unavailable");

        let text = err.to_string();
        assert!(text.starts_with("the cluster is unavailable: no quorum"), "{text}");
    }

    #[test]
    fn bad_addresses_are_refused_before_connecting() {
        let err = Client::new(&["not a host:port".to_string()]).err().expect("refused");
        assert!(err.to_string().starts_with("invalid manager address"), "{err}");
        assert!(Client::new(&[" ".to_string()]).is_err());
    }

    #[test]
    fn statuses_from_the_manager_are_final_unless_they_say_try_again() {
        assert!(is_retriable(&Status::unavailable("no leader")));
        assert!(is_retriable(&Status::deadline_exceeded("slow")));
        for status in [
            Status::invalid_argument("x"),
            Status::not_found("x"),
            Status::failed_precondition("x"),
            Status::permission_denied("x"),
            Status::already_exists("x"),
            Status::unknown("a manager bug"),
        ] {
            assert!(!is_retriable(&status), "{status:?}");
        }
    }
}
