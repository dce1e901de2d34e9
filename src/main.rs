//! The `bandgate` command: the daemon and the tools installers and operators use.

//!
//! This file is the command line (clap) and its dispatch; each command's body is in
//! `bandgate::cmd`, and `cmd::exit` is the one place a result becomes an exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use bandgate::adapters::control::Request;
use bandgate::cmd::{self, cli, operate, Done, Failure};
use bandgate::config;

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
    ///
    /// With --bthome MAC the hex is BTHome service data heard from that device (from the
    /// device-information byte on, or with the UUID d2fc in front), checked as the gateway
    /// does: enrolled, encrypted, MIC; with --window, a counter newer than the last.
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
        /// The frames are BTHome service data from the device with this address
        /// (AA:BB:CC:DD:EE:FF).
        #[arg(long, value_name = "MAC")]
        bthome: Option<String>,
        /// Manufacturer data after the company id (or with --bthome, service data), in hex.
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
        /// Scan passively, through BlueZ's advertisement monitor, as [ble] scan = "passive"
        /// does (falls back to active scanning when BlueZ cannot; the header says which).
        #[arg(long)]
        passive: bool,
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
    ///
    /// With --bthome MAC, a BTHome device (a Shelly BLU Button1, ...): its bind key (--key,
    /// or a fresh one to set on the device) under [bthome."MAC"]. Enrolling a device again
    /// (its counter went back after a battery change: its frames are refused as stale) makes
    /// the gateway forget its stored counter at the next restart.
    Enrol(Enrol),
    /// Print a staff member's sign-in link to the duty console ([web]), with a QR code to scan
    /// with their phone; makes them an MQTT password unless one is given.
    ConsoleLink {
        /// The person's staff id ([[staff]] id, also their MQTT user name).
        staff_id: String,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The host name or address phones reach the gateway by (default: [web] listen's
        /// address, else this machine's address on its default route).
        #[arg(long)]
        host: Option<String>,
        /// The person's existing MQTT password (default: a new one, with the command that gives
        /// it to Mosquitto).
        #[arg(long)]
        password: Option<String>,
    },
    /// See it work: simulated bands, a broker on this machine, and the duty phones' view of one
    /// SOS alert from the press to resolved (about 30 s; no radio, no outside broker).
    ///
    /// The broker is rumqttd inside this binary when built with `--features demo`, else a
    /// `mosquitto` from PATH. The gateway's logs go to a file in the demo's temp directory.
    Demo {
        /// Which broker to use.
        #[arg(long, value_enum, default_value = "auto")]
        broker: bandgate::cmd::demo::BrokerChoice,
        /// Language of the pages' text: zh-CN (the example community's) or en.
        #[arg(long)]
        locale: Option<String>,
        /// Seconds before the scripted SOS: time to open the duty console first (its link is
        /// printed at the start), tap 开始值班 and answer the alert yourself.
        #[arg(long, default_value_t = 3)]
        sos_after: u64,
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

/// `bandgate enrol`'s arguments.
#[derive(clap::Args)]
struct Enrol {
    /// The band's (or BTHome device's) device id.
    #[arg(long)]
    device_id: u32,
    /// Enrol the BTHome device with this Bluetooth address (AA:BB:CC:DD:EE:FF).
    #[arg(long, value_name = "MAC")]
    bthome: Option<String>,
    /// With --bthome: the bind key the device already has (32 hex digits); without it a
    /// device enrolled again keeps its key, a new one gets a fresh key.
    #[arg(long, requires = "bthome")]
    key: Option<String>,
    /// The resident who will wear it (their id in bandgate.toml).
    #[arg(long)]
    resident: String,
    /// The key file (default: keys_file of --config, else /etc/bandgate/keys.toml).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// bandgate.toml: checks the resident and says what to add.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    cmd::exit(dispatch(Cli::parse().command))
}

fn dispatch(command: Command) -> Result<Done, Failure> {
    match command {
        Command::Decode {
            keys,
            company_id,
            window,
            bthome,
            hex,
        } => cmd::decode::decode(&keys, company_id, window, bthome.as_deref(), &hex),
        Command::Scan {
            seconds,
            record,
            config,
            keys,
            adapter,
            company_id,
            silence_restart,
            passive,
        } => cmd::scan::scan_command(cmd::scan::ScanOptions {
            seconds,
            record,
            config,
            keys,
            adapter,
            company_id,
            silence_restart,
            passive,
        }),
        Command::CheckConfig { config } => cmd::check_config::check_config(&config),
        Command::Run { config, fast } => cmd::run::run(&config, fast),
        Command::Status { control } => control.ask(Request::Status),
        Command::Alerts { all, control } => control.ask(Request::Alerts {
            include_resolved: all,
        }),
        Command::Ack {
            alert_id,
            staff,
            control,
        } => control.ask(Request::Ack {
            alert_id,
            staff_id: staff,
        }),
        Command::Resolve {
            alert_id,
            staff,
            resolution,
            control,
        } => control.ask(Request::Resolve {
            alert_id,
            staff_id: staff,
            resolution,
        }),
        Command::TestAlarm { staff, control } => {
            control.ask(Request::TestAlarm { staff_id: staff })
        }
        Command::Enrol(args) => args.enrol(),
        Command::ConsoleLink {
            staff_id,
            config,
            host,
            password,
        } => cmd::console_link::console_link(cmd::console_link::LinkArgs {
            config: &config,
            staff_id: &staff_id,
            host,
            password,
        }),
        Command::Demo {
            broker,
            locale,
            sos_after,
        } => cmd::demo::demo(cmd::demo::DemoArgs {
            broker,
            locale,
            sos_after: std::time::Duration::from_secs(sos_after),
        }),
    }
}

impl Enrol {
    fn enrol(self) -> Result<Done, Failure> {
        match self.bthome {
            Some(mac) => cmd::enrol_bthome::enrol_bthome(
                &mac,
                self.key.as_deref(),
                self.device_id,
                &self.resident,
                self.keys,
                self.config,
            ),
            None => cmd::enrol::enrol(self.device_id, &self.resident, self.keys, self.config),
        }
    }
}

impl Control {
    /// An operator command: one request to the daemon's control socket.
    fn ask(self, request: Request) -> Result<Done, Failure> {
        let socket = operate::socket(self.socket, self.config.as_deref())?;
        operate::operate(&socket, self.json, request)
    }
}
