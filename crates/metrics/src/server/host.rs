//! The `Host` check of the admin server (see the module docs of `server.rs`): against DNS
//! rebinding, only names that are this server's own are served.

use std::net::{IpAddr, SocketAddr};

/// Who may be named in `Host`.
#[derive(Debug)]
pub(super) struct HostPolicy {
    /// Lower-case names and address literals (IPv6 without brackets), ports stripped.
    names: Vec<String>,
    /// The address bound to, unless it is the unspecified address.
    bound: Option<IpAddr>,
    /// Bound to a non-loopback (or the unspecified) address: reachable from the network.
    network: bool,
}

impl HostPolicy {
    pub(super) fn new(listen: &str, local: SocketAddr, allowed: &[String]) -> HostPolicy {
        let mut names: Vec<String> = allowed.iter().filter_map(|h| host_name(h)).collect();
        // The name the listen address was given as (`node-1:9249`), unless it is the
        // unspecified address: `Host: 0.0.0.0` names no server.
        if let Some(listen_host) = host_name(listen) {
            if !listen_host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
            {
                names.push(listen_host);
            }
        }
        let ip = canonical(local.ip());
        HostPolicy {
            names,
            bound: (!ip.is_unspecified()).then_some(ip),
            network: !ip.is_loopback(),
        }
    }

    /// Whether a request with `Host: host` arriving on `local` (the connection's own address)
    /// is for this server.
    pub(super) fn allows(&self, host: &str, local: IpAddr) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name == "localhost" || self.names.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>().map(canonical) {
            Ok(ip) => ip.is_loopback() || ip == canonical(local) || Some(ip) == self.bound,
            // A dotless name (a container, service or host name such as `iotflow-0`), on a
            // server the network can reach anyway: rebinding needs a name the attacker
            // controls in DNS, and such names have a dot.
            Err(_) => self.network && !name.contains('.'),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The host of a `Host` value (or of a `host:port` listen address): lower case, without the
/// port, the brackets of an IPv6 literal or a trailing dot. `None` when it is not a host.
fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    let port_ok = |port: &str| port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return Some(host.to_ascii_lowercase());
    }
    let host = match value.rsplit_once(':') {
        Some((host, port)) if port_ok(port) => host,
        Some(_) => return None,
        None => value,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_check_accepts_loopback_and_own_addresses_only() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let policy = HostPolicy::new("127.0.0.1:9249", "127.0.0.1:9249".parse().unwrap(), &[]);
        for good in [
            "localhost",
            "LocalHost:9249",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:9249",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9249",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(policy.allows(good, lo), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:9249",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.5:9249",
            "[::2]",
            "",
            "localhost:port",
            "local host",
            "[::1",
        ] {
            assert!(!policy.allows(bad, lo), "{bad}");
        }

        // Bound to all interfaces: the address a connection arrived on is this server.
        let any = HostPolicy::new("0.0.0.0:9249", "0.0.0.0:9249".parse().unwrap(), &[]);
        let eth: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(any.allows("10.0.0.5:9249", eth));
        assert!(any.allows("10.0.0.5", eth));
        assert!(!any.allows("10.0.0.6:9249", eth));
        assert!(!any.allows("0.0.0.0:9249", eth));
        assert!(!any.allows("metrics.example", eth));
        // ...and dotless service names, which only a loopback-bound server refuses.
        assert!(any.allows("iotflow-0:9249", eth));
        assert!(any.allows("publisher", eth));
        assert!(!policy.allows("publisher", lo));
        assert!(!policy.allows("x", lo));

        // Bound to a name and one address; with an allow-list.
        let named = HostPolicy::new(
            "Node-1.internal:9249",
            "10.0.0.5:9249".parse().unwrap(),
            &["prometheus-target.example:80".into(), "[fd00::5]".into()],
        );
        for good in [
            "node-1.internal",
            "NODE-1.INTERNAL:9249",
            "10.0.0.5:1234",
            "prometheus-target.example",
            "[fd00::5]:9249",
        ] {
            assert!(named.allows(good, eth), "{good}");
        }
        assert!(!named.allows("node-2.internal", eth));
    }
}
