//! `iotflow`: every iotflow job behind one command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use iotflow_config::Config;

mod status;

/// mimalloc instead of glibc's malloc: in a profile of a 2-worker drain without sinks, glibc's
/// malloc and free (arena locks, `malloc_consolidate`, `unlink_chunk`) took about 44 % of the
/// CPU, because buffers allocated on librdkafka's and the workers' threads are freed on others
/// (docs/benchmarks.md, "Profile").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "iotflow",
    version,
    about = "Real-time IoT pipeline on timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr: `text` (human; colour only when stderr is a terminal) or
    /// `json` (one object per line, for log shippers). Filter with IOTFLOW_LOG.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "IOTFLOW_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up logging, once, for every command: `IOTFLOW_LOG` filters; no ANSI colour codes when
/// stderr is not a terminal (a log file, a pipe, journald).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("IOTFLOW_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the streaming job (Kafka -> parse -> enrich -> sinks).
    #[command(disable_help_flag = true)]
    Run {
        /// Configuration file (TOML); defaults apply for anything it leaves out, and
        /// IOTFLOW__SECTION__KEY environment variables override both.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Worker threads in this process (the same in every process).
        #[arg(
            short = 'w',
            long = "workers",
            default_value_t = 1,
            env = "IOTFLOW_WORKERS"
        )]
        workers: usize,
        /// Number of processes in the cluster.
        #[arg(
            short = 'n',
            long = "processes",
            default_value_t = 1,
            env = "IOTFLOW_PROCESSES"
        )]
        processes: usize,
        /// Index of this process, 0..n, or `auto`: the trailing ordinal of the host name
        /// (`iotflow-2` is 2; a StatefulSet's pods), one process per host.
        #[arg(
            short = 'p',
            long = "process",
            default_value = "0",
            env = "IOTFLOW_PROCESS"
        )]
        process: String,
        /// File with one `host:port` line per process (default: localhost:2101, 2102, ...).
        #[arg(short = 'h', long = "hostfile", env = "IOTFLOW_HOSTFILE")]
        hostfile: Option<String>,
        /// Peer addresses as a pattern, `{i}` standing for the process index, e.g.
        /// `iotflow-{i}.iotflow-peers.iotflow.svc.cluster.local:2101` (instead of -h).
        #[arg(long = "peers", env = "IOTFLOW_PEERS", conflicts_with = "hostfile")]
        peers: Option<String>,
        /// Address to listen on for the peers (default: this process's own address), e.g.
        /// `0.0.0.0:2101`.
        #[arg(long = "cluster-listen", env = "IOTFLOW_CLUSTER_LISTEN")]
        cluster_listen: Option<String>,
        /// Seconds to wait for every peer at start before failing (0: forever); unreachable
        /// peers are logged by index and address and retried with backoff meanwhile.
        #[arg(
            long = "peer-timeout-secs",
            default_value_t = 300,
            env = "IOTFLOW_PEER_TIMEOUT_SECS"
        )]
        peer_timeout_secs: u64,
        /// Read readings from these JSON-lines files (gzip or plain; directories are walked)
        /// instead of the readings topic; repeatable. See docs/file-source.md.
        #[arg(long = "input", value_name = "PATH")]
        input: Vec<PathBuf>,
        /// Print the resolved configuration and exit.
        #[arg(long)]
        print_config: bool,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Simulate devices: readings to the readings topic, business records to the broadcast topic.
    Gen {
        /// Bootstrap servers.
        #[arg(
            long,
            default_value = "127.0.0.1:9092",
            env = "IOTFLOW__KAFKA__BROKERS"
        )]
        brokers: String,
        /// Readings topic.
        #[arg(long, default_value = "iot-topic")]
        topic: String,
        /// Device business records topic.
        #[arg(long, default_value = "iot-broadcast")]
        broadcast_topic: String,
        /// Number of devices.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Readings per second (0 = as fast as possible).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Readings to send (0 = until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Share of malformed records, 0..1.
        #[arg(long, default_value_t = 0.0)]
        malformed: f64,
        /// Share of readings from devices without a business record, 0..1.
        #[arg(long, default_value_t = 0.0)]
        unknown: f64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Event time of the first readings, `yyyy-MM-dd HH:mm:ss` (default: now, UTC).
        #[arg(long)]
        start: Option<String>,
        /// Don't publish the device business records.
        #[arg(long)]
        no_devices: bool,
        /// Write the device business records into `device_info` of this MySQL database
        /// (creating the schema when missing) instead of publishing them: `iotflow
        /// publish-devices` then carries them to the broadcast topic.
        #[arg(long, value_name = "MYSQL_URL")]
        devices_to_mysql: Option<String>,
        /// Publish the readings to this MQTT broker (`host:port`, QoS 1) instead of the
        /// readings topic; `iotflow mqtt-bridge` carries them on (docs/mqtt.md).
        #[arg(long, value_name = "HOST:PORT")]
        mqtt: Option<String>,
        /// MQTT topic of each reading, `{pboxid}` replaced by the device id (with --mqtt).
        #[arg(long, default_value = "pboxes/{pboxid}/readings", requires = "mqtt")]
        mqtt_topic: String,
    },
    /// Bridge MQTT to the readings topic: subscribe with QoS 1 in a persistent session, send
    /// each message to Kafka keyed by device, acknowledge to MQTT after Kafka did
    /// (docs/mqtt.md).
    MqttBridge {
        /// Configuration file (TOML): `[mqtt]`, `[kafka]`.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Stop after this many messages were forwarded and acknowledged (0 = until SIGTERM).
        #[arg(long, default_value_t = 0)]
        max_messages: u64,
    },
    /// Device work time per day (rules in docs/worktime.md): one day, a range, or a daily
    /// schedule; results to MySQL `device_work_time`, run metrics to the Pushgateway.
    Worktime {
        /// Configuration file (TOML): `[worktime]`, `[mysql]`, `[parse]`.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// The day to analyse, yyyy-MM-dd.
        #[arg(long, conflicts_with_all = ["from", "to", "schedule"])]
        date: Option<String>,
        /// First day of a range (with --to), yyyy-MM-dd.
        #[arg(long, requires = "to", conflicts_with = "schedule")]
        from: Option<String>,
        /// Last day of a range (with --from), yyyy-MM-dd.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Run every day at `worktime.schedule_at` for the previous day, catching up missed
        /// days; until SIGTERM.
        #[arg(long)]
        schedule: bool,
        /// Worker threads.
        #[arg(short = 'w', long = "workers", default_value_t = 2)]
        workers: usize,
    },
    /// Publish device business records from MySQL (`device_info`) to the broadcast topic: a
    /// full snapshot at start, then every insert, update and delete (see docs/devices.md).
    PublishDevices {
        /// Configuration file (TOML): `[publisher]`, `[kafka]`, `[mysql]`.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Publish the snapshot and the changes waiting, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Print the peer addresses the processes of a cluster derive from -n and --peers / -h
    /// (`iotflow run`'s flags and environment variables), and whether each resolves here.
    Peers {
        /// Number of processes in the cluster.
        #[arg(
            short = 'n',
            long = "processes",
            default_value_t = 1,
            env = "IOTFLOW_PROCESSES"
        )]
        processes: usize,
        /// File with one `host:port` line per process.
        #[arg(long = "hostfile", env = "IOTFLOW_HOSTFILE")]
        hostfile: Option<String>,
        /// Peer address pattern, `{i}` standing for the process index.
        #[arg(long = "peers", env = "IOTFLOW_PEERS", conflicts_with = "hostfile")]
        peers: Option<String>,
    },
    /// Show running iotflow processes (like `flink list`): job, uptime, throughput, consumer
    /// lag and sink state per process, read from their metrics endpoints; exit code 1 when any
    /// endpoint is down.
    Status(status::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iotflow: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The cluster flags of `iotflow run`, checked: `-p auto` takes the host name's ordinal.
fn cluster_args(
    workers: usize,
    processes: usize,
    process: &str,
    hostfile: Option<String>,
    peers: Option<String>,
    listen: Option<String>,
    peer_timeout_secs: u64,
) -> anyhow::Result<iotflow_stream::ClusterArgs> {
    use iotflow_stream::cluster;
    anyhow::ensure!(workers > 0, "-w must be at least 1");
    anyhow::ensure!(processes > 0, "-n must be at least 1");
    let (process, shared_host) = if process == "auto" {
        let host = cluster::hostname()?;
        (cluster::process_from_hostname(&host)?, false)
    } else {
        let p = process
            .parse::<usize>()
            .with_context(|| format!("-p `{process}` is neither an index nor `auto`"))?;
        (p, true)
    };
    anyhow::ensure!(
        process < processes,
        "-p {process} must be below -n {processes} (IOTFLOW_PROCESSES must match the number of processes started)"
    );
    let args = iotflow_stream::ClusterArgs {
        workers,
        processes,
        process,
        hostfile,
        peers,
        listen,
        peer_timeout: std::time::Duration::from_secs(peer_timeout_secs),
        shared_host,
    };
    // Bad addresses fail here, before any pre-flight check.
    args.addresses()?;
    Ok(args)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            workers,
            processes,
            process,
            hostfile,
            peers,
            cluster_listen,
            peer_timeout_secs,
            input,
            print_config,
            help: _,
        } => {
            let config = Config::load(config.as_deref())?;
            if print_config {
                println!("{config:#?}");
                return Ok(());
            }
            let cluster = cluster_args(
                workers,
                processes,
                &process,
                hostfile,
                peers,
                cluster_listen,
                peer_timeout_secs,
            )?;
            iotflow_stream::run(config, cluster, &input)
        }
        Command::Peers {
            processes,
            hostfile,
            peers,
        } => {
            use std::net::ToSocketAddrs;
            let all = iotflow_stream::cluster::addresses(
                processes,
                hostfile.as_deref(),
                peers.as_deref(),
            )?;
            match iotflow_stream::cluster::hostname()
                .and_then(|h| iotflow_stream::cluster::process_from_hostname(&h).map(|i| (h, i)))
            {
                Ok((host, i)) if i < processes => {
                    println!("# this host ({host}) is process {i} with --process auto")
                }
                Ok((host, i)) => {
                    println!("# this host ({host}) would be process {i}: not below -n {processes}")
                }
                Err(e) => println!("# --process auto cannot be used here: {e:#}"),
            }
            for (i, a) in all.iter().enumerate() {
                let resolved = match a.to_socket_addrs() {
                    Ok(addrs) => addrs
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    Err(e) => format!("does not resolve here: {e}"),
                };
                println!("{i}\t{a}\t{resolved}");
            }
            Ok(())
        }
        Command::Worktime {
            config,
            date,
            from,
            to,
            schedule,
            workers,
        } => {
            let config = Config::load(config.as_deref())?;
            anyhow::ensure!(workers > 0, "-w must be at least 1");
            let day = |s: &str, flag: &str| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .with_context(|| format!("{flag} `{s}` is not yyyy-MM-dd"))
            };
            if schedule {
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let flag = stop.clone();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the signal runtime")?;
                // Listening starts here, before the first run: a SIGTERM from now on stops.
                let terminated = {
                    let _guard = rt.enter();
                    iotflow_metrics::signals::terminated()
                };
                std::thread::spawn(move || {
                    rt.block_on(terminated);
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                return iotflow_worktime_job::run_schedule(&config, workers, &stop);
            }
            let days = match (date, from, to) {
                (Some(d), _, _) => vec![day(&d, "--date")?],
                (None, Some(f), Some(t)) => {
                    iotflow_worktime_job::days_between(day(&f, "--from")?, day(&t, "--to")?)?
                }
                _ => anyhow::bail!("say which days: --date D, --from A --to B, or --schedule"),
            };
            let started = std::time::Instant::now();
            let summaries = iotflow_worktime_job::run_days(&config, &days, workers)?;
            let rows: u64 = summaries.iter().map(|s| s.rows_read).sum();
            let devices: u64 = summaries.iter().map(|s| s.devices).sum();
            eprintln!(
                "analysed {} day(s): {rows} readings, {devices} device-days, in {:.1?}",
                summaries.len(),
                started.elapsed()
            );
            Ok(())
        }
        Command::Status(args) => status::run(args),
        Command::MqttBridge {
            config,
            max_messages,
        } => {
            let config = Config::load(config.as_deref())?;
            iotflow_mqtt_bridge::run(config, iotflow_mqtt_bridge::BridgeArgs { max_messages })
        }
        Command::PublishDevices { config, once } => {
            let config = Config::load(config.as_deref())?;
            iotflow_publisher::run(config, iotflow_publisher::PublishArgs { once })
        }
        Command::Gen {
            brokers,
            topic,
            broadcast_topic,
            devices,
            rate,
            count,
            malformed,
            unknown,
            seed,
            start,
            no_devices,
            devices_to_mysql,
            mqtt,
            mqtt_topic,
        } => {
            let start = match start {
                Some(s) => chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S")
                    .with_context(|| format!("--start `{s}` is not yyyy-MM-dd HH:mm:ss"))?,
                None => chrono::Utc::now().naive_utc(),
            };
            if let Some(url) = devices_to_mysql {
                let records = iotflow_gen::devices(devices, seed);
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(async {
                        let pool = iotflow_mysql::connect(&url, std::time::Duration::from_secs(10))
                            .await?;
                        iotflow_publisher::create_schema(&pool).await?;
                        iotflow_publisher::upsert_devices(&pool, &records).await?;
                        pool.disconnect().await?;
                        anyhow::Ok(())
                    })?;
                eprintln!("wrote {devices} device records to device_info");
            } else if !no_devices {
                iotflow_gen::publish_devices(
                    &brokers,
                    &broadcast_topic,
                    &iotflow_gen::devices(devices, seed),
                )?;
                eprintln!("published {devices} device records to {broadcast_topic}");
            }
            let options = iotflow_gen::GenOptions {
                devices,
                count,
                malformed_share: malformed,
                unknown_share: unknown,
                seed,
                start,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            if let Some(addr) = mqtt {
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .with_context(|| format!("--mqtt `{addr}` is not host:port"))?;
                anyhow::ensure!(
                    mqtt_topic.contains(iotflow_config::DEVICE_ID_LEVEL),
                    "--mqtt-topic `{mqtt_topic}` has no {}",
                    iotflow_config::DEVICE_ID_LEVEL
                );
                let readings = iotflow_gen::Generator::new(options).map(|r| (r.key, r.payload));
                let sent = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(iotflow_mqtt_bridge::publish(
                        &host,
                        port,
                        &mqtt_topic,
                        readings,
                        rate,
                        |n| {
                            eprintln!(
                                "published {n} readings ({:.0}/s)",
                                n as f64 / started.elapsed().as_secs_f64()
                            );
                        },
                    ))?;
                eprintln!(
                    "published {sent} readings to mqtt://{addr}/{mqtt_topic} in {:.1?}",
                    started.elapsed()
                );
                return Ok(());
            }
            let sent = iotflow_gen::produce(
                &brokers,
                &topic,
                iotflow_gen::Generator::new(options),
                rate,
                |n| {
                    eprintln!(
                        "sent {n} readings ({:.0}/s)",
                        n as f64 / started.elapsed().as_secs_f64()
                    );
                },
            )?;
            eprintln!(
                "sent {sent} readings to {topic} in {:.1?}",
                started.elapsed()
            );
            Ok(())
        }
    }
}
