//! `bandgate run`, the daemon as systemd starts it: logs, the runtime, signals.

use std::path::Path;

use super::{Done, Failure};
use crate::config;

/// Exit 78 on a bad configuration (systemd does not restart), 1 on a runtime failure
/// (systemd restarts), 0 after SIGTERM/SIGINT.
pub fn run(path: &Path, fast: bool) -> Result<Done, Failure> {
    let cfg = config::load(path).map_err(|p| Failure::Config(p.to_string()))?;
    init_logs();
    for w in &cfg.warnings {
        tracing::warn!(key = w.key, "configuration: {w}");
    }
    release_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the async runtime");
            Failure::Reported
        })?;
    let opts = crate::daemon::RunOptions {
        fast_replay: fast,
        ..Default::default()
    };
    let result = runtime.block_on(crate::daemon::run(cfg, opts, shutdown_signal()));
    // Everything is committed once `run` returns. A blocking call may still be running (the
    // replay source opening a named pipe nobody writes to): it must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map(|()| Done::Ok).map_err(|e| {
        tracing::error!(error = format!("{e:#}"), "bandgate stopped on an error");
        Failure::Reported
    })
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

/// Logs: `RUST_LOG` overrides the default (warnings, and bandgate's info). Under systemd
/// (`JOURNAL_STREAM` set) they go to journald natively: the level becomes the entry's
/// priority (`journalctl -p warning` works) and structured fields become journal fields
/// (`journalctl -u bandgate ALERT_ID=17-42`). Elsewhere, to stderr.
pub fn init_logs() {
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
