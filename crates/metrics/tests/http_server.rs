//! The metrics endpoint against real TCP clients: bad input is cut off, slow clients do not
//! blind `/metrics`, and only requests for this server's own host names are served.
//!
//! Every test starts its own server on `127.0.0.1:0`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use iotflow_metrics::{detached, serve, serve_with, ServerOptions};

fn start() -> SocketAddr {
    serve("127.0.0.1:0", detached()).expect("serve").addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `request` and reads the whole response (the server closes after it).
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("read the response");
    String::from_utf8_lossy(&response).into_owned()
}

fn get(addr: SocketAddr, path: &str, host: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n"),
    )
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// Whether `s` is still open with nothing to read: the server is still waiting for it.
fn open_and_unanswered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let waiting = matches!(s.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    waiting
}

#[test]
fn an_endless_request_line_is_cut_off_and_the_connection_closed() {
    let addr = start();
    let mut client = connect(addr);
    let mut writer = client.try_clone().unwrap();
    // What today's kernels buffer on loopback (send plus receive buffers) is a few MiB; a
    // server that kept reading would take all of it.
    const CAP: usize = 256 << 20;
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 << 10];
        writer.write_all(b"GET /").unwrap();
        let mut sent = 5usize;
        while sent < CAP {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => return (sent, Some(e.kind())),
            }
        }
        (sent, None)
    });
    // The server answers 414 and closes; a reset may destroy the answer on the way (the client
    // keeps sending), but the connection must end either way.
    let mut response = Vec::new();
    let read = client.read_to_end(&mut response);
    let (sent, failure) = sender.join().unwrap();
    assert!(
        failure.is_some(),
        "the server took all {sent} bytes of a request line without closing"
    );
    assert!(
        sent < 64 << 20,
        "{sent} bytes went out before the server closed"
    );
    match read {
        Ok(_) => assert!(
            response.starts_with(b"HTTP/1.1 414 "),
            "{}",
            String::from_utf8_lossy(&response)
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    // And the server still serves.
    assert_eq!(
        status(&get(addr, "/metrics", "127.0.0.1")),
        "HTTP/1.1 200 OK"
    );
}

#[test]
fn oversized_heads_get_414_or_431_and_are_closed() {
    let addr = start();
    // A line over 8 KiB that never ends: the answer comes without waiting for its end.
    let mut s = connect(addr);
    s.write_all(format!("GET /{}", "a".repeat(9 << 10)).as_bytes())
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("answer, then EOF");
    assert_eq!(status(&response), "HTTP/1.1 414 URI Too Long");

    let many: String = (0..65).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let r = exchange(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: localhost\r\n{many}\r\n"),
    );
    assert_eq!(status(&r), "HTTP/1.1 431 Request Header Fields Too Large");
    let big = "b".repeat(33 << 10);
    let r = exchange(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: localhost\r\nX: {big}\r\n\r\n"),
    );
    assert_eq!(status(&r), "HTTP/1.1 431 Request Header Fields Too Large");
    let r = exchange(addr, "GET /metrics\r\n\r\n");
    assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
}

#[test]
fn stalled_clients_do_not_keep_another_from_metrics() {
    let addr = start();
    // Four clients that connect and then stall mid-request.
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut s = connect(addr);
    // Well inside the server's own read timeout (10 s): the answer must not wait for it.
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(
        format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("no answer while other clients stall: {e}"));
    assert_eq!(status(&response), "HTTP/1.1 200 OK");
    assert!(response.contains("iotflow_process_start_time_seconds"));
    // Served while the stalled clients were still being waited for, not after them.
    for c in &stalled {
        assert!(
            open_and_unanswered(c),
            "a stalled client was answered or closed after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn when_every_connection_thread_is_busy_new_clients_get_503_and_the_server_recovers() {
    let options = ServerOptions {
        max_connections: 2,
        ..ServerOptions::default()
    };
    let addr = serve_with("127.0.0.1:0", detached(), options)
        .expect("serve")
        .addr;
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    // Wait until both are being served (each holds a thread), polling with a cheap request that
    // is answered 503 while they do.
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        // Connect and read without sending, so the refusal is not lost to a reset.
        let mut s = connect(addr);
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        if status(&r) == "HTTP/1.1 503 Service Unavailable" {
            break r;
        }
        assert!(Instant::now() < deadline, "never refused: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(busy.contains("Retry-After: 1"), "{busy}");
    drop(stalled);
    // The stalled clients left: their threads end and the server serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(addr, "/metrics", "localhost");
        if status(&r) == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_foreign_host_gets_403_and_own_hosts_200() {
    let addr = start();
    let port = addr.port();
    for path in ["/metrics", "/api/dead-letters", "/"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("127.0.0.1.evil.example:{port}"),
            "localhost.evil.example".to_string(),
            // A loopback-bound server takes no dotless names but `localhost`.
            format!("iotflow-0:{port}"),
        ] {
            let r = get(addr, path, &host);
            assert_eq!(
                status(&r),
                "HTTP/1.1 403 Forbidden",
                "{path} for Host {host}"
            );
            assert!(!r.contains("iotflow_") && !r.contains("<html"), "{r}");
        }
    }
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        "127.9.9.9".to_string(),
        format!("[::1]:{port}"),
        "LOCALHOST".to_string(),
    ] {
        let r = get(addr, "/api/dead-letters", &host);
        assert_eq!(status(&r), "HTTP/1.1 200 OK", "Host {host}");
        assert!(r.ends_with("[]"), "{r}");
    }
    // HTTP/1.1 without Host is malformed; HTTP/1.0 without it is served.
    let r = exchange(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status(&r), "HTTP/1.1 400 Bad Request");
    let r = exchange(addr, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
}

#[test]
fn allowed_host_names_are_served() {
    let options = ServerOptions {
        allowed_hosts: vec!["metrics.example".into()],
        ..ServerOptions::default()
    };
    let addr = serve_with("127.0.0.1:0", detached(), options)
        .expect("serve")
        .addr;
    assert_eq!(
        status(&get(addr, "/metrics", "Metrics.Example:9249")),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&get(addr, "/metrics", "other.example")),
        "HTTP/1.1 403 Forbidden"
    );
}

/// This machine's address on its default route, if it has one (a UDP "connect" sends nothing).
fn non_loopback_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_server_on_another_interface_serves_its_own_address_as_host() {
    let Some(ip) = non_loopback_address() else {
        eprintln!("no non-loopback IPv4 address on this machine: only the unit tests cover this");
        return;
    };
    // Bound to that address: Prometheus on another machine scrapes http://IP:PORT/metrics.
    let addr = serve(&format!("{ip}:0"), detached()).expect("serve").addr;
    let port = addr.port();
    assert_eq!(
        status(&get(addr, "/metrics", &format!("{ip}:{port}"))),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&get(addr, "/metrics", &ip.to_string())),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&get(addr, "/metrics", "evil.example")),
        "HTTP/1.1 403 Forbidden"
    );
    // Bound to all interfaces: the address the connection arrived on.
    let any = serve("0.0.0.0:0", detached()).expect("serve").addr;
    let via = SocketAddr::new(ip, any.port());
    assert_eq!(
        status(&get(via, "/metrics", &format!("{ip}:{}", any.port()))),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&get(via, "/metrics", &format!("0.0.0.0:{}", any.port()))),
        "HTTP/1.1 403 Forbidden"
    );
    // A container scraped by its service name (Prometheus in deploy/compose).
    assert_eq!(
        status(&get(via, "/metrics", &format!("iotflow-0:{}", any.port()))),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&get(
            via,
            "/metrics",
            &format!("evil.example:{}", any.port())
        )),
        "HTTP/1.1 403 Forbidden"
    );
}

/// `/readyz` answers what the process last said about itself: 503 with the reason while it
/// starts, forms its cluster or drains, 200 once running; `/healthz` stays 200 throughout.
#[test]
fn readiness_says_why() {
    let metrics = detached();
    let addr = serve("127.0.0.1:0", metrics.clone()).expect("serve").addr;
    let r = get(addr, "/readyz", "127.0.0.1");
    assert_eq!(
        status(&r),
        "HTTP/1.1 200 OK",
        "a job without phases is ready"
    );
    metrics.set_readiness(false, "forming the cluster: connecting to the peers");
    let r = get(addr, "/readyz", "127.0.0.1");
    assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
    assert!(
        r.ends_with("not ready: forming the cluster: connecting to the peers\n"),
        "{r}"
    );
    let r = get(addr, "/healthz", "127.0.0.1");
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert!(
        r.ends_with("alive: forming the cluster: connecting to the peers\n"),
        "{r}"
    );
    metrics.set_readiness(true, "running");
    let r = get(addr, "/readyz", "127.0.0.1");
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert!(r.ends_with("ready: running\n"), "{r}");
}
