//! The hyper engine's pooled upstream connection: a `SendRequest` over the request body type it sends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::Reusable;

/// Request body sent upstream: the client's, or empty when a body-less request is re-sent.
pub(crate) enum UpBody {
    Client(Incoming),
    Empty,
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Client(b) => Pin::new(b).poll_frame(cx),
            UpBody::Empty => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Client(b) => b.is_end_stream(),
            UpBody::Empty => true,
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Client(b) => b.size_hint(),
            UpBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pub(crate) type Upstream = SendRequest<UpBody>;

impl Reusable for Upstream {
    fn usable_now(&mut self) -> bool {
        self.is_ready()
    }
    fn worth_keeping(&mut self) -> bool {
        !self.is_closed()
    }
}
