//! Reading a request head within limits, before hyper sees it: hyper has one buffer size for
//! the whole head, not a request-line limit, a header count and a header byte budget of its own.

use std::io::{BufRead, ErrorKind};

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// The request line is longer than allowed (414).
    LineTooLong,
    /// Too many header lines or bytes (431).
    HeadersTooLarge,
    /// Not an HTTP/1.x request (400).
    Malformed(&'static str),
    /// The client took longer than the read timeout (408).
    TimedOut,
    /// The client closed the connection, or it failed, before the head was complete.
    Gone,
}

/// A request head, as far as this server cares.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) method: String,
    pub(super) target: String,
    /// `HTTP/1.0` or `HTTP/1.1` (any other minor version counts as 1.1).
    pub(super) http10: bool,
    pub(super) host: Option<String>,
}

/// The limits of [`read_head`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) request_line: usize,
    pub(super) headers: usize,
    pub(super) header_bytes: usize,
}

/// Reads one line into `line` (without the LF; a CR stays), reading at most `max` bytes of it.
/// `before_read` runs before each read from `reader` (it sets the socket timeout to what is left
/// of the deadline).
fn read_line<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
    too_long: HeadError,
    before_read: &mut dyn FnMut() -> Result<(), HeadError>,
) -> Result<(), HeadError> {
    line.clear();
    loop {
        before_read()?;
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(_) => return Err(HeadError::Gone),
        };
        if available.is_empty() {
            return Err(HeadError::Gone);
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if line.len() + take > max {
            return Err(too_long);
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(());
        }
    }
}

/// Reads the request line and headers, within `limits`. Never holds more than the longest line
/// allowed plus the reader's buffer.
pub(super) fn read_head<R: BufRead>(
    reader: &mut R,
    limits: Limits,
    before_read: &mut dyn FnMut() -> Result<(), HeadError>,
) -> Result<Head, HeadError> {
    let mut line = Vec::with_capacity(256);
    read_line(
        reader,
        &mut line,
        limits.request_line,
        HeadError::LineTooLong,
        before_read,
    )?;
    if line == b"\r" || line.is_empty() {
        // RFC 9112 2.2: a server should ignore one empty line before the request line.
        read_line(
            reader,
            &mut line,
            limits.request_line,
            HeadError::LineTooLong,
            before_read,
        )?;
    }
    let request_line = std::str::from_utf8(strip_cr(&line))
        .map_err(|_| HeadError::Malformed("the request line is not UTF-8"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "the request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/1.") {
        return Err(HeadError::Malformed("not an HTTP/1.x request"));
    }
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        http10: version == "HTTP/1.0",
        host: None,
    };
    let mut headers = 0usize;
    let mut header_bytes = 0usize;
    loop {
        let left = limits.header_bytes.saturating_sub(header_bytes);
        read_line(
            reader,
            &mut line,
            left,
            HeadError::HeadersTooLarge,
            before_read,
        )?;
        header_bytes += line.len() + 1;
        let text = strip_cr(&line);
        if text.is_empty() {
            return Ok(head);
        }
        headers += 1;
        if headers > limits.headers || header_bytes > limits.header_bytes {
            return Err(HeadError::HeadersTooLarge);
        }
        if text[0] == b' ' || text[0] == b'\t' {
            return Err(HeadError::Malformed("obsolete header line folding"));
        }
        let text = std::str::from_utf8(text).map_err(|_| HeadError::Malformed("header"))?;
        let (name, value) = text
            .split_once(':')
            .ok_or(HeadError::Malformed("a header line without ':'"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed("a header name with white space"));
        }
        if name.eq_ignore_ascii_case("host") {
            if head.host.is_some() {
                return Err(HeadError::Malformed("more than one Host header"));
            }
            head.host = Some(value.trim().to_string());
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const LIMITS: Limits = Limits {
        request_line: 8 << 10,
        headers: 64,
        header_bytes: 32 << 10,
    };

    fn parse(raw: &[u8]) -> Result<Head, HeadError> {
        read_head(&mut BufReader::new(raw), LIMITS, &mut || Ok(()))
    }

    /// Counts the bytes read through it.
    struct Counting<R>(R, Arc<AtomicUsize>);

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.fetch_add(n, Ordering::Relaxed);
            Ok(n)
        }
    }

    #[test]
    fn an_endless_line_is_cut_off_after_the_limit_and_a_buffer() {
        for (prefix, expected) in [
            (&b"GET /"[..], HeadError::LineTooLong),
            (&b"GET / HTTP/1.1\r\nX-A: "[..], HeadError::HeadersTooLarge),
        ] {
            let read = Arc::new(AtomicUsize::new(0));
            let endless = Read::chain(prefix, std::io::repeat(b'a'));
            let mut reader = BufReader::with_capacity(4096, Counting(endless, read.clone()));
            assert_eq!(
                read_head(&mut reader, LIMITS, &mut || Ok(())),
                Err(expected)
            );
            let read = read.load(Ordering::Relaxed);
            // The longest line allowed, the request line before it, one buffer.
            assert!(read <= (32 << 10) + 64 + 4096, "read {read} bytes");
        }
    }

    #[test]
    fn heads_within_the_limits_parse() {
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9249\r\nAccept: */*\r\n\r\n"),
            Ok(Head {
                method: "GET".into(),
                target: "/metrics?x=1".into(),
                http10: false,
                host: Some("127.0.0.1:9249".into()),
            })
        );
        // Bare LF line ends and one leading empty line are fine; HTTP/1.0 needs no Host.
        assert_eq!(
            parse(b"\r\nGET / HTTP/1.0\n\n").map(|h| (h.http10, h.host)),
            Ok((true, None))
        );
        // Exactly at the limit: 8 KiB before the LF, CR included.
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat((8 << 10) - 15));
        assert_eq!(line.len() - 1, 8 << 10);
        assert!(parse(format!("{line}Host: x\r\n\r\n").as_bytes()).is_ok());
        let headers: String = (0..64).map(|i| format!("X-{i}: {i}\r\n")).collect();
        assert!(parse(format!("GET / HTTP/1.1\r\n{headers}\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn heads_beyond_the_limits_or_malformed_are_refused() {
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat((8 << 10) - 14));
        assert_eq!(parse(line.as_bytes()), Err(HeadError::LineTooLong));
        let headers: String = (0..65).map(|i| format!("X-{i}: {i}\r\n")).collect();
        assert_eq!(
            parse(format!("GET / HTTP/1.1\r\n{headers}\r\n").as_bytes()),
            Err(HeadError::HeadersTooLarge)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(32 << 10));
        assert_eq!(parse(big.as_bytes()), Err(HeadError::HeadersTooLarge));
        for raw in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(HeadError::Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(raw),
                parse(raw)
            );
        }
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Err(HeadError::Gone)
        );
    }
}
