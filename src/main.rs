//! The `bandgate` command: the daemon and the tools installers and operators use.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bandgate::adapters::ble::BleSettings;
use bandgate::cli;
use bandgate::config;
use bandgate::engine::{frame, Intake};
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
        /// The key file (keys.toml); without it every band shows `unknown_device`.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Bluetooth adapter to use (default: the first BlueZ lists).
        #[arg(long)]
        adapter: Option<String>,
        /// Company id the bands send under (0xFFFF or 65535).
        #[arg(long, default_value = "0xFFFF", value_parser = cli::parse_company_id)]
        company_id: u16,
        /// Silence from every advertiser after which the scan is restarted (then BlueZ
        /// reconnected, then bandgate exits non-zero).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        silence_restart: std::time::Duration,
    },
    /// Run the gateway (what systemd starts): radio or replay/simulation in, pages out over
    /// MQTT, state kept in state_dir. Exits 78 on a bad configuration, 1 on a failure.
    Run {
        /// The configuration file.
        #[arg(long, default_value = config::file::DEFAULT_PATH)]
        config: PathBuf,
        /// With ble.source = "replay": ignore the capture's gaps, send everything at once.
        #[arg(long)]
        fast: bool,
    },
    /// Check bandgate.toml, the key file and the environment overrides without starting.
    ///
    /// Prints every problem, one per line, and exits 78; or prints a summary (who is on duty
    /// now, per the rota) and exits 0.
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = config::file::DEFAULT_PATH)]
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
            keys,
            adapter,
            company_id,
            silence_restart,
        } => {
            let keys = match keys.map(|k| config::keys::load(&k)).transpose() {
                Ok(k) => k.unwrap_or_default(),
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            init_logs();
            let args = scan::ScanArgs {
                duration: seconds.map(std::time::Duration::from_secs),
                record,
                keys,
                ble: BleSettings {
                    adapter,
                    company_id,
                    silence_restart,
                },
                // Resident names come from bandgate.toml once the config module loads it.
                names: Default::default(),
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
    }
}

/// The daemon: exit 78 on a bad configuration (systemd does not restart), 1 on a runtime
/// failure (systemd restarts), 0 after SIGTERM/SIGINT.
fn run(path: &std::path::Path, fast: bool) -> ExitCode {
    let cfg = match config::file::load(path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logs();
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
    match runtime.block_on(bandgate::daemon::run(cfg, opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bandgate stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Loading a large configuration (10,000 residents: a 1.3 MB file) peaks at ~70 MB of heap in
/// the `config` crate's value trees, all freed once `Config` is built; glibc keeps such memory
/// mapped unless asked, so the daemon would sit at the start-up peak for ever.
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
    match config::file::load(path) {
        Ok(config) => {
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

/// Logs to stderr; `RUST_LOG` overrides the default (warnings, and bandgate's info). Under
/// systemd (`JOURNAL_STREAM` set) journald adds the time and the level's priority, so lines
/// carry neither timestamps nor colours.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bandgate=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
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
