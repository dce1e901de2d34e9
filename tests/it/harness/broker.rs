//! A real Mosquitto for the tests: its own config in a temp dir, a free loopback port,
//! killed on drop, and stoppable and restartable on the same port.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn mosquitto_path() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("mosquitto not found; the MQTT tests need it: install it: apt-get install -y mosquitto")
        })
}

impl Broker {
    /// Starts Mosquitto and returns once it accepts connections.
    pub fn start() -> Broker {
        Broker::start_with(false)
    }

    /// With `persistent`, Mosquitto keeps sessions and queued messages in its temp dir across
    /// a `stop_gracefully` + `restart` (as a broker on a gateway box is configured).
    pub fn start_with(persistent: bool) -> Broker {
        Broker::start_config(|dir, port| {
            let persistence = if persistent {
                format!(
                    "persistence true\npersistence_location {}/\n",
                    dir.display()
                )
            } else {
                "persistence false\n".to_owned()
            };
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}")
        })
    }

    /// Starts Mosquitto with the config `config(dir, port)` returns: `dir` is the broker's
    /// temp dir (for certificates, password and ACL files), `port` a free loopback port for
    /// its one listener. The harness adds only logging to stderr (read by `log`) and
    /// `user root` (so the broker can read files in the temp dir).
    pub fn start_config(config: impl FnOnce(&Path, u16) -> String) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "{}\nuser root\nlog_dest stderr\nlog_type all\n",
            config(dir.path(), port)
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut broker = Broker {
            dir,
            port,
            child: None,
        };
        broker.restart();
        broker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (like a crash or a power cut: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with SIGTERM, so a persistent one saves its sessions first.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let sent = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(sent.success(), "could not SIGTERM mosquitto");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    // Killed, it would not have saved its sessions: the test's premise fails.
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto did not stop within 10 s of SIGTERM; its log:\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let mut child = Command::new(mosquitto_path())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto did not start; install it: apt-get install -y mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("mosquitto exited with {status}; its log:\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto does not accept connections; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
