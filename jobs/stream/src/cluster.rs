//! Forming the timely cluster: who the peers are, connecting to them, and what happens when one
//! goes away.
//!
//! Timely's own start-up connects with a fixed one-second retry, prints to stdout, waits forever
//! and trusts whatever connects. Here the processes connect themselves and hand the sockets to
//! timely ([`initialize_networking_from_sockets`]):
//! - peers come from a host file, a DNS pattern (`iotflow-{i}.iotflow-peers:2101`, a
//!   StatefulSet's ordinal names) or `localhost:2101+i`;
//! - a peer that cannot be reached is named in the log and retried with backoff, up to a
//!   deadline, after which the process fails with the peer's index, address and last error;
//! - a handshake checks that both ends are iotflow processes of the same shape (`-n`, `-w`): a
//!   process started with another shape (an old pod during a rescale) is refused and named;
//! - TCP keepalive notices a peer whose machine vanished without closing the connection;
//! - when an established peer connection breaks (the peer died), timely's network thread panics;
//!   [`exit_when_a_peer_is_lost`] turns that into a logged error and a prompt exit, so the
//!   orchestrator restarts the cluster instead of the survivors hanging without progress.
//!   Nothing is lost by that: offsets are only committed for data every sink stored.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::Hooks;

/// First bytes of the handshake: an iotflow cluster peer, protocol 1.
const MAGIC: &[u8; 8] = b"IOTFLOW1";
/// How a connection refused for its shape begins.
const REFUSED: &str = "it runs as";
/// The process exit status when a peer is lost.
pub const PEER_LOST_EXIT: i32 = 3;

/// The shape of the cluster and where its processes are.
#[derive(Clone, Debug)]
pub struct ClusterArgs {
    /// Worker threads in this process (the same in every process).
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// File of `host:port` lines, one per process.
    pub hostfile: Option<String>,
    /// Peer address pattern, `{i}` standing for the process index.
    pub peers: Option<String>,
    /// Address this process listens on for its peers (default: its own address).
    pub listen: Option<String>,
    /// How long to wait for the peers at start (0: forever).
    pub peer_timeout: Duration,
    /// Whether processes may share a machine (`-p N`): then each moves its metrics port by its
    /// index. `--process auto` (one process per host, a pod each) keeps the configured port.
    pub shared_host: bool,
}

impl ClusterArgs {
    /// One process of `workers` threads, no peers.
    pub fn single(workers: usize) -> ClusterArgs {
        ClusterArgs {
            workers,
            processes: 1,
            process: 0,
            hostfile: None,
            peers: None,
            listen: None,
            peer_timeout: Duration::from_secs(300),
            shared_host: true,
        }
    }

    /// The address of every process, in index order.
    pub fn addresses(&self) -> anyhow::Result<Vec<String>> {
        addresses(
            self.processes,
            self.hostfile.as_deref(),
            self.peers.as_deref(),
        )
    }
}

/// The address of every one of `processes` processes: from the host file (one `host:port` per
/// line; blank lines and `#` comments skipped; at least `processes` lines), else from the
/// pattern (`{i}` replaced by the index), else `localhost:2101+i`.
pub fn addresses(
    processes: usize,
    hostfile: Option<&str>,
    pattern: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(processes > 0, "the cluster needs at least one process");
    let all: Vec<String> = match (hostfile, pattern) {
        (Some(_), Some(_)) => bail!("give the peers as a host file or as a pattern, not both"),
        (Some(file), None) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the host file {file}"))?;
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            anyhow::ensure!(
                lines.len() >= processes,
                "the host file {file} lists {} addresses for {processes} processes",
                lines.len()
            );
            lines.into_iter().take(processes).collect()
        }
        (None, Some(p)) => {
            anyhow::ensure!(
                p.contains("{i}"),
                "the peer pattern `{p}` has no {{i}} for the process index"
            );
            (0..processes)
                .map(|i| p.replace("{i}", &i.to_string()))
                .collect()
        }
        (None, None) => (0..processes)
            .map(|i| format!("localhost:{}", 2101 + i))
            .collect(),
    };
    for (i, a) in all.iter().enumerate() {
        let port = a.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        anyhow::ensure!(
            matches!(port, Some(Ok(_))),
            "the address of process {i}, `{a}`, is not host:port"
        );
    }
    Ok(all)
}

/// The process index from a host name ending in `-N` (a StatefulSet pod: `iotflow-3` is 3).
pub fn process_from_hostname(hostname: &str) -> anyhow::Result<usize> {
    let hostname = hostname.trim();
    let short = hostname.split('.').next().unwrap_or(hostname);
    short
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .with_context(|| {
            format!("--process auto: the host name `{hostname}` does not end in -<index>")
        })
}

/// This machine's host name: `$HOSTNAME`, else the kernel's.
pub fn hostname() -> anyhow::Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME") {
        if !h.trim().is_empty() {
            return Ok(h.trim().to_string());
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .context("reading the host name")
}

/// Connects this process to every peer: to the lower indices, accepting the higher ones. The
/// result has a socket per process, `None` at this process's index.
pub fn connect(args: &ClusterArgs) -> anyhow::Result<Vec<Option<TcpStream>>> {
    let addresses = args.addresses()?;
    let me = args.process;
    anyhow::ensure!(
        me < args.processes,
        "process {me} is not below the {} processes",
        args.processes
    );
    let deadline = (!args.peer_timeout.is_zero()).then(|| Instant::now() + args.peer_timeout);
    let shape = Shape {
        processes: args.processes as u64,
        workers: args.workers as u64,
    };
    // Listen first, so lower-indexed peers connecting to us meanwhile find the port open.
    let listener = if me + 1 < args.processes {
        let at = args.listen.clone().unwrap_or_else(|| addresses[me].clone());
        let listener = TcpListener::bind(&at).with_context(|| {
            format!("process {me}: listening for the peers on {at} (--cluster-listen)")
        })?;
        tracing::info!(process = me, listen = %at, "waiting for processes {}..{} to connect", me + 1, args.processes);
        Some(listener)
    } else {
        None
    };
    let accepting = listener.map(|listener| {
        let addresses = addresses.clone();
        std::thread::Builder::new()
            .name("iotflow-accept".into())
            .spawn(move || accept_peers(listener, &addresses, me, shape, deadline))
            .expect("spawn the accept thread")
    });
    let mut sockets: Vec<Option<TcpStream>> = Vec::with_capacity(args.processes);
    for (peer, address) in addresses.iter().enumerate().take(me) {
        sockets.push(Some(connect_peer(peer, address, me, shape, deadline)?));
    }
    sockets.push(None);
    if let Some(accepting) = accepting {
        let higher = accepting
            .join()
            .map_err(|_| anyhow::anyhow!("the accept thread panicked"))??;
        sockets.extend(higher.into_iter().map(Some));
    }
    tracing::info!(
        process = me,
        processes = args.processes,
        "connected to every peer"
    );
    Ok(sockets)
}

/// Builds timely's allocators over connected sockets (`processes > 1`) or for one process.
pub fn allocators(
    args: &ClusterArgs,
) -> anyhow::Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>)> {
    if args.processes == 1 {
        let config = if args.workers > 1 {
            timely::CommunicationConfig::Process(args.workers)
        } else {
            timely::CommunicationConfig::Thread
        };
        return config
            .try_build()
            .map_err(|e| anyhow::anyhow!("starting the workers: {e}"));
    }
    let sockets = connect(args)?;
    let hooks = Hooks::default();
    let process = ProcessBuilder::new_typed_vector(args.workers, hooks.refill.clone(), None);
    let (builders, guard) =
        initialize_networking_from_sockets(process, sockets, args.process, args.workers, hooks)
            .context("starting timely's network threads")?;
    Ok((
        builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        Box::new(guard),
    ))
}

/// Makes a broken peer connection end the process (status [`PEER_LOST_EXIT`]) with an error
/// naming the peer, instead of a panic on one of timely's network threads that leaves the
/// workers waiting forever for progress the peer will never send.
pub fn exit_when_a_peer_is_lost(addresses: Vec<String>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let peer = thread.name().and_then(|n| {
            n.strip_prefix("timely:recv-")
                .or_else(|| n.strip_prefix("timely:send-"))
                .and_then(|i| i.parse::<usize>().ok())
        });
        let Some(peer) = peer else {
            previous(info);
            return;
        };
        let cause = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let address = addresses.get(peer).map_or("?", String::as_str);
        tracing::error!(peer, %address, "lost process {peer} ({address}): {cause}; stopping so the cluster can be restarted (offsets are committed only for data every sink stored: nothing is lost)");
        eprintln!(
            "iotflow: error: lost process {peer} ({address}): {cause}; stopping so the cluster can be restarted"
        );
        std::process::exit(PEER_LOST_EXIT);
    }));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    processes: u64,
    workers: u64,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} processes × {} workers", self.processes, self.workers)
    }
}

/// Backoff between connection attempts: 250 ms doubling to 5 s.
fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(Duration::from_secs(5))
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Keepalive, no Nagle, blocking without timeouts: what timely's threads expect.
fn tune(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

fn read_u64(stream: &mut TcpStream) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    stream.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// One attempt: connect, say who we are, hear whether the peer agrees.
fn try_connect(address: &str, me: usize, shape: Shape) -> anyhow::Result<TcpStream> {
    let targets: Vec<SocketAddr> = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for target in &targets {
        match TcpStream::connect_timeout(target, Duration::from_secs(5)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(format!("{target}: {e}")),
        }
    }
    let Some(mut stream) = stream else {
        bail!("{}", last.unwrap_or_else(|| "no address".into()));
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut hello = Vec::with_capacity(32);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&(me as u64).to_be_bytes());
    hello.extend_from_slice(&shape.processes.to_be_bytes());
    hello.extend_from_slice(&shape.workers.to_be_bytes());
    stream.write_all(&hello).context("sending the handshake")?;
    let mut ok = [0u8; 1];
    stream
        .read_exact(&mut ok)
        .context("no handshake answer (is it an iotflow cluster port?)")?;
    let theirs = Shape {
        processes: read_u64(&mut stream).context("reading the handshake answer")?,
        workers: read_u64(&mut stream).context("reading the handshake answer")?,
    };
    if ok[0] != 1 {
        bail!("{REFUSED} {theirs}, this process as {shape}: every process must be started with the same -n and -w");
    }
    tune(&stream)?;
    Ok(stream)
}

fn connect_peer(
    peer: usize,
    address: &str,
    me: usize,
    shape: Shape,
    deadline: Option<Instant>,
) -> anyhow::Result<TcpStream> {
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    // A refusal of the shape says more than the connection errors around it.
    let mut refused: Option<String> = None;
    loop {
        attempts += 1;
        match try_connect(address, me, shape) {
            Ok(stream) => {
                tracing::info!(process = me, peer, %address, "connected to process {peer}");
                return Ok(stream);
            }
            Err(e) if past(deadline) => {
                let e = format!("{e:#}");
                let refused = match refused {
                    Some(r) if r != e => format!("; before that it refused this process: {r}"),
                    _ => String::new(),
                };
                bail!("process {peer} at {address} could not be reached ({attempts} attempts): {e}{refused}");
            }
            Err(e) => {
                if e.to_string().starts_with(REFUSED) {
                    refused = Some(format!("{e:#}"));
                }
                tracing::warn!(process = me, peer, %address, attempts, "cannot reach process {peer} at {address}: {e:#}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// Accepts processes `me+1..` until every one has connected; refuses (and names) strangers and
/// processes of another shape. A process connecting twice (it restarted) replaces its first
/// connection.
fn accept_peers(
    listener: TcpListener,
    addresses: &[String],
    me: usize,
    shape: Shape,
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<TcpStream>> {
    listener.set_nonblocking(true)?;
    let n = addresses.len();
    let mut peers: Vec<Option<TcpStream>> = (me + 1..n).map(|_| None).collect();
    let mut last_report = Instant::now();
    while peers.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((stream, from)) => match handshake(stream, me, shape) {
                Ok((peer, stream)) => {
                    tracing::info!(process = me, peer, %from, "process {peer} connected");
                    peers[peer - me - 1] = Some(stream);
                }
                Err(e) => {
                    tracing::warn!(process = me, %from, "refused a connection from {from}: {e:#}")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("accepting peer connections"),
        }
        let missing: Vec<String> = peers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(k, _)| format!("{} ({})", me + 1 + k, addresses[me + 1 + k]))
            .collect();
        if missing.is_empty() {
            break;
        }
        if past(deadline) {
            bail!(
                "process {me}: processes {} did not connect in time",
                missing.join(", ")
            );
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                process = me,
                "still waiting for processes {} to connect",
                missing.join(", ")
            );
            last_report = Instant::now();
        }
    }
    Ok(peers.into_iter().flatten().collect())
}

/// Reads a peer's hello and answers it: the peer's index when it belongs here.
fn handshake(mut stream: TcpStream, me: usize, shape: Shape) -> anyhow::Result<(usize, TcpStream)> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut magic = [0u8; 8];
    stream
        .read_exact(&mut magic)
        .context("no handshake (not an iotflow process)")?;
    anyhow::ensure!(&magic == MAGIC, "not an iotflow cluster handshake");
    let peer = read_u64(&mut stream)? as usize;
    let theirs = Shape {
        processes: read_u64(&mut stream)?,
        workers: read_u64(&mut stream)?,
    };
    let agrees = theirs == shape && peer > me && (peer as u64) < shape.processes;
    let mut answer = Vec::with_capacity(17);
    answer.push(u8::from(agrees));
    answer.extend_from_slice(&shape.processes.to_be_bytes());
    answer.extend_from_slice(&shape.workers.to_be_bytes());
    stream.write_all(&answer)?;
    if !agrees {
        bail!("process {peer} runs as {theirs}, this process {me} as {shape}: every process must be started with the same -n and -w");
    }
    tune(&stream)?;
    Ok((peer, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_come_from_a_pattern_a_host_file_or_localhost() {
        let a = addresses(3, None, Some("iotflow-{i}.iotflow-peers.ns.svc:2101")).unwrap();
        assert_eq!(
            a,
            [
                "iotflow-0.iotflow-peers.ns.svc:2101",
                "iotflow-1.iotflow-peers.ns.svc:2101",
                "iotflow-2.iotflow-peers.ns.svc:2101"
            ]
        );
        assert_eq!(
            addresses(2, None, None).unwrap(),
            ["localhost:2101", "localhost:2102"]
        );
        let dir = std::env::temp_dir().join(format!("iotflow-hosts-{}", std::process::id()));
        std::fs::write(&dir, "# cluster\na:1\n\nb:2\nc:3\n").unwrap();
        let file = dir.to_str().unwrap();
        assert_eq!(addresses(2, Some(file), None).unwrap(), ["a:1", "b:2"]);
        let short = addresses(4, Some(file), None).unwrap_err().to_string();
        assert!(short.contains("3 addresses for 4"), "{short}");
        std::fs::remove_file(&dir).unwrap();
        assert!(
            addresses(2, None, Some("iotflow:2101")).is_err(),
            "no {{i}}"
        );
        assert!(addresses(2, None, Some("iotflow-{i}")).is_err(), "no port");
        assert!(addresses(2, Some("x"), Some("y-{i}:1")).is_err());
    }

    #[test]
    fn the_process_index_is_the_ordinal_of_the_host_name() {
        assert_eq!(process_from_hostname("iotflow-0").unwrap(), 0);
        assert_eq!(process_from_hostname("iot-flow-12\n").unwrap(), 12);
        assert_eq!(
            process_from_hostname("iotflow-3.iotflow-peers.ns.svc").unwrap(),
            3
        );
        assert!(process_from_hostname("iotflow").is_err());
        assert!(process_from_hostname("iotflow-x").is_err());
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn args(n: usize, p: usize, w: usize, ports: &[u16], timeout: Duration) -> ClusterArgs {
        let file = std::env::temp_dir().join(format!(
            "iotflow-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
        // Written once: a rewrite could be read half-done by a process already started.
        if !file.exists() {
            let part = file.with_extension("part");
            std::fs::write(&part, text).unwrap();
            std::fs::rename(&part, &file).unwrap();
        }
        ClusterArgs {
            workers: w,
            processes: n,
            process: p,
            hostfile: Some(file.to_string_lossy().into()),
            peers: None,
            listen: None,
            peer_timeout: timeout,
            shared_host: true,
        }
    }

    #[test]
    fn three_processes_connect_in_any_order() {
        let ports = [free_port(), free_port(), free_port()];
        let t = Duration::from_secs(30);
        // The highest index first: it retries until the others listen.
        let handles: Vec<_> = [2, 0, 1]
            .into_iter()
            .map(|p| {
                let a = args(3, p, 1, &ports, t);
                std::thread::sleep(Duration::from_millis(300));
                std::thread::spawn(move || connect(&a).map(|s| (p, s)))
            })
            .collect();
        for h in handles {
            let (p, sockets) = h.join().unwrap().unwrap();
            assert_eq!(sockets.len(), 3);
            for (i, s) in sockets.iter().enumerate() {
                assert_eq!(s.is_none(), i == p, "process {p}, socket {i}");
            }
        }
    }

    #[test]
    fn a_process_of_another_shape_is_refused_and_a_missing_one_named() {
        let ports = [free_port(), free_port()];
        let t = Duration::from_secs(2);
        let zero = args(2, 0, 2, &ports, t);
        let one = args(2, 1, 1, &ports, t);
        let h = std::thread::spawn(move || connect(&zero));
        let e = connect(&one).unwrap_err().to_string();
        assert!(e.contains("process 0 at 127.0.0.1:"), "{e}");
        assert!(
            e.contains("runs as 2 processes × 2 workers, this process as 2 processes × 1 workers"),
            "{e}"
        );
        let e = h.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("processes 1 (127.0.0.1:"), "{e}");
        assert!(e.contains("did not connect in time"), "{e}");
    }

    #[test]
    fn an_unreachable_peer_is_named_with_its_address() {
        let ports = [free_port(), free_port()];
        let one = args(2, 1, 1, &ports, Duration::from_millis(600));
        let e = connect(&one).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "process 0 at 127.0.0.1:{} could not be reached",
                ports[0]
            )),
            "{e}"
        );
    }
}
