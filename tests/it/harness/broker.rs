//! A real Mosquitto for the tests (`bandgate::cmd::demo::mosquitto`, the demo's launcher): its own
//! config in a temp dir, a free loopback port, killed on drop, stoppable and restartable on the
//! same port; or run from the shipped `config/mosquitto.conf` + ACL + password file.

use std::path::Path;
use std::process::Command;

use bandgate::cmd::demo::mosquitto::{self, Mosquitto};

pub struct Broker {
    // Dropped before the dir: the broker is killed before its files go.
    mosquitto: Mosquitto,
    dir: tempfile::TempDir,
    /// The WebSocket listener's port (the shipped config's, moved to a free port).
    ws_port: Option<u16>,
}

impl Broker {
    /// Starts Mosquitto (anonymous, no persistence) and returns once it accepts connections.
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
    /// its one listener. The launcher adds `user root` and logging to stderr (read by `log`);
    /// the harness asks for every log line.
    ///
    /// Fails the test, saying how to install it, where Mosquitto is missing.
    pub fn start_config(config: impl FnOnce(&Path, u16) -> String) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let started = Mosquitto::start(dir.path(), |port| {
            format!("{}\nlog_type all\n", config(dir.path(), port))
        });
        let mosquitto = started.unwrap_or_else(|e| {
            panic!(
                "the MQTT tests need a real Mosquitto ({}): {e:#}\nits log:\n{}",
                mosquitto::INSTALL,
                std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default()
            )
        });
        Broker {
            mosquitto,
            dir,
            ws_port: None,
        }
    }

    /// Mosquitto run from `config/mosquitto.conf` and `config/mosquitto.acl` as shipped, changed
    /// only where the paths and the port must be, installed as the conf's comments say: the
    /// conf in `conf.d/` under a main config like Debian's (`persistence_location`,
    /// `include_dir`); the password file made with `mosquitto_passwd -b` (the first user with
    /// `-c`).
    pub fn shipped(users: &[(&str, &str)]) -> Broker {
        Broker::shipped_edited(users, |conf| conf)
    }

    /// `shipped` with `edit` applied to the shipped `mosquitto.conf` (after the paths).
    pub fn shipped_edited(users: &[(&str, &str)], edit: impl FnOnce(String) -> String) -> Broker {
        let ws_port = mosquitto::free_port().unwrap();
        let mut broker = Broker::start_config(|dir, port| {
            let passwd = dir.join("bandgate.passwd");
            for (i, (user, password)) in users.iter().enumerate() {
                let mut cmd = Command::new("mosquitto_passwd");
                cmd.arg("-b");
                if i == 0 {
                    cmd.arg("-c");
                }
                let out = cmd
                    .arg(&passwd)
                    .args([user, password])
                    .output()
                    .unwrap_or_else(|e| panic!("mosquitto_passwd: {e}; {}", mosquitto::INSTALL));
                assert!(
                    out.status.success(),
                    "mosquitto_passwd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let acl = dir.join("bandgate.acl");
            std::fs::write(&acl, shipped("mosquitto.acl")).unwrap();
            let conf = shipped("mosquitto.conf");
            let conf = set_line(
                &conf,
                "listener 1883",
                &format!("listener {port} 127.0.0.1"),
            );
            let conf = set_line(&conf, "listener 9001", &format!("listener {ws_port}"));
            let conf = set_directive(&conf, "password_file", &passwd.display().to_string());
            let conf = set_directive(&conf, "acl_file", &acl.display().to_string());
            let conf = edit(conf);
            let conf_d = dir.join("conf.d");
            std::fs::create_dir(&conf_d).unwrap();
            std::fs::write(conf_d.join("bandgate.conf"), conf).unwrap();
            // Debian's /etc/mosquitto/mosquitto.conf, less its pid file and log file.
            format!(
                "persistence true\npersistence_location {d}/\ninclude_dir {d}/conf.d\n",
                d = dir.display()
            )
        });
        mosquitto::wait_for_port(ws_port, || Ok(())).unwrap_or_else(|e| {
            panic!(
                "the shipped config's WebSocket listener: {e:#}\n{}",
                broker.log()
            )
        });
        broker.ws_port = Some(ws_port);
        broker
    }

    /// The WebSocket listener's port, for a broker started from the shipped config.
    pub fn ws_port(&self) -> u16 {
        self.ws_port
            .expect("only the shipped config has a WebSocket listener")
    }

    pub fn port(&self) -> u16 {
        self.mosquitto.port()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port())
    }

    /// Kills the broker (like a crash or a power cut: no goodbye to clients).
    pub fn stop(&mut self) {
        self.mosquitto.kill();
    }

    /// Stops the broker with SIGTERM, so a persistent one saves its sessions first; killed
    /// after 10 s, it would not have: the test's premise fails.
    pub fn stop_gracefully(&mut self) {
        self.mosquitto
            .terminate()
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.mosquitto
            .restart()
            .unwrap_or_else(|e| panic!("mosquitto did not restart: {e:#}"));
    }

    pub fn log(&self) -> String {
        self.mosquitto.log()
    }
}

/// A file of the shipped `config/` directory.
pub fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The gateway's MQTT user as the shipped ACL names it (its `user` line).
pub fn acl_gateway_user() -> String {
    shipped("mosquitto.acl")
        .lines()
        .find_map(|l| l.strip_prefix("user "))
        .expect("the shipped ACL has a `user` line for the gateway")
        .trim()
        .to_owned()
}

/// Replaces the one line that is exactly `line` in a Mosquitto config.
pub fn set_line(conf: &str, line: &str, new: &str) -> String {
    let hits = conf.lines().filter(|l| l.trim() == line).count();
    assert_eq!(hits, 1, "config/mosquitto.conf: expected one `{line}` line");
    conf.lines()
        .map(|l| if l.trim() == line { new } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces the one directive line starting with `key ` in a Mosquitto config.
pub fn set_directive(conf: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} ");
    let hits = conf.lines().filter(|l| l.starts_with(&prefix)).count();
    assert_eq!(hits, 1, "config/mosquitto.conf: expected one `{key}` line");
    conf.lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{key} {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
