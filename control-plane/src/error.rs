//! The control plane's one error type: what can go wrong with a
//! subscription, and the one place ([`Error::status`]) that maps it to an
//! HTTP status. Every variant is the subscriber's fault (a 4xx): internal
//! failures end the stream instead and are logged.

use http::StatusCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the first line must be a Hello: {0}")]
    BadHello(String),
    #[error("no Hello line within {0:?}")]
    HelloTimeout(Duration),
    #[error("the request body ended before a Hello line")]
    NoHello,
    #[error("unknown workload `{workload}`; the mesh has: {known}")]
    UnknownWorkload { workload: String, known: String },
    #[error("a line is longer than {0} bytes")]
    LineTooLong(usize),
    #[error("reading the request body: {0}")]
    Body(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownWorkload { .. } => StatusCode::NOT_FOUND,
            Error::HelloTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::LineTooLong(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadHello(_) | Error::NoHello | Error::Body(_) => StatusCode::BAD_REQUEST,
        }
    }
}
