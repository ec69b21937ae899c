//! `remora-proxy tap --admin ADDR [filters]`: prints one line per request
//! from a proxy's `/tap` stream, until its limit or time is up (or Ctrl-C).

use super::Summary;
use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:4191")]
    pub admin: std::net::SocketAddr,
    #[arg(long)]
    pub listener: Option<String>,
    #[arg(long)]
    pub route: Option<String>,
    #[arg(long)]
    pub backend: Option<String>,
    #[arg(long)]
    pub method: Option<String>,
    #[arg(long)]
    pub authority: Option<String>,
    /// A path prefix.
    #[arg(long)]
    pub path: Option<String>,
    /// A status (503) or a class (5xx).
    #[arg(long)]
    pub status: Option<String>,
    /// A proxy error cause (`no-route`, `upstream-connect`, ...), or `any`.
    #[arg(long)]
    pub error: Option<String>,
    /// The client's mesh identity (SPIFFE ID).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Stop after this many requests (the proxy caps it at 10000).
    #[arg(long, default_value_t = super::filter::DEFAULT_LIMIT)]
    pub limit: u64,
    /// Stop after this many seconds (the proxy caps it at 600).
    #[arg(long, default_value_t = super::filter::DEFAULT_SECONDS)]
    pub seconds: u64,
    /// Print the proxy's NDJSON as it comes instead of one line of text.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(tap(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn tap(args: &Args) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(args.admin)
        .await
        .with_context(|| format!("connect to the admin port {}", args.admin))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(format!("/tap?{}", query(args)))
        .header(http::header::HOST, args.admin.to_string())
        .body(Empty::<bytes::Bytes>::new())?;
    let mut rsp = send.send_request(req).await?;
    if !rsp.status().is_success() {
        let body = rsp.into_body().collect().await?.to_bytes();
        bail!("{}", String::from_utf8_lossy(&body).trim());
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = rsp.body_mut().frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(i + 1);
            print_line(&line[..i], args.json);
        }
    }
    if buf.has_remaining() {
        print_line(&buf, args.json);
    }
    Ok(())
}

fn print_line(line: &[u8], json: bool) {
    let text = String::from_utf8_lossy(line);
    if let Ok(Opening { tapping }) = serde_json::from_slice::<Opening>(line) {
        eprintln!(
            "tapping (at most {} requests, {} s)",
            tapping.limit, tapping.seconds
        );
        return;
    }
    if json {
        println!("{text}");
        return;
    }
    match serde_json::from_slice::<Summary>(line) {
        Ok(s) => println!("{}", render(&s)),
        Err(_) => println!("{text}"),
    }
}

/// The stream's first line.
#[derive(serde::Deserialize)]
struct Opening {
    tapping: Bounds,
}

#[derive(serde::Deserialize)]
struct Bounds {
    limit: u64,
    seconds: u64,
}

/// One request on one line: route and backend, request, status, latency,
/// who asked, and the error cause.
pub fn render(s: &Summary) -> String {
    let mut out = format!(
        "{} {}/{} {} {}{} -> {} {:.1}ms",
        s.listener,
        or_dash(&s.route),
        or_dash(&s.backend),
        s.method,
        s.authority,
        s.path,
        s.status,
        s.latency_ms
    );
    if let Some(e) = s.endpoint {
        out.push_str(&format!(" endpoint={e}"));
    }
    out.push_str(&format!(" client={}", s.client));
    if let Some(id) = &s.client_id {
        out.push_str(&format!(" id={id}"));
    }
    if !s.error.is_empty() {
        out.push_str(&format!(" error={}", s.error));
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The filters as `/tap`'s query string.
fn query(a: &Args) -> String {
    let fields = [
        ("listener", &a.listener),
        ("route", &a.route),
        ("backend", &a.backend),
        ("method", &a.method),
        ("authority", &a.authority),
        ("path", &a.path),
        ("status", &a.status),
        ("error", &a.error),
        ("client_id", &a.client_id),
    ];
    let mut q = format!("limit={}&seconds={}", a.limit, a.seconds);
    for (k, v) in fields {
        if let Some(v) = v {
            q.push_str(&format!("&{k}={}", encode(v)));
        }
    }
    q
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
