//! The built daemon as a child process (`bandgate run --config <site>`): its log, waits on it,
//! `kill -9`, SIGTERM, and a restart on the same state (start it again on the same `Site`).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use bandgate::adapters::control::{Request, Response};
use bandgate::cmd::operate as control;

use super::site::Site;
use super::WAIT;

/// The binary under test: the one cargo built for the tests, or `BANDGATE_BIN` (a release
/// build, to take the figures the storms tests print from it).
pub fn bin() -> PathBuf {
    std::env::var_os("BANDGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bandgate")))
}

/// `bandgate <args>` run to its end.
pub fn bandgate(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Output bytes as text, for messages and `contains`.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The built daemon as a child process (`bandgate run --config ...`); SIGKILLed on drop.
pub struct Gateway {
    child: Option<Child>,
    log: PathBuf,
}

impl Gateway {
    /// Starts `bandgate run`; its stderr goes to `log_name` in the site dir.
    pub fn start(site: &Site, log_name: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_args(site, log_name, &[], env)
    }

    /// `start` with more arguments to `bandgate run` (`--fast`).
    pub fn start_args(site: &Site, log_name: &str, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let log = site.path().join(log_name);
        let err = File::create(&log).unwrap();
        let mut cmd = Command::new(bin());
        // Debug logs for the tests that wait on them; `BANDGATE_LOG` (e.g. "info", as a
        // gateway runs) when taking figures, since a debug line per band costs time.
        let log_filter =
            std::env::var("BANDGATE_LOG").unwrap_or_else(|_| "warn,bandgate=debug".into());
        cmd.arg("run")
            .arg("--config")
            .arg(&site.config)
            .args(args)
            .env("RUST_LOG", log_filter)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the built bandgate binary");
        Gateway {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the gateway did not log {needle:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first line of the daemon's log that contains `needle`.
    #[track_caller]
    pub fn log_line(&self, needle: &str) -> String {
        let log = self.log();
        let line = log.lines().find(|l| l.contains(needle));
        line.unwrap_or_else(|| panic!("no {needle:?} in the gateway's log:\n{log}"))
            .to_owned()
    }

    /// Waits until `needle` is in the daemon's log `times` times (the link retried).
    pub fn wait_log_times(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "the gateway did not log {needle:?} {times} times; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon answers on its control socket with the broker connected.
    pub fn wait_ready(&mut self, site: &Site) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("bandgate run exited with {status}:\n{}", self.log());
            }
            if let Ok(Response::Status(s)) = control::request(&site.socket(), &Request::Status) {
                if s.broker_connected {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer on its socket with the broker connected:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id (for `taskset` and the like).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// `kill -9`: no goodbye, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn term(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("gateway running").id();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        self.wait_exit()
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("gateway running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the gateway did not exit; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}
