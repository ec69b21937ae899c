//! HTTP/2 between proxies: both ends of a peer connection tuned for many
//! streams, since one connection carries every request between two
//! proxies (see `client/mesh.rs`). The connection window is large so that
//! concurrent streams never wait on each other for flow control; the
//! streams a peer may open at once follow the listener's connection limit
//! (each stream stands for what would have been a client connection).

use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

/// The flow-control window of a whole peer connection: 1 GiB.
pub const CONNECTION_WINDOW: u32 = 1 << 30;

/// The flow-control window of one stream: 2 MiB, hyper's client default,
/// so that one slow reader buffers at most that much.
pub const STREAM_WINDOW: u32 = 2 << 20;

/// Tunes the client side of a connection to a peer proxy.
pub fn tune_client(builder: &mut http2::Builder<TokioExecutor>) {
    builder
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW);
}

/// Tunes the server side of a connection from a peer proxy (mutual TLS
/// with a mesh identity) on a listener with these limits.
pub fn tune_server(builder: &mut auto::Builder<TokioExecutor>, limits: &remora_api::Limits) {
    let streams = limits.max_connections.min(u32::MAX as usize) as u32;
    builder
        .http2()
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .max_concurrent_streams(streams);
}
