//! The pieces of iotflow's one HTTP server stack (hyper on tokio) that more than one server
//! needs: binding a listener with a runtime to serve it, and the listen address of process `n`.
//!
//! The admin server ([`crate::serve`]) and the Elasticsearch stand-in (`testing/es-stand-in`)
//! both bind here and serve connections with `hyper::server::conn::http1`.

use std::fmt;

/// Binds `addr` (`host:port`, port 0 picks a free one) as a non-blocking listener, ready for
/// `tokio::net::TcpListener::from_std` on any runtime.
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds `addr` and builds a current-thread runtime to serve it on: the caller moves both to a
/// thread of its own and runs its accept loop with `runtime.block_on`. Both fail here, at the
/// call, not later in that thread.
pub fn listen(addr: &str) -> std::io::Result<(tokio::runtime::Runtime, tokio::net::TcpListener)> {
    let listener = bind(addr)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    Ok((runtime, listener))
}

/// A listen address that cannot be shifted to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

/// Where process `process` of a job started with `listen` (`host:port`) serves its endpoint:
/// the port plus the process index, so the processes of one job on one machine do not collide.
/// Port 0 (any free port) stays 0. A port pushed past 65535 is an error, not a wrap-around.
///
/// ```
/// use iotflow_metrics::process_address;
/// assert_eq!(process_address("0.0.0.0:9249", 2).unwrap(), "0.0.0.0:9251");
/// assert_eq!(process_address("127.0.0.1:0", 3).unwrap(), "127.0.0.1:0");
/// assert!(process_address("127.0.0.1:65535", 1).is_err());
/// ```
pub fn process_address(listen: &str, process: usize) -> Result<String, AddressError> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| AddressError(format!("listen address `{listen}` must be host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| AddressError(format!("listen address `{listen}`: bad port")))?;
    let port = if port == 0 {
        0
    } else {
        usize::from(port)
            .checked_add(process)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                AddressError(format!(
                    "listen address `{listen}` + process {process}: port out of range"
                ))
            })?
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_addresses_shift_the_port_and_never_wrap() {
        assert_eq!(
            process_address("127.0.0.1:9249", 0).unwrap(),
            "127.0.0.1:9249"
        );
        assert_eq!(
            process_address("127.0.0.1:9249", 3).unwrap(),
            "127.0.0.1:9252"
        );
        assert_eq!(process_address("[::]:9249", 1).unwrap(), "[::]:9250");
        assert_eq!(process_address(":9249", 1).unwrap(), ":9250");
        assert_eq!(process_address("host:0", 7).unwrap(), "host:0");
        assert_eq!(process_address("h:65534", 1).unwrap(), "h:65535");
        assert!(process_address("h:65535", 1).is_err());
        assert!(process_address("h:9249", usize::MAX).is_err());
        assert!(process_address("h:65536", 0).is_err());
        assert!(process_address("h:port", 0).is_err());
        assert!(process_address("no-port", 0).is_err());
    }
}
