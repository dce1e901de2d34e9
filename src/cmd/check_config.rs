//! `bandgate check-config`: every problem at once (exit 78), or warnings and a summary.

use std::path::Path;

use super::{Done, Failure};
use crate::config;

pub fn check_config(path: &Path) -> Result<Done, Failure> {
    let config = config::load(path).map_err(|p| Failure::Config(p.to_string()))?;
    // Allowed values outside their recommended range: listed, not refused (exit 0).
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let now = jiff::Timestamp::now();
    println!("{}", config::summary::summary(&config, now));
    Ok(Done::Ok)
}
