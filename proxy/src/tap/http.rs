//! `GET /tap?filters` on the admin port: NDJSON, one summary a line, as
//! requests finish, after a first line saying the stream is live and its
//! bounds (`{"tapping":{"limit":100,"seconds":60}}`: hyper sends the
//! response head with the first bytes, so a client knows from this line
//! on that it misses nothing). The stream ends after its `limit` or `seconds`, when
//! the client goes away, or never starts (400) on a bad filter; 503 when
//! [`super::MAX_STREAMS`] are open. A stream that falls behind gets
//! `{"dropped": n}` where it lost `n` summaries.

use super::filter::Filter;
use super::{Hub, Stream};
use crate::admin::{text, Body};
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

pub fn handle(hub: &Arc<Hub>, method: &Method, query: &str) -> Response<Body> {
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let filter = match Filter::parse(query) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("cannot tap: {e}\n")),
    };
    let Some(stream) = hub.subscribe() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} tap streams are open already; try again later\n",
                super::MAX_STREAMS
            ),
        );
    };
    let first = serde_json::json!({ "tapping": {
        "limit": filter.limit, "seconds": filter.duration.as_secs() } });
    let state = Tapping {
        first: Some(Bytes::from(format!("{first}\n"))),
        deadline: Instant::now() + filter.duration,
        left: filter.limit,
        filter,
        stream,
    };
    let lines = futures_util::stream::unfold(state, Tapping::next_line);
    let body = StreamBody::new(futures_util::StreamExt::map(lines, |b| Ok(Frame::data(b))));
    let mut rsp = Response::new(body.boxed());
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}

struct Tapping {
    /// The line that opens the stream, until sent.
    first: Option<Bytes>,
    filter: Filter,
    stream: Stream,
    left: u64,
    deadline: Instant,
}

impl Tapping {
    /// The next line to send, or `None` when the stream is over.
    async fn next_line(mut self) -> Option<(Bytes, Self)> {
        if let Some(first) = self.first.take() {
            return Some((first, self));
        }
        while self.left > 0 {
            let received = tokio::time::timeout_at(self.deadline, self.stream.rx.recv()).await;
            let mut line = match received {
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(n))) => {
                    serde_json::to_vec(&serde_json::json!({ "dropped": n }))
                }
                Ok(Ok(s)) if self.filter.matches(&s) => {
                    self.left -= 1;
                    serde_json::to_vec(&*s)
                }
                Ok(Ok(_)) => continue,
            }
            .unwrap_or_default();
            line.push(b'\n');
            return Some((Bytes::from(line), self));
        }
        None
    }
}
