//! Message checks before anything else looks at a request: what HTTP
//! forbids (see [`crate::http::message`]), `Max-Forwards`, and the
//! listener's header and declared body size limits.

use super::Step;
use crate::http::call::{Answer, Call};
use crate::http::error::ProxyError;
use crate::http::message::{self, MaxForwards};
use http::header::{self, HeaderValue};
use http::{Request, Version};

#[derive(Clone, Copy, Debug, Default)]
pub struct Message;

impl<B> Step<B> for Message {
    fn step(&self, call: &mut Call<B>) -> Option<Answer> {
        let req = &mut call.req;
        if let Err(v) = message::check(req.method(), req.uri(), req.version(), req.headers()) {
            return Some(Err(v.into()));
        }
        match message::max_forwards(req.method(), req.headers()) {
            MaxForwards::Ignore => {}
            MaxForwards::Answer => return Some(Ok(message::final_recipient(req.method()))),
            MaxForwards::Forward(n) => {
                req.headers_mut()
                    .insert(header::MAX_FORWARDS, HeaderValue::from(n));
            }
        }
        let limits = &call.cx.view.listener().limits;
        let limit = limits.max_request_header_bytes;
        if (limit < 8192 || req.version() == Version::HTTP_2) && head_size(req) > limit {
            return Some(Err(ProxyError::HeadersTooLarge { limit }));
        }
        if let Some(max) = limits.max_request_body_bytes {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Some(Err(ProxyError::BodyTooLarge { limit: max }));
            }
        }
        None
    }
}

fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri
}
