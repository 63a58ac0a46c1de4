//! Reading a process's /metrics: plain HTTP GETs through reqwest (blocking), the failure
//! reasons in the status table's words, and the two scrapes an interval apart a status is
//! computed from.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iotflow_metrics::Exposition;

use super::model::{assess, ProcessStatus};
use super::targets::Target;

/// GET `path` on `endpoint` (plain HTTP, reqwest); the body of a 200 response, or why not.
pub fn http_get(endpoint: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://{endpoint}{path}"))
        .header(reqwest::header::ACCEPT, "text/plain")
        .send()
        .map_err(|e| describe(&e, timeout))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )
        .trim_end()
        .to_string());
    }
    response.text().map_err(|e| describe(&e, timeout))
}

/// Why a request failed, in the words the status table uses.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    use std::io::ErrorKind::*;
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ConnectionRefused => return "connection refused".into(),
                TimedOut | WouldBlock => return format!("no answer within {timeout:?}"),
                ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        source = s.source();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
/// Scrapes `t` twice `interval` apart and assesses it; DOWN with the reason when a scrape fails.
pub(super) fn probe(t: &Target, interval: Duration, timeout: Duration) -> ProcessStatus {
    let first = match http_get(&t.endpoint, "/metrics", timeout) {
        Ok(body) => body,
        Err(reason) => return ProcessStatus::down(t, reason),
    };
    let t0 = Instant::now();
    if let Some(rest) = interval.checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    let second = match http_get(&t.endpoint, "/metrics", timeout) {
        Ok(body) => body,
        Err(reason) => {
            return ProcessStatus::down(
                t,
                format!("stopped answering between the scrapes: {reason}"),
            )
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    assess(
        t,
        &Exposition::parse(&first),
        &Exposition::parse(&second),
        seconds,
        now,
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A peer that answers every connection with `raw` and closes (not an HTTP server: it
    /// plays canned bytes, including ones no HTTP server would send).
    fn canned(raw: &'static [u8]) -> String {
        let listener = iotflow_metrics::http::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(false).unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut head = [0u8; 4096];
                let _ = std::io::Read::read(&mut s, &mut head);
                let _ = s.write_all(raw);
            }
        });
        endpoint
    }

    #[test]
    fn http_responses() {
        let get = |raw| http_get(&canned(raw), "/metrics", Duration::from_secs(5));
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
            Ok("abc".into())
        );
        assert_eq!(
            get(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"),
            Err("HTTP 404 Not Found".into())
        );
        assert_eq!(
            get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            Ok("abcde".into())
        );
        assert!(get(b"").is_err());
        assert!(get(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
