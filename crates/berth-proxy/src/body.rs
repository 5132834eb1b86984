//! The bodies the HTTP proxy streams: a client's request body on its way to
//! a backend (or nothing, for a replayed request), and a response on its way
//! to the client — a backend's, streamed frame by frame, which hands its
//! connection back to the pool once the last frame is through, or a short
//! one the proxy wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::backend::{BackendConn, InFlight};

/// A request body sent to a backend.
pub(crate) enum UpstreamBody {
    Client(Incoming),
    /// An empty body, for a request replayed on another connection.
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A backend connection lent to one request: the request counts as in
/// flight on the backend until the lease ends, the response body drives the
/// connection as it is read, and the connection goes back to the pool only
/// when its response was read to the end.
pub(crate) struct Lease {
    pub(crate) conn: BackendConn,
    pub(crate) in_flight: InFlight,
}

impl Lease {
    fn response_complete(self) {
        let Lease { conn, in_flight } = self;
        in_flight.backend().put_idle(conn);
    }
}

/// A response body sent to a client.
pub(crate) struct ProxyBody(Kind);

enum Kind {
    Upstream { body: Incoming, lease: Option<Lease> },
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn upstream(body: Incoming, lease: Lease) -> Self {
        if body.is_end_stream() {
            // hyper will not poll a body that is already at its end (HEAD,
            // 204, 304, `content-length: 0`), so the connection is free now.
            lease.response_complete();
            return ProxyBody(Kind::Upstream { body, lease: None });
        }
        ProxyBody(Kind::Upstream { body, lease: Some(lease) })
    }

    pub(crate) fn local(text: impl Into<Bytes>) -> Self {
        ProxyBody(Kind::Local(Some(text.into())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Upstream { body, lease } => {
                if let Some(lease) = lease {
                    lease.conn.drive(cx);
                }
                let frame = std::task::ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    Some(Ok(_)) if !body.is_end_stream() => {}
                    Some(Ok(_)) | None => {
                        if let Some(lease) = lease.take() {
                            lease.response_complete();
                        }
                    }
                    // A broken response leaves the connection unusable: drop it.
                    Some(Err(_)) => drop(lease.take()),
                }
                Poll::Ready(frame)
            }
            Kind::Local(text) => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Local(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Local(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}
