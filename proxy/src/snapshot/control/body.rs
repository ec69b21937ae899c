//! The subscription's request body: the proxy's lines to the control plane
//! (its hello, an ACK or NACK per snapshot, stats reports when asked for).

use crate::metrics::Metrics;
use bytes::Bytes;
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The report interval the control plane asked for (milliseconds, at
/// least 100), if it did.
pub(super) fn stats_interval(headers: &http::HeaderMap) -> Option<Duration> {
    let ms: u64 = headers
        .get(remora_api::stats::STATS_INTERVAL)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms.max(100)))
}

/// Sends a stats report on the subscription every `every`.
pub(super) async fn send_stats(every: Duration, metrics: Arc<Metrics>, tx: mpsc::Sender<Bytes>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = remora_api::stats::Report::Stats(crate::stats::report(&metrics));
        if tx.send(line(&report)).await.is_err() {
            return;
        }
    }
}

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn line<T: serde::Serialize>(msg: &T) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The request body: lines from the channel as data frames, until it closes.
pub(super) struct Lines(pub(super) mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
