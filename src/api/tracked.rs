//! Which connections are answering a request: a [`Busy`] guard taken when
//! a request reaches the router and kept inside the answer's body
//! ([`Tracked`]) until hyper has written that body and dropped it. The
//! server never cuts a connection while one of its guards lives.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};

/// One request in flight on a connection.
#[derive(Debug)]
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// A request reached the router: mark the connection as having served
    /// one, and as busy until the guard is dropped.
    pub fn enter(busy: &Arc<AtomicUsize>, served: &AtomicBool) -> Busy {
        served.store(true, Ordering::Release);
        busy.fetch_add(1, Ordering::AcqRel);
        Busy(busy.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body carrying the [`Busy`] guard of its request.
pub struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl Tracked {
    pub fn new(inner: Body, busy: Busy) -> Tracked {
        Tracked { inner, _busy: busy }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
