//! Configuration files that installers write by hand, checked before anything starts.
//!
//! Two stages, as ripgrep's low and high arguments: the low stage reads (`read`: the file, its
//! syntax, the environment overrides) and diagnoses (`diagnose`, and one file per section in
//! `sections`: raw struct, checks, defaults); the high stage (`checked`) yields what the engine
//! and the adapters take. Every problem names the file, the entry, what is wrong and how to
//! fix it, one per line, and all of them are reported at once: an installer on site should
//! not have to restart ten times to find ten typos.

pub mod bounds;
mod checked;
mod cut;
mod diagnose;
pub mod keys;
pub mod lenient;
mod read;
pub mod sections;
pub mod summary;

use std::fmt;
use std::path::{Path, PathBuf};

pub use checked::{load, Ble, Config, ConsoleTls, Mqtt, Radio, Source, Web};
pub use sections::mqtt::parse_broker_url;

/// Where the daemon and `check-config` look when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/bandgate/bandgate.toml";

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// The key or entry, e.g. `devices.17` or `escalation.ack_timeouts[1]`.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl Problem {
    pub fn new(
        file: &Path,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(
                f,
                "{}: {}; fix: {}",
                self.file.display(),
                self.problem,
                self.fix
            )
        } else {
            write!(
                f,
                "{}: {}: {}; fix: {}",
                self.file.display(),
                self.key,
                self.problem,
                self.fix
            )
        }
    }
}

/// All the problems found in a configuration; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
