//! The `bandgate` command: the daemon and the tools installers and operators use.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bandgate::cli;
use bandgate::config;
use bandgate::engine::{frame, Intake};

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
        Command::CheckConfig { config } => check_config(&config),
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
