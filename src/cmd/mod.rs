//! The commands' bodies, and the one process boundary: each command returns
//! `Result<Done, Failure>`, and `exit` maps that to the process's exit status (the only place
//! exit codes are written down).

pub mod check_config;
pub mod cli;
pub mod console_link;
pub mod decode;
pub mod demo;
pub mod enrol;
pub mod enrol_bthome;
pub mod operate;
pub mod run;
pub mod scan;

use std::process::ExitCode;

/// Exit statuses (sysexits where one fits). systemd restarts the daemon on `FAILURE`, not on
/// `CONFIG`.
pub mod code {
    pub const FAILURE: u8 = 1;
    /// Bad command-line use (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// The daemon is not running (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The daemon did not answer in time (EX_TEMPFAIL).
    pub const TEMPFAIL: u8 = 75;
    /// The daemon's answer could not be read (EX_PROTOCOL).
    pub const PROTOCOL: u8 = 76;
    /// Not allowed to open the control socket (EX_NOPERM).
    pub const NOPERM: u8 = 77;
    /// A configuration error (EX_CONFIG); systemd does not restart on it.
    pub const CONFIG: u8 = 78;
    /// Stopped by Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// How a command ended well.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Ok,
    /// Stopped early by Ctrl-C (the demo).
    Interrupted,
}

/// How a command failed; `exit` prints what it carries on stderr.
#[derive(Debug)]
pub enum Failure {
    /// The configuration (every problem, one per line).
    Config(String),
    /// Bad input on the command line, already reported on stdout.
    Usage,
    /// A failure, with the line to print (`bandgate scan: ...`).
    Failed(String),
    /// A failure already reported (logged, or printed by the command).
    Reported,
    /// The running daemon could not be asked.
    Unreachable(operate::ClientError),
}

/// The one mapping from a command's result to the process's exit status.
pub fn exit(result: Result<Done, Failure>) -> ExitCode {
    let code = match result {
        Ok(Done::Ok) => 0,
        Ok(Done::Interrupted) => code::INTERRUPTED,
        Err(Failure::Config(problems)) => {
            eprintln!("{problems}");
            code::CONFIG
        }
        Err(Failure::Usage) => code::USAGE,
        Err(Failure::Failed(line)) => {
            eprintln!("{line}");
            code::FAILURE
        }
        Err(Failure::Reported) => code::FAILURE,
        Err(Failure::Unreachable(e)) => {
            eprintln!("bandgate: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

/// A yes/no fact the modem may not know yet, as the operator texts print it (`?` for unknown).
pub(crate) fn known(b: Option<bool>, yes: &str, no: &str) -> String {
    match b {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "?".to_string(),
    }
}
