//! Mosquitto as a child process on a loopback port, with a config file of its own: the one
//! launcher behind `bandgate demo --broker mosquitto`, the integration tests' broker and the
//! end-to-end benchmark (`examples/e2e.rs`). Not used by the daemon, which only connects.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a starting Mosquitto may take to accept connections, and a stopping one to exit.
const WAIT: Duration = Duration::from_secs(10);

/// What to tell someone who has no Mosquitto.
pub const INSTALL: &str = "install it: sudo apt install mosquitto";

/// The `mosquitto` binary on PATH or in the sbin directories Debian installs it in (which are
/// not on a normal user's PATH).
pub fn find() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// A loopback port nobody listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("finding a free loopback port")?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections on the loopback `port` (brokers bind in their own
/// time); `alive` is asked between tries and ends the wait with its error.
pub fn wait_for_port(
    port: u16,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        alive()?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the broker does not accept connections on 127.0.0.1:{port} after {} s",
                WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Mosquitto child started from `mosquitto.conf` in its directory, logging to
/// `mosquitto.log` there (appended across restarts); killed on drop.
pub struct Mosquitto {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Writes `dir/mosquitto.conf` and starts Mosquitto on a free loopback port; returns once
    /// it accepts connections. `config(port)` gives the whole config but for the lines added
    /// here: `user root` (a root-run Mosquitto would otherwise switch to the mosquitto user,
    /// who cannot read or write our directory; ignored when not run as root) and
    /// `log_dest stderr` (the log file).
    pub fn start(dir: &Path, config: impl FnOnce(u16) -> String) -> anyhow::Result<Mosquitto> {
        let binary = find()
            .with_context(|| format!("mosquitto not found on PATH nor in /usr/sbin; {INSTALL}"))?;
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        let text = format!("{}\nuser root\nlog_dest stderr\n", config(port));
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let mut broker = Mosquitto {
            binary,
            dir: dir.to_owned(),
            port,
            child: None,
        };
        broker.restart()?;
        Ok(broker)
    }

    /// The loopback port of its listener (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Everything it logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Kills it (like a crash or a power cut: no goodbye to clients, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM, so that a persistent one saves its sessions first; killed, and
    /// an error, if it has not exited within 10 s.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        if !sent.as_ref().is_ok_and(|s| s.success()) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("could not SIGTERM mosquitto: kill -TERM gave {sent:?}");
        }
        let deadline = Instant::now() + WAIT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "mosquitto did not stop within {} s of SIGTERM; its log:\n{}",
                    WAIT.as_secs(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts it (again) on the same port and config; returns once it accepts connections.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let log_path = self.dir.join("mosquitto.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let ready = wait_for_port(self.port, || match child.try_wait()? {
            Some(status) => bail!(
                "mosquitto exited with {status}; its log ({}):\n{}",
                log_path.display(),
                self.log()
            ),
            None => Ok(()),
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
