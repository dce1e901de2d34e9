//! Real Chromium for the duty console's tests: `tests/console/driver.mjs` (playwright-core, from
//! the committed lock file) as a child process, spoken to one JSON line at a time. Phones are
//! browser contexts of one headless Chromium; pages are read through CDP (no user activation).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// What to tell someone whose machine lacks the browser tests' parts.
const INSTALL: &str = "run .ci/run once (it installs them), or: sudo apt install chromium fonts-wqy-microhei && npm ci --prefix tests/console";

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

impl Browser {
    /// Starts Chromium; fails the test, saying how to install them, where node, Chromium or
    /// the node packages are missing.
    pub fn start() -> Browser {
        Browser::start_with(&[])
    }

    /// `start` with more Chromium flags.
    pub fn start_with(flags: &[&str]) -> Browser {
        let dir = console_dir();
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "the console tests need playwright-core in tests/console/node_modules: {INSTALL}"
        );
        let chromium =
            std::env::var("BANDGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).exists(),
            "the console tests need Chromium at {chromium}: {INSTALL}"
        );
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .env("BANDGATE_CHROMIUM_ARGS", flags.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting node: {e}; {INSTALL}"));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let ready: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("the browser driver did not start ({e}): {first:?}"));
        assert_eq!(ready["ready"], true, "{ready}");
        Browser {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its answer; a command that failed fails the test.
    #[track_caller]
    pub fn cmd(&mut self, cmd: Value) -> Value {
        let answer = self.try_cmd(cmd.clone());
        assert_eq!(answer["ok"], true, "browser: {cmd} -> {answer}");
        answer
    }

    pub fn try_cmd(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("browser answer {line:?}: {e}"))
    }

    #[track_caller]
    pub fn open(&mut self, phone: &str, url: &str) {
        self.cmd(json!({"cmd": "open", "phone": phone, "url": url}));
    }

    #[track_caller]
    pub fn close(&mut self, phone: &str) {
        self.cmd(json!({"cmd": "close", "phone": phone}));
    }

    /// The status element's text, read without touching the page.
    #[track_caller]
    pub fn status(&mut self, phone: &str) -> String {
        self.cmd(json!({"cmd": "status", "phone": phone}))["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the status says every word of `includes` and none of `excludes`.
    #[track_caller]
    pub fn wait_status(&mut self, phone: &str, includes: &[&str], excludes: &[&str]) -> String {
        self.cmd(
            json!({"cmd": "wait_status", "phone": phone, "includes": includes,
            "excludes": excludes, "timeout_ms": 15000}),
        )["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until the alert region named with `name` shows `texts` and none of `absent`;
    /// returns the names of the buttons in it.
    #[track_caller]
    pub fn wait_region(
        &mut self,
        phone: &str,
        name: &str,
        texts: &[&str],
        absent: &[&str],
    ) -> Vec<String> {
        let a = self.cmd(json!({"cmd": "wait_region", "phone": phone, "name": name,
            "texts": texts, "absent": absent, "timeout_ms": 15000}));
        a["buttons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_owned())
            .collect()
    }

    /// A person's tap on the button named `button` in the region named with `region`.
    #[track_caller]
    pub fn tap(&mut self, phone: &str, region: Option<&str>, button: &str) {
        self.cmd(json!({"cmd": "click", "phone": phone, "region": region, "button": button}));
    }

    /// The page's console messages since the last call.
    #[track_caller]
    pub fn logs(&mut self, phone: &str) -> Vec<String> {
        self.cmd(json!({"cmd": "logs", "phone": phone}))["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    }

    /// A screenshot `{name}.png`, of an armed page only (a screenshot gives the page a user
    /// activation): into `target/console-screenshots/`, or the directory
    /// `BANDGATE_SCREENSHOTS` names (`docs/console` renews the README's).
    #[track_caller]
    pub fn screenshot(&mut self, phone: &str, name: &str) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = match std::env::var_os("BANDGATE_SCREENSHOTS") {
            Some(d) => root.join(d),
            None => root.join("target/console-screenshots"),
        };
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        self.cmd(json!({"cmd": "screenshot", "phone": phone, "path": path}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
