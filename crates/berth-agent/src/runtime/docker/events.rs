//! One node's container events, and the engine's image tag events, from
//! the Docker Engine's events API, filtered by the engine (object type,
//! the node's label, the actions berth acts on), as endless streams that
//! reconnect by themselves.
//!
//! The subscription is fixed at the moment `subscribe` is called: the
//! engine is asked for events *since* that instant, so an event between the
//! call and the first poll is replayed rather than lost. After a broken
//! connection the stream resumes from the last event it saw. The engine
//! only keeps its most recent events (256 in Docker 20.10) for such
//! replays, which is why a break is also reported as
//! [`RuntimeEvent::StreamInterrupted`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::convert::{
    event_time_nanos, runtime_event, since_argument, ACTION_DESTROY, ACTION_DIE, ACTION_HEALTH_STATUS, ACTION_START,
};
use crate::runtime::{ImageEventStream, ImageTagged, RuntimeEvent, RuntimeEventStream, LABEL_NODE};

/// First wait before reconnecting to a broken events stream.
pub const EVENTS_RETRY_INITIAL_MS: u64 = 100;
/// The wait doubles on each failed attempt up to this.
pub const EVENTS_RETRY_MAX_MS: u64 = 5_000;

type EngineEvents = BoxStream<'static, Result<EventMessage, bollard::errors::Error>>;

struct Feed<T> {
    docker: Docker,
    filters: HashMap<String, Vec<String>>,
    /// What berth makes of an engine event; `None` skips it.
    convert: fn(&EventMessage) -> Option<T>,
    /// What a broken stream is reported as, if anything.
    interrupted: fn(String) -> Option<T>,
    /// Ask the engine for events from this Unix time on.
    since_nanos: i64,
    engine: Option<EngineEvents>,
    /// Set after a failure: wait this long before reconnecting.
    retry_in: Option<Duration>,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_nanos()).ok()).unwrap_or(0)
}

/// Image tags coming to point at an image: `docker build -t`, `docker tag`,
/// `docker import` and `docker load` all announce a `tag` (or `load`/`import`)
/// event naming the reference and the image id.
pub(super) fn subscribe_images(docker: Docker) -> ImageEventStream {
    let filters = HashMap::from([
        ("type".to_string(), vec!["image".to_string()]),
        ("event".to_string(), ["tag", "load", "import"].map(String::from).to_vec()),
    ]);
    let interrupted = |reason: String| {
        tracing::warn!(%reason, "image events interrupted; a retag in the gap is not noticed until the next one");
        None
    };
    let feed = Feed {
        docker,
        filters,
        convert: image_tagged,
        interrupted,
        since_nanos: now_nanos(),
        engine: None,
        retry_in: None,
    };
    futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next_event().await;
        Some((event, feed))
    })
    .boxed()
}

fn image_tagged(message: &EventMessage) -> Option<ImageTagged> {
    let actor = message.actor.as_ref()?;
    let image_id = actor.id.clone()?;
    let name = actor.attributes.as_ref()?.get("name")?;
    // `import` and `load` also name the bare id; only a tag is followed.
    if name.starts_with("sha256:") || name.is_empty() {
        return None;
    }
    Some(ImageTagged { image: name.clone(), image_id })
}

pub(super) fn subscribe(docker: Docker, node_id: &str) -> RuntimeEventStream {
    let since_nanos = now_nanos();
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_NODE}={node_id}")]),
        (
            "event".to_string(),
            [ACTION_START, ACTION_DIE, ACTION_HEALTH_STATUS, ACTION_DESTROY].map(String::from).to_vec(),
        ),
    ]);
    let interrupted = |reason: String| Some(RuntimeEvent::StreamInterrupted { reason });
    let feed = Feed { docker, filters, convert: runtime_event, interrupted, since_nanos, engine: None, retry_in: None };
    futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next_event().await;
        Some((event, feed))
    })
    .boxed()
}

impl<T> Feed<T> {
    async fn next_event(&mut self) -> T {
        loop {
            let engine = match &mut self.engine {
                Some(engine) => engine,
                None => {
                    if let Some(wait) = self.retry_in {
                        tokio::time::sleep(wait).await;
                    }
                    self.engine.insert(self.connect())
                }
            };
            let reason = match engine.next().await {
                Some(Ok(message)) => {
                    self.retry_in = None;
                    if let Some(nanos) = event_time_nanos(&message) {
                        // Resume after this event, not at it, on reconnect.
                        self.since_nanos = self.since_nanos.max(nanos.saturating_add(1));
                    }
                    match (self.convert)(&message) {
                        Some(event) => return event,
                        None => continue,
                    }
                }
                Some(Err(err)) => err.to_string(),
                None => "the Docker Engine closed the events stream".to_string(),
            };
            self.engine = None;
            let next_wait = self.retry_in.map_or(EVENTS_RETRY_INITIAL_MS, |d| {
                (u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).saturating_mul(2).min(EVENTS_RETRY_MAX_MS)
            });
            self.retry_in = Some(Duration::from_millis(next_wait));
            tracing::warn!(%reason, retry_in_ms = next_wait, "Docker events stream interrupted");
            if let Some(event) = (self.interrupted)(reason) {
                return event;
            }
        }
    }

    fn connect(&self) -> EngineEvents {
        let options =
            EventsOptionsBuilder::new().since(&since_argument(self.since_nanos)).filters(&self.filters).build();
        self.docker.events(Some(options)).boxed()
    }
}

#[cfg(test)]
mod tests {
    //! The reconnect path, against a fake engine on a Unix socket: a real
    //! engine cannot be made to drop its events stream on demand.

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};
    use tokio::time::timeout;

    use super::*;
    use crate::runtime::LABEL_TASK;

    /// Bounds every wait in these tests.
    const DEADLINE_MS: u64 = 10_000;
    const REQUEST_HEAD_MAX_BYTES: usize = 64 * 1024;
    /// How far after the subscription the fake engine dates its events,
    /// so that resuming after them moves `since` forward.
    const EVENT_OFFSET_NANOS: i64 = 1_000_000_000;

    fn engine_event(action: &str, time_nanos: i64) -> String {
        format!(
            concat!(
                r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"c1","#,
                r#""Attributes":{{"{label}":"t1","exitCode":"3"}}}},"#,
                r#""scope":"local","time":{secs},"timeNano":{nanos}}}"#,
                "\n"
            ),
            action = action,
            label = LABEL_TASK,
            secs = time_nanos / 1_000_000_000,
            nanos = time_nanos,
        )
    }

    /// Accepts one connection and returns it with its request line.
    async fn accept_request(listener: &UnixListener) -> (UnixStream, String) {
        let (mut conn, _) = timeout(Duration::from_millis(DEADLINE_MS), listener.accept())
            .await
            .expect("the feed connects in time")
            .expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read request");
            assert!(n > 0, "client closed before sending a request");
            head.extend_from_slice(&buf[..n]);
            assert!(head.len() < REQUEST_HEAD_MAX_BYTES, "request head too long");
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let request_line = head.lines().next().unwrap_or_default().to_string();
        (conn, request_line)
    }

    /// Answers with a close-delimited body holding `events`.
    async fn answer(conn: &mut UnixStream, events: &str) {
        let response =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{events}");
        conn.write_all(response.as_bytes()).await.expect("write");
        conn.flush().await.expect("flush");
    }

    async fn next(events: &mut RuntimeEventStream) -> RuntimeEvent {
        timeout(Duration::from_millis(DEADLINE_MS), events.next())
            .await
            .expect("an event in time")
            .expect("the feed never ends")
    }

    #[tokio::test]
    async fn broken_stream_is_reported_and_resumed_after_the_last_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake engine");
        let docker =
            Docker::connect_with_unix(&socket.to_string_lossy(), DEADLINE_MS / 1_000, bollard::API_DEFAULT_VERSION)
                .expect("client");

        let subscribed_at = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
        let event_time = i64::try_from(subscribed_at.as_nanos()).expect("fits until 2262") + EVENT_OFFSET_NANOS;
        let mut events = subscribe(docker, "node-1");
        let engine = async {
            let (mut first, request) = accept_request(&listener).await;
            answer(&mut first, &engine_event("start", event_time)).await;
            drop(first);
            let (mut second, resumed) = accept_request(&listener).await;
            answer(&mut second, &engine_event("die", event_time + 10)).await;
            (request, resumed, second)
        };
        let consumer = async {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(next(&mut events).await);
            }
            seen
        };
        let ((request, resumed, _second), seen) = tokio::join!(engine, consumer);

        assert_eq!(seen[0], RuntimeEvent::Started { task_id: "t1".into(), container_id: "c1".into() });
        assert!(matches!(seen[1], RuntimeEvent::StreamInterrupted { .. }), "{seen:?}");
        assert_eq!(seen[2], RuntimeEvent::Died { task_id: "t1".into(), container_id: "c1".into(), exit_code: Some(3) });
        assert!(request.contains("/events?"), "{request}");
        assert!(request.contains("node-1"), "{request}");
        let expected_since = since_argument(event_time + 1);
        assert!(
            resumed.contains(&format!("since={expected_since}")),
            "{resumed} does not resume from {expected_since}"
        );
    }
}
