//! A minimal HTTP/1.1 server for `/metrics`, on a thread of its own.
//!
//! Prometheus needs nothing more than `GET /metrics`; a full HTTP stack would add build time and
//! nothing else. Each connection gets one response and is closed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::Metrics;

/// A running metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it listens on (useful when port 0 was asked for).
    pub addr: SocketAddr,
}

/// Serves `metrics` on `addr` (`host:port`; port 0 picks a free one) until the process exits.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for /metrics on {addr}: {e}"),
        )
    })?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = respond(stream, &metrics) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
        })?;
    Ok(MetricsServer { addr: local })
}

fn respond(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = reader.into_inner();
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(json) = metrics.route(path, query) {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            json.len()
        )?;
        stream.write_all(json.as_bytes())?;
        return stream.flush();
    }
    let (status, ctype, body) = match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/" | "/ui" => (
            "200 OK",
            "text/html; charset=utf-8",
            crate::UI_HTML.to_string(),
        ),
        "/api/dead-letters" => (
            "200 OK",
            "application/json",
            metrics.recent_dead_letters().json(),
        ),
        "/healthz" => (
            "200 OK",
            "text/plain; charset=utf-8",
            "iotflow: see /metrics\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
