//! The bodies of a request and its response, which keep the request counted as in flight until
//! its response has been sent, and drain what a refused request's client still sends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as _, Incoming};

use super::activity::InFlight;

/// A refused request's unread body is read and discarded, after the response, up to this many
/// bytes, for this long, and while the client keeps sending (no gap longer than `DRAIN_GAP`:
/// a body too slow for the request timeout is not waited for again); what is left then is
/// dropped.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);
const DRAIN_GAP: Duration = Duration::from_secs(1);

/// A request's body. If the handler drops it unread (a refusal: 401, 403, 413), the rest is
/// kept for `ResponseBody` to drain once the response has been sent: dropped before that, the
/// HTTP/2 stream is reset with CANCEL while the client still sends, and clients report a
/// stream error instead of the response.
pub(super) struct RequestBody {
    pub(super) body: Option<Incoming>,
    pub(super) unread: Arc<Mutex<Option<Incoming>>>,
}

impl hyper::body::Body for RequestBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(body) = self.body.take().filter(|b| !b.is_end_stream()) {
            *self.unread.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}

/// A response's body; while it lives, its request is in flight. hyper drops it once the
/// response has been sent in full; then the request body's unread rest, if any, is drained,
/// so the client can finish sending and read its answer (a client that sends more than
/// `DRAIN_LIMIT` gets, on HTTP/2, a reset with NO_ERROR: RFC 9113 section 8.1).
pub(super) struct ResponseBody {
    pub(super) body: axum::body::Body,
    pub(super) in_flight: Option<InFlight>,
    pub(super) unread: Arc<Mutex<Option<Incoming>>>,
}

impl hyper::body::Body for ResponseBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let unread = self.unread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (Some(mut body), in_flight) = (unread, self.in_flight.take()) else {
            return;
        };
        // Still in flight while draining: the idle deadline must not cut the upload short.
        tokio::spawn(async move {
            let drain = async {
                let mut read = 0;
                while read <= DRAIN_LIMIT {
                    let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
                    match tokio::time::timeout(DRAIN_GAP, next).await {
                        Ok(Some(Ok(frame))) => {
                            read += frame.data_ref().map_or(0, |d| d.len());
                        }
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            drop(in_flight);
        });
    }
}
