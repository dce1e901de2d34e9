//! The `bandgate` command: the daemon and the tools installers and operators use.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use bandgate::adapters::ble::BleSettings;
use bandgate::cli;
use bandgate::config;
use bandgate::control::{self, Request, Response};
use bandgate::engine::{frame, Intake};
use bandgate::enrol;
use bandgate::scan;

/// Exit code for a configuration error (sysexits EX_CONFIG); systemd does not restart on it.
const EX_CONFIG: u8 = 78;
/// Exit code for bad command-line use (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "bandgate",
    version,
    about = "Gateway from SOS wristbands to duty staff"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the operator commands reach the running daemon.
#[derive(Args)]
struct Control {
    /// The daemon's control socket (default: control_socket of --config, else
    /// /run/bandgate/bandgate.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Read control_socket from this configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the daemon's answer as JSON (one line), for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Decode wristband frames (hex, as btmon or a log shows them); one JSON line per frame.
    ///
    /// Each frame is checked on its own (steps 1-5 of the wire spec). With --window they pass
    /// through one anti-replay window per band in the order given, as in the gateway, so a
    /// repeated frame prints {"error": "duplicate"} and an old one {"error": "stale"}.
    Decode {
        /// The key file (keys.toml).
        #[arg(long)]
        keys: PathBuf,
        /// Company id the frames were sent under (0xFFFF or 65535).
        #[arg(long, default_value = "0xFFFF", value_parser = cli::parse_company_id)]
        company_id: u16,
        /// Also apply the anti-replay window across the frames given.
        #[arg(long)]
        window: bool,
        /// Manufacturer data after the company id, in hex.
        #[arg(required = true)]
        hex: Vec<String>,
    },
    /// Listen on the radio and show which bands are heard, how well, and whether their frames
    /// open with the keys (no broker needed). Refreshes live on a terminal; prints the final
    /// table at the end.
    Scan {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Record every advertisement heard to this file (replay capture format, JSON lines).
        #[arg(long)]
        record: Option<PathBuf>,
        /// The gateway's configuration (bandgate.toml): keys, company id, adapter and
        /// silence_restart from it, and the residents' names in the table. The options below
        /// override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The key file (keys.toml); without it (or --config) every band shows
        /// `unknown_device`.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Bluetooth adapter to use (default: the first BlueZ lists).
        #[arg(long)]
        adapter: Option<String>,
        /// Company id the bands send under (0xFFFF or 65535) [default: 0xFFFF].
        #[arg(long, value_parser = cli::parse_company_id)]
        company_id: Option<u16>,
        /// Silence from every advertiser after which the scan is restarted (then BlueZ
        /// reconnected, then bandgate exits non-zero) [default: 60s].
        #[arg(long, value_parser = humantime::parse_duration)]
        silence_restart: Option<std::time::Duration>,
    },
    /// Run the gateway (what systemd starts): radio or replay/simulation in, pages out over
    /// MQTT, state kept in state_dir. Exits 78 on a bad configuration, 1 on a failure.
    Run {
        /// The configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// With ble.source = "replay": ignore the capture's gaps, send everything at once.
        #[arg(long)]
        fast: bool,
    },
    /// Ask the running daemon how it is: radio, broker, bands heard, open alerts, outbox,
    /// frames accepted and rejected.
    Status {
        #[command(flatten)]
        control: Control,
    },
    /// List the open alerts: who was paged, who acknowledged.
    Alerts {
        /// Also list recently resolved alerts.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        control: Control,
    },
    /// Acknowledge an alert for a staff member ("I'm going"), e.g. when their phone is lost;
    /// exactly what their phone's ack does.
    Ack {
        /// The alert id (bandgate alerts lists them), e.g. 17-42.
        alert_id: String,
        /// The staff id acknowledging (as under [[staff]]).
        #[arg(long = "as", value_name = "STAFF")]
        staff: String,
        #[command(flatten)]
        control: Control,
    },
    /// Resolve an alert for a staff member; exactly what their phone's resolve does.
    Resolve {
        /// The alert id, e.g. 17-42.
        alert_id: String,
        /// The staff id resolving (as under [[staff]]).
        #[arg(long = "as", value_name = "STAFF")]
        staff: String,
        /// How it ended.
        #[arg(long, default_value = "other", value_parser = [
            "real_emergency", "false_alarm", "wearer_cancel_verified", "test", "duplicate",
            "device_fault", "other",
        ])]
        resolution: String,
        #[command(flatten)]
        control: Control,
    },
    /// Page a `test` alert through the real pipeline to real phones; prints its id. An ack
    /// from the phone resolves it as `test`.
    TestAlarm {
        /// Page this staff id (default: whoever is on duty now).
        #[arg(long)]
        staff: Option<String>,
        #[command(flatten)]
        control: Control,
    },
    /// Enrol a new wristband: a fresh random key added to keys.toml (comments kept, written
    /// atomically, mode 0600), and what the band's firmware must be given.
    Enrol {
        /// The band's device id.
        #[arg(long)]
        device_id: u32,
        /// The resident who will wear it (their id in bandgate.toml).
        #[arg(long)]
        resident: String,
        /// The key file (default: keys_file of --config, else /etc/bandgate/keys.toml).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// bandgate.toml: checks the resident and says what to add.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// See it work: simulated bands, a broker on this machine, and the duty phones' view of one
    /// SOS alert from the press to resolved (about 30 s; no radio, no outside broker).
    ///
    /// The broker is rumqttd inside this binary when built with `--features demo`, else a
    /// `mosquitto` from PATH. The gateway's logs go to a file in the demo's temp directory.
    Demo {
        /// Which broker to use.
        #[arg(long, value_enum, default_value = "auto")]
        broker: bandgate::demo::BrokerChoice,
        /// Language of the pages' text: zh-CN (the example community's) or en.
        #[arg(long)]
        locale: Option<String>,
    },
    /// Check bandgate.toml, the key file and the environment overrides without starting.
    ///
    /// Prints every problem, one per line, and exits 78; or prints a summary (who is on duty
    /// now, per the rota) and exits 0.
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode {
            keys,
            company_id,
            window,
            hex,
        } => decode(&keys, company_id, window, &hex),
        Command::Scan {
            seconds,
            record,
            config,
            keys,
            adapter,
            company_id,
            silence_restart,
        } => {
            // bandgate.toml first (the daemon's view of the site), then the options on top.
            let site = match config.map(|c| config::load(&c)).transpose() {
                Ok(site) => site,
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let keys = match keys.map(|k| config::keys::load(&k)).transpose() {
                Ok(Some(k)) => k,
                Ok(None) => site.as_ref().map(|s| s.keys.clone()).unwrap_or_default(),
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let defaults = BleSettings::default();
            let ble = match &site {
                Some(s) => BleSettings {
                    adapter: adapter.or_else(|| s.ble.radio.adapter.clone()),
                    company_id: company_id.unwrap_or(s.ble.company_id),
                    silence_restart: silence_restart.unwrap_or(s.ble.radio.silence_restart),
                },
                None => BleSettings {
                    adapter,
                    company_id: company_id.unwrap_or(defaults.company_id),
                    silence_restart: silence_restart.unwrap_or(defaults.silence_restart),
                },
            };
            let names = site
                .map(|s| {
                    s.setup
                        .residents
                        .into_iter()
                        .map(|(device_id, r)| (device_id, r.name))
                        .collect()
                })
                .unwrap_or_default();
            init_logs();
            let args = scan::ScanArgs {
                duration: seconds.map(std::time::Duration::from_secs),
                record,
                keys,
                ble,
                names,
            };
            match scan::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bandgate scan: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config, fast } => run(&config, fast),
        Command::Status { control } => operate(&control, Request::Status),
        Command::Alerts { all, control } => operate(
            &control,
            Request::Alerts {
                include_resolved: all,
            },
        ),
        Command::Ack {
            alert_id,
            staff,
            control,
        } => operate(
            &control,
            Request::Ack {
                alert_id,
                staff_id: staff,
            },
        ),
        Command::Resolve {
            alert_id,
            staff,
            resolution,
            control,
        } => operate(
            &control,
            Request::Resolve {
                alert_id,
                staff_id: staff,
                resolution,
            },
        ),
        Command::TestAlarm { staff, control } => {
            operate(&control, Request::TestAlarm { staff_id: staff })
        }
        Command::Enrol {
            device_id,
            resident,
            keys,
            config,
        } => enrol(device_id, &resident, keys, config),
        Command::Demo { broker, locale } => demo(bandgate::demo::DemoArgs { broker, locale }),
    }
}

/// An operator command: one request to the daemon's control socket. Exit 0 when done, 1 when
/// the daemon refused (the reason on stderr), 69/75/77 when it could not be asked.
fn operate(control: &Control, request: Request) -> ExitCode {
    let socket = match (&control.socket, &control.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => match config::lenient::control_socket(c) {
            Ok(s) => s,
            Err(problem) => {
                eprintln!("{problem}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        (None, None) => PathBuf::from(control::DEFAULT_SOCKET),
    };
    let response = match control::request(&socket, &request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bandgate: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let ok = !matches!(response, Response::Refused { .. } | Response::Error { .. });
    if control.json {
        println!("{}", serde_json::to_string(&response).unwrap_or_default());
    } else {
        match &response {
            Response::Status(s) => print!("{}", control::status_text(s)),
            Response::Alerts { alerts } => print!("{}", control::alerts_text(alerts)),
            Response::Alert(a) => match &request {
                Request::TestAlarm { .. } => println!(
                    "{}: test alarm paging {} (tier {}); an ack from the phone resolves it as test",
                    a.alert_id,
                    if a.notified.is_empty() {
                        "nobody".to_string()
                    } else {
                        a.notified.join(", ")
                    },
                    a.tier
                ),
                _ => println!("{}", control::action_text(a)),
            },
            Response::Refused { .. } | Response::Error { .. } => {}
        }
    }
    match response {
        Response::Refused { message, .. } => eprintln!("bandgate: refused: {message}"),
        Response::Error { message } => {
            eprintln!("bandgate: the daemon could not answer: {message}")
        }
        _ => {}
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `bandgate enrol`: exit 0 when the key was added, 1 when refused, 78 for a key file the
/// daemon would refuse as it stands.
fn enrol(
    device_id: u32,
    resident: &str,
    keys: Option<PathBuf>,
    config: Option<PathBuf>,
) -> ExitCode {
    let site = match &config {
        Some(c) => match enrol::read_site(c, resident, device_id) {
            Ok(s) => Some(s),
            Err(e) => return enrol_failed(e),
        },
        None => None,
    };
    let keys = keys
        .or_else(|| site.as_ref().map(|s| s.keys_file.clone()))
        .unwrap_or_else(|| PathBuf::from(config::sections::site::KEYS_FILE));
    let note = format!(
        "resident {resident}, enrolled {}",
        jiff::Zoned::now().date()
    );
    match enrol::add_key(&keys, device_id, enrol::fresh_key(), &note) {
        Ok(hex) => {
            let company_id = site
                .as_ref()
                .map_or(config::sections::ble::COMPANY_ID, |s| s.company_id);
            print!(
                "{}",
                enrol::report(
                    &keys,
                    device_id,
                    resident,
                    &hex,
                    company_id,
                    config.as_deref().zip(site.as_ref())
                )
            );
            ExitCode::SUCCESS
        }
        Err(e) => enrol_failed(e),
    }
}

fn enrol_failed(e: enrol::EnrolError) -> ExitCode {
    eprintln!("bandgate enrol: {e}");
    match e {
        enrol::EnrolError::Config(_) => ExitCode::from(EX_CONFIG),
        _ => ExitCode::FAILURE,
    }
}

/// `bandgate demo`: 0 once the alert went through every state, 130 on Ctrl-C, 1 otherwise.
fn demo(args: bandgate::demo::DemoArgs) -> ExitCode {
    let dir = match bandgate::demo::prepare_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bandgate demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // The terminal is the phones' view; the gateway logs to a file.
    let log = bandgate::demo::log_path(&dir);
    match std::fs::File::create(&log) {
        Ok(file) => {
            // rumqttd logs every ordinary disconnect at error: off unless RUST_LOG asks.
            let filter =
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,bandgate=info,rumqttd=off")
                });
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        Err(e) => eprintln!(
            "bandgate demo: cannot write {} ({e}); no logs",
            log.display()
        ),
    }
    match bandgate::demo::run(args, &dir) {
        Ok(bandgate::demo::Ending::Complete) => ExitCode::SUCCESS,
        Ok(bandgate::demo::Ending::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("bandgate demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon: exit 78 on a bad configuration (systemd does not restart), 1 on a runtime
/// failure (systemd restarts), 0 after SIGTERM/SIGINT.
fn run(path: &std::path::Path, fast: bool) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logs();
    for w in &cfg.warnings {
        tracing::warn!(key = w.key, "configuration: {w}");
    }
    release_freed_memory();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let opts = bandgate::daemon::RunOptions {
        fast_replay: fast,
        ..Default::default()
    };
    let result = runtime.block_on(bandgate::daemon::run(cfg, opts, shutdown_signal()));
    // Everything is committed once `run` returns. A blocking call may still be running (the
    // replay source opening a named pipe nobody writes to): it must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bandgate stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Loading a large configuration leaves freed heap behind (10,000 residents: the key file's
/// parse alone is ~7 MB, freed once `Config` is built); glibc keeps such memory mapped unless
/// asked, so the daemon would sit at its start-up peak for ever.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is touched.
        unsafe { malloc_trim(0) };
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            // Allowed values outside their recommended range: listed, not refused (exit 0).
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            let now = jiff::Timestamp::now();
            println!("{}", config::summary::summary(&config, now));
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// Logs: `RUST_LOG` overrides the default (warnings, and bandgate's info). Under systemd
/// (`JOURNAL_STREAM` set) they go to journald natively: the level becomes the entry's
/// priority (`journalctl -p warning` works) and structured fields become journal fields
/// (`journalctl -u bandgate ALERT_ID=17-42`). Elsewhere, to stderr.
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bandgate=info"))
    };
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(journal.with_field_prefix(None))
                    .init();
                return;
            }
            Err(e) => eprintln!("journald not reachable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // stderr still ends in the journal: no timestamps or colours of our own.
        builder.without_time().with_ansi(false).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn decode(keys: &std::path::Path, company_id: u16, window: bool, frames: &[String]) -> ExitCode {
    let keyring = match config::keys::load(keys) {
        Ok(k) => k,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut intake = Intake::new(company_id, keyring.clone());
    let mut out = std::io::stdout().lock();
    let mut bad_hex = false;
    for h in frames {
        let line = match cli::parse_hex(h) {
            Ok(bytes) if window => match intake.accept(&bytes) {
                Ok(frame) => cli::frame_json(&frame),
                Err(reason) => cli::reject_json(reason),
            },
            Ok(bytes) => match frame::open(&bytes, company_id, &keyring) {
                Ok(frame) => cli::frame_json(&frame),
                Err(reason) => cli::reject_json(reason),
            },
            Err(msg) => {
                bad_hex = true;
                serde_json::json!({ "error": "not_hex", "detail": msg })
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    if bad_hex {
        ExitCode::from(EX_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
