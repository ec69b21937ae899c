//! Newline-delimited JSON over an HTTP body, the framing of the snapshot
//! stream in both directions: [`line`] encodes one message, [`Lines`] reads
//! one line at a time from a body however its frames split the bytes.

use crate::Error;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The longest line accepted (a NACK may carry many errors).
pub const MAX_LINE: usize = 1024 * 1024;

/// One message as compact JSON and a newline.
pub fn line<T: serde::Serialize>(msg: &T) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Reads the lines of a body.
pub struct Lines<B> {
    body: B,
    buf: BytesMut,
    /// Bytes at the start of `buf` known to hold no newline: each byte is
    /// searched once, however many frames a line takes.
    searched: usize,
    max: usize,
    done: bool,
}

impl<B> Lines<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    pub fn new(body: B) -> Self {
        Self::with_max(body, MAX_LINE)
    }

    /// Reads lines of at most `max` bytes.
    pub fn with_max(body: B, max: usize) -> Self {
        Lines {
            body,
            buf: BytesMut::new(),
            searched: 0,
            max,
            done: false,
        }
    }

    /// The next line without its newline (empty lines are skipped), or `None`
    /// at the end of the body. A last line without a newline still counts.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            if let Some(at) = self.buf[self.searched..].iter().position(|b| *b == b'\n') {
                let end = self.searched + at;
                // A whole line can arrive in the frame that passes `max`.
                if end > self.max {
                    return Err(Error::LineTooLong(self.max));
                }
                self.searched = 0;
                let line = self.buf.split_to(end + 1).freeze().slice(..end);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            self.searched = self.buf.len();
            if self.buf.len() > self.max {
                return Err(Error::LineTooLong(self.max));
            }
            if self.done {
                self.searched = 0;
                let rest = self.buf.split().freeze();
                let blank = rest.iter().all(u8::is_ascii_whitespace);
                return Ok((!blank).then_some(rest));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(Error::Body(e.to_string())),
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    #[tokio::test]
    async fn lines_split_across_frames() {
        let chunks = ["{\"a\":", "1}\n\n{\"b\"", ":2}\n{\"c\":3}"];
        let frames = chunks.map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
        let mut lines = Lines::new(StreamBody::new(futures_util::stream::iter(frames)));
        let mut got = Vec::new();
        while let Some(l) = lines.next().await.unwrap() {
            got.push(String::from_utf8(l.to_vec()).unwrap());
        }
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[tokio::test]
    async fn a_line_too_long_is_an_error() {
        let big = Bytes::from(vec![b'x'; 64]);
        let frames = [Ok::<_, std::convert::Infallible>(Frame::data(big))];
        let mut lines = Lines::new(StreamBody::new(futures_util::stream::iter(frames)));
        lines.max = 16;
        assert!(matches!(lines.next().await, Err(Error::LineTooLong(16))));
    }

    /// Found by the `ndjson` fuzz target: a line longer than the maximum was
    /// returned when it came whole, newline included, in one frame.
    #[tokio::test]
    async fn a_line_too_long_is_an_error_even_in_one_frame() {
        let body = Bytes::from_static(b"short\nthis line is too long\nx\n");
        let frames = [Ok::<_, std::convert::Infallible>(Frame::data(body))];
        let mut lines = Lines::with_max(StreamBody::new(futures_util::stream::iter(frames)), 8);
        assert_eq!(lines.next().await.unwrap().unwrap(), "short");
        assert!(matches!(lines.next().await, Err(Error::LineTooLong(8))));
    }
}
