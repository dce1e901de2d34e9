//! Every text an installer reads from `check-config` (each problem with its fix, the warnings,
//! the summary) and from the lenient readers of `bandgate.toml` (operator commands, `enrol`),
//! pinned as expect tests (`UPDATE_EXPECT=1` rewrites them after an intended change); and the
//! commented example `config/bandgate.toml`, which must state exactly the code's defaults.

use std::path::{Path, PathBuf};
use std::process::Command;

use bandgate::config::{self, lenient, sections, summary::summary};
use expect_test::{expect, Expect};

use crate::harness::vectors::write_private;

fn repo_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

/// The example bandgate.toml after `edit`, with its keys.toml (chmod 600), in `dir`.
fn example_in(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo_config("bandgate.toml")).unwrap();
    let keys = std::fs::read_to_string(repo_config("keys.toml")).unwrap();
    write_private(dir, "keys.toml", &keys);
    let path = dir.join("bandgate.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// Replaces `from` with `to` in `text`, failing if `from` is not there (so a changed example
/// cannot quietly make a case test nothing).
#[track_caller]
fn swap(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example no longer holds {from:?}");
    text.replacen(from, to, 1)
}

/// `swap` for each pair, in order.
#[track_caller]
fn swaps(text: String, pairs: &[(&str, &str)]) -> String {
    pairs.iter().fold(text, |t, (from, to)| swap(t, from, to))
}

/// `config::load`'s problems (or warnings, when it loads), one per line, the dir as `$DIR`.
#[track_caller]
fn check(path: &Path, dir: &Path, expect: Expect) {
    let lines = match config::load(path) {
        Ok(c) => c
            .warnings
            .iter()
            .map(|w| format!("warning: {w}\n"))
            .collect(),
        Err(problems) => format!("{problems}\n"),
    };
    expect.assert_eq(&lines.replace(&dir.display().to_string(), "$DIR"));
}

#[test]
fn mistakes_in_the_console_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                ("listen = \"0.0.0.0:8080\"", "listen = \"8080\""),
                (
                    "# cert_file = \"/etc/bandgate/tls/console.pem\"",
                    "cert_file = \"console.pem\"",
                ),
                (
                    "broker_url = \"ws://{host}:9001\"",
                    "broker_url = \"mqtt://{host}:1883\"",
                ),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
            $DIR/bandgate.toml: web.listen: "8080" is not an address and port; fix: write ADDRESS:PORT, e.g. "0.0.0.0:8080" (every address) or "192.168.1.10:8080" (the centre's LAN only)
            $DIR/bandgate.toml: web.key_file: cert_file is set but key_file is not: HTTPS needs both; fix: add key_file = "/etc/bandgate/tls/console.key", or remove cert_file for plain HTTP
            $DIR/bandgate.toml: web.broker_url: "mqtt://{host}:1883" is not a WebSocket address; fix: write ws://HOST:PORT (or wss:// with TLS), e.g. "ws://{host}:9001"; {host} is the host name the phone opened the console with
        "#]],
    );
    // HTTPS with a plain ws:// broker: the browser would refuse it.
    std::fs::write(dir.path().join("console.pem"), "x").unwrap();
    std::fs::write(dir.path().join("console.key"), "x").unwrap();
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                (
                    "# cert_file = \"/etc/bandgate/tls/console.pem\"",
                    "cert_file = \"console.pem\"",
                ),
                (
                    "# key_file = \"/etc/bandgate/tls/console.key\"",
                    "key_file = \"console.key\"",
                ),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/bandgate.toml: web.broker_url: "ws://{host}:9001" is plain ws:// but the console is served over HTTPS: the phone's browser refuses to connect (mixed content); fix: use wss:// with a TLS WebSocket listener in Mosquitto, or serve the console without cert_file/key_file
    "#]],
    );
}

#[test]
fn mistakes_at_the_top_and_in_the_sections() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty-password"), "  \n").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                ("site_id = \"guanghuiyuan\"", "site_id = \"guang hui/yuan\""),
                ("gateway_id = \"gw-guanghuiyuan-1\"", "#"),
                ("locale = \"zh-CN\"", "locale = \"zh\""),
                (
                    "timezone = \"Asia/Shanghai\"",
                    "timezone = \"Asia/Beijing\"",
                ),
                ("source = \"bluez\"", "source = \"radio\""),
                ("company_id = 0xFFFF", "company_id = 70000"),
                ("silence_restart = \"60s\"", "silence_restart = \"0s\""),
                (
                    "url = \"mqtt://127.0.0.1:1883\"",
                    "url = \"mqtt://broker/path\"",
                ),
                (
                    "# password_file = \"/etc/bandgate/mqtt-password\"",
                    "password_file = \"empty-password\"",
                ),
                (
                    "# topic_prefix = \"bandgate/guanghuiyuan\"",
                    "topic_prefix = \"a/#\"",
                ),
                ("status_interval = \"60s\"", "status_interval = \"soon\""),
                (
                    "resolved_retention = \"10m\"",
                    "resolved_retention = \"900ms\"",
                ),
                ("ack_timeouts = [\"60s\", \"60s\"]", "ack_timeouts = []"),
                ("wearer_cancel = \"verify\"", "wearer_cancel = \"ignore\""),
                ("claim_timeout = \"15m\"", "claim_timeout = \"31d\""),
                ("low_battery_pct = 20", "low_battery_pct = 120"),
                ("publish_vitals = false", "publish_vitals = \"maybe\""),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
            $DIR/bandgate.toml: site_id: "guang hui/yuan" cannot be used in MQTT topics; fix: use letters, digits, '-' and '_' only, e.g. "guanghuiyuan"
            $DIR/bandgate.toml: gateway_id: this required key is missing; fix: add it, e.g. gateway_id = "gw-guanghuiyuan-1"
            $DIR/bandgate.toml: locale: unknown locale "zh"; fix: use "zh-CN" (Chinese) or "en" (English)
            $DIR/bandgate.toml: timezone: unknown time zone "Asia/Beijing"; fix: use an IANA time zone name such as "Asia/Shanghai"
            $DIR/bandgate.toml: privacy.publish_vitals: found a string "maybe" where a boolean belongs; fix: write true or false, e.g. publish_vitals = false
            $DIR/bandgate.toml: ble.source: unknown source "radio"; fix: use "bluez" (the radio), "replay" (a capture file) or "simulate"
            $DIR/bandgate.toml: ble.company_id: 70000 is not a Bluetooth company id (0 to 65535); fix: use the id the bands advertise under, e.g. company_id = 0xFFFF
            $DIR/bandgate.toml: ble.silence_restart: the duration "0s" is zero; fix: give a time longer than zero, e.g. "60s"
            $DIR/bandgate.toml: mqtt.url: "mqtt://broker/path" is not a broker address: it must be only a host and a port, with no path or user; fix: write mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS, e.g. "mqtt://127.0.0.1:1883"
            $DIR/bandgate.toml: mqtt.password_file: $DIR/empty-password is empty; fix: write the gateway's MQTT password into it, on one line
            $DIR/bandgate.toml: mqtt.username: password_file is set but username is not; fix: add username = "<the gateway's MQTT user>" under [mqtt]
            $DIR/bandgate.toml: mqtt.topic_prefix: "a/#" is not a topic prefix; fix: use topic levels without '+' or '#' and no leading or trailing '/', e.g. "bandgate/guanghuiyuan"
            $DIR/bandgate.toml: mqtt.status_interval: "soon" is not a duration (expected number at 0); fix: write a number with a unit in quotes, e.g. "90s", "30m" or "2h" (default "60s")
            $DIR/bandgate.toml: alerts.resolved_retention: "900ms" is shorter than 1 second, the shortest wait bandgate accepts: a timer this short would page or check in a storm; fix: give at least "1s"; for a real site 1m to 24h is recommended (default "10m")
            $DIR/bandgate.toml: escalation.ack_timeouts: the list is empty, so nobody but the supervisors would ever be paged; fix: give one wait per tier before the supervisors, e.g. ack_timeouts = ["60s", "60s"]
            $DIR/bandgate.toml: escalation.wearer_cancel: unknown choice "ignore"; fix: use "verify" (staff confirm by phone) or "close" (the wearer's cancel resolves the alert)
            $DIR/bandgate.toml: escalation.claim_timeout: "31d" is longer than 30 days, the longest wait bandgate accepts: a timer this long would in effect never fire; fix: give at most "30d"; for a real site 2m to 1h is recommended (default "15m")
            $DIR/bandgate.toml: supervision.low_battery_pct: 120 is not a percentage; fix: use a whole number from 0 to 100, e.g. low_battery_pct = 20
        "#]],
    );

    // The other faults of [ble] and [mqtt].
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                ("source = \"bluez\"", "source = \"replay\""),
                (
                    "# replay_file = \"capture.jsonl\"",
                    "replay_file = \"gone.jsonl\"",
                ),
                (
                    "# password_file = \"/etc/bandgate/mqtt-password\"",
                    "password_file = \"no-such-password\"",
                ),
                ("# username = \"gw-guanghuiyuan-1\"", "username = \"gw\""),
                (
                    "# ca_file = \"/etc/bandgate/ca.pem\"",
                    "ca_file = \"ca.pem\"",
                ),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/bandgate.toml: ble.replay_file: the file $DIR/gone.jsonl does not exist; fix: correct the path (relative paths start at the config file's directory)
        $DIR/bandgate.toml: mqtt.password_file: cannot read $DIR/no-such-password: No such file or directory (os error 2); fix: check the path and that the bandgate user may read the file
        $DIR/bandgate.toml: mqtt.ca_file: a CA certificate is given but the url is mqtt:// (no TLS); fix: use mqtts:// in url, or remove ca_file
    "#]],
    );
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                ("source = \"bluez\"", "source = \"replay\""),
                ("scan = \"active\"", "scan = \"quiet\""),
                (
                    "url = \"mqtt://127.0.0.1:1883\"",
                    "url = \"tcp://127.0.0.1\"",
                ),
                (
                    "# ca_file = \"/etc/bandgate/ca.pem\"",
                    "ca_file = \"no-such-ca.pem\"",
                ),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
            $DIR/bandgate.toml: ble.scan: unknown scan mode "quiet"; fix: use "active" (BlueZ discovery, the default) or "passive" (BlueZ's advertisement monitor: BlueZ 5.56 or later with experimental features on, Linux 5.10 or later; see the README)
            $DIR/bandgate.toml: ble.replay_file: source = "replay" needs a capture file to replay; fix: add replay_file = "capture.jsonl" under [ble], or use source = "bluez"
            $DIR/bandgate.toml: mqtt.url: "tcp://127.0.0.1" is not a broker address: it must start with mqtt:// or mqtts://; fix: write mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS, e.g. "mqtt://127.0.0.1:1883"
            $DIR/bandgate.toml: mqtt.ca_file: the CA certificate $DIR/no-such-ca.pem does not exist; fix: correct the path, or remove ca_file to use the system's certificates
        "#]],
    );
}

#[test]
fn mistakes_in_the_entries_and_their_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                ("id = \"zhang\"", "id = \"zhang wei\""),
                ("id = \"liu\"", "id = \"zhao\""),
                ("name = \"李娜\"", "nmae = \"李娜\""),
                (
                    "phone = \"13800000005\"",
                    "phone = \"13800000005\"\ncolour = \"red\"",
                ),
                (
                    "days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
                    "days = [\"mon\", \"tues\"]",
                ),
                ("from = \"08:00\"", "from = \"8am\""),
                ("staff = [\"zhao\"]", "staff = []"),
                ("days = [\"sat\", \"sun\"]", "days = []"),
                ("staff = [\"liu\"]", "staff = [\"lui\", \"ghost\"]"),
                ("supervisors = [\"chen\"]", "supervisors = [\"boss\"]"),
                ("id = \"r018\"", "id = \"r017\""),
                ("device_id = 23", "device_id = 17"),
                ("device_id = 31", "device_id = 99"),
                ("device_id = 18", "device_id = -1"),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
            $DIR/bandgate.toml: staff[0].id: "zhang wei" cannot be an MQTT user name and topic level; fix: use letters, digits, '-' and '_' only, e.g. id = "zhang"
            $DIR/bandgate.toml: staff[2].id: the staff id "zhao" is used twice; fix: give every person their own id
            $DIR/bandgate.toml: staff[3].nmae: unknown key "nmae"; did you mean "name"?; fix: rename it to name
            $DIR/bandgate.toml: staff[3].name: this required key is missing; fix: add it, e.g. name = "张伟"
            $DIR/bandgate.toml: staff[4].colour: unknown key "colour"; fix: remove it; the keys allowed here are id, name, phone, channels
            $DIR/bandgate.toml: rota[0].days[1]: "tues" is not a day; fix: use mon, tue, wed, thu, fri, sat or sun
            $DIR/bandgate.toml: rota[0].from: "8am" is not a time of day; fix: write local 24-hour time as "HH:MM", e.g. "08:00" or "20:30"
            $DIR/bandgate.toml: rota[1].staff: nobody is on this shift; fix: list the staff ids on duty, e.g. staff = ["zhang"]
            $DIR/bandgate.toml: rota[2].days: no days are given, so this shift never runs; fix: list its days, e.g. days = ["mon", "tue"]
            $DIR/bandgate.toml: residents[1].id: the resident id "r017" is used twice; fix: give every resident their own id
            $DIR/bandgate.toml: residents[1].device_id: -1 is not a wristband id (0 to 4294967295); fix: copy the number printed on the band or its enrolment record
            $DIR/bandgate.toml: residents[2].device_id: band 17 is already worn by resident "r017"; fix: each band belongs to one resident; check the number on the band
            $DIR/bandgate.toml: residents[3].device_id: band 99 has no key in the key file, so its frames cannot be read; fix: add 99 = "<32 hex digits>" under [devices] in $DIR/keys.toml
            $DIR/bandgate.toml: rota[0].staff[0]: staff id "zhang" is not listed under [[staff]] (did you mean "wang"?); fix: add a [[staff]] entry with id = "zhang", or correct the id
            $DIR/bandgate.toml: rota[2].staff[0]: staff id "lui" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "lui", or correct the id
            $DIR/bandgate.toml: rota[2].staff[1]: staff id "ghost" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "ghost", or correct the id
            $DIR/bandgate.toml: escalation.supervisors[0]: staff id "boss" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "boss", or correct the id
            $DIR/bandgate.toml: residents[0].team[0]: staff id "li" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "li", or correct the id
            $DIR/bandgate.toml: residents[1].team[0]: staff id "li" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "li", or correct the id
            $DIR/bandgate.toml: residents[2].team[0]: staff id "zhang" is not listed under [[staff]] (did you mean "wang"?); fix: add a [[staff]] entry with id = "zhang", or correct the id
            $DIR/bandgate.toml: residents[2].team[1]: staff id "liu" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "liu", or correct the id
            $DIR/bandgate.toml: residents[3].team[0]: staff id "liu" is not listed under [[staff]]; fix: add a [[staff]] entry with id = "liu", or correct the id
        "#]],
    );
}

#[test]
fn wrong_shapes_missing_keys_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        let t = swap(t, "[alerts]\nresolved_retention = \"10m\"", "alerts = 5");
        let t = swap(
            t,
            "keys_file = \"keys.toml\"",
            "keys_file = \"keys.toml\"\nlog_level = \"info\"",
        );
        let t = swap(t, "renotify_every = \"20s\"", "renotfy_every = \"20s\"");
        let t = swap(t, "name = \"刘芳\"\n", "");
        let t = swap(t, "days = [\"sat\", \"sun\"]", "days = \"sat\"");
        let t = swap(t, "device_id = 18", "device_id = \"eighteen\"");
        let t = swap(
            t,
            "team = [\"liu\"]",
            "team = [\"liu\"]\n[residents.pet]\nname = \"cat\"",
        );
        format!("{t}\n[[staff]]\nid = \"sun\"\nname = true\n")
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
            $DIR/bandgate.toml: log_level: unknown key "log_level"; fix: remove it; the keys allowed here are site_id, gateway_id, locale, timezone, state_dir, keys_file, control_socket, ble, mqtt, alerts, escalation, supervision, privacy, fallback, web, staff, rota, residents
            $DIR/bandgate.toml: mqtt.alerts: unknown key "alerts"; fix: remove it; the keys allowed here are url, username, password_file, ca_file, topic_prefix, status_interval, device_state_interval
            $DIR/bandgate.toml: escalation.renotfy_every: unknown key "renotfy_every"; did you mean "renotify_every"?; fix: rename it to renotify_every
            $DIR/bandgate.toml: staff[1].name: this required key is missing; fix: add it, e.g. name = "张伟"
            $DIR/bandgate.toml: rota[2].days: found a string "sat" where a list belongs; fix: write a list in square brackets, e.g. days = ["mon", "tue"]
            $DIR/bandgate.toml: residents[1].device_id: found a string "eighteen" where an integer belongs; fix: write a whole number, e.g. device_id = 17
            $DIR/bandgate.toml: residents[3].pet: unknown key "pet"; fix: remove it; the keys allowed here are id, name, address, phone, notes, device_id, team
            $DIR/bandgate.toml: residents[2].team[1]: staff id "liu" is not listed under [[staff]] (did you mean "li"?); fix: add a [[staff]] entry with id = "liu", or correct the id
            $DIR/bandgate.toml: residents[3].team[0]: staff id "liu" is not listed under [[staff]] (did you mean "li"?); fix: add a [[staff]] entry with id = "liu", or correct the id
        "#]],
    );

    // The lists written as single tables, and residents given twice.
    let path = dir.path().join("shapes.toml");
    std::fs::write(
        &path,
        "site_id = \"s\"\ngateway_id = \"g\"\nkeys_file = \"keys.toml\"\nescalation = \"fast\"\n\
         staff = { id = \"a\" }\nresidents = []\n\n[[residents]]\nid = \"r1\"\nname = \"x\"\ndevice_id = 17\n",
    )
    .unwrap();
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/shapes.toml: staff: found a map where a list belongs; fix: write each entry under its own [[staff]] line (double brackets)
        $DIR/shapes.toml: residents: residents are given twice: as 1 [[residents]] entries and as one value; fix: keep only the [[residents]] entries
        $DIR/shapes.toml: escalation: must be a table, found text; fix: write it as a section: a line [escalation] followed by its keys
    "#]],
    );
}

/// Uncomments the example's `[fallback]` section and its keys, so that `swap` can edit them.
fn with_fallback(t: String) -> String {
    let t = swap(t, "# [fallback]", "[fallback]");
    let t = swap(t, "# after = ", "after = ");
    let t = swap(t, "# steps = ", "steps = ");
    let t = swap(t, "# step_every = ", "step_every = ");
    let t = swap(t, "# modem = ", "modem = ");
    swap(t, "# ring_for = ", "ring_for = ")
}

#[test]
fn mistakes_in_the_fallback_section_and_the_staffs_channels() {
    let dir = tempfile::tempdir().unwrap();
    // The example's section as written is valid and quiet.
    let path = example_in(dir.path(), with_fallback);
    let cfg = config::load(&path).unwrap_or_else(|p| panic!("{p}"));
    let text = summary(&cfg, "2026-11-27T13:00:00Z".parse().unwrap());
    assert!(
        text.contains("\nfallback: sms, call, call after 45s unconfirmed (modem: the first modem ModemManager lists)\n"),
        "{text}"
    );
    check(
        &path,
        dir.path(),
        expect![[r#"
"#]],
    );
    let path = example_in(dir.path(), |t| {
        let t = with_fallback(t);
        let t = swap(
            t,
            "steps = [\"sms\", \"call\", \"call\"]",
            "steps = [\"sms\", \"cal\", \"fax\"]",
        );
        let t = swap(
            t,
            "step_every = [\"60s\", \"120s\"]",
            "step_every = [\"60s\"]",
        );
        let t = swap(t, "modem = \"auto\"", "modem = \"/dev/ttyUSB2\"");
        let t = swap(
            t,
            "ring_for = \"40s\"",
            "ring_for = \"0s\"\nwebhook_url = \"https://x\"",
        );
        let t = swap(
            t,
            "# channels = [\"mqtt\", \"sms\", \"call\"]",
            "channels = [\"sms\", \"wechat\"]",
        );
        swap(t, "phone = \"13800000004\"\n", "")
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
            $DIR/bandgate.toml: staff[3].channels[1]: unknown channel "wechat"; fix: use "mqtt" (the duty app), "sms" and "call", e.g. channels = ["sms", "call"] for a guardian without the app
            $DIR/bandgate.toml: fallback.ring_for: the duration "0s" is zero; fix: give a time longer than zero, e.g. "40s"
            $DIR/bandgate.toml: fallback.steps[1]: unknown step "cal" (did you mean "call"?); fix: each step is "sms", "call" or "webhook", e.g. steps = ["sms", "call", "call"]
            $DIR/bandgate.toml: fallback.steps[2]: unknown step "fax"; fix: each step is "sms", "call" or "webhook", e.g. steps = ["sms", "call", "call"]
            $DIR/bandgate.toml: fallback.step_every: 1 gaps for 3 steps; the ladder needs one gap between each two steps, so 2; fix: give 2 durations, e.g. step_every = ["60s", "120s"]
            $DIR/bandgate.toml: fallback.modem: "/dev/ttyUSB2" is neither "auto", "none" nor a modem's D-Bus path; fix: use "auto" (the first modem ModemManager lists), or the path `mmcli -L` prints, e.g. "/org/freedesktop/ModemManager1/Modem/0"
            $DIR/bandgate.toml: fallback.webhook_secret_file: webhook_url is set but webhook_secret_file is not: requests would go unsigned; fix: add webhook_secret_file = "/etc/bandgate/webhook-secret" (the shared HMAC key, one line, chmod 640 root:bandgate)
            $DIR/bandgate.toml: staff[3].phone: "li" is reached by SMS or call only, but has no phone number: this person would never be reached; fix: add phone = "138..."
        "#]],
    );
    // The webhook: a bad address, a secret every user can read, a step without a URL.
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, "k\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let path = example_in(dir.path(), |t| {
        let t = with_fallback(t);
        swap(
            t,
            "ring_for = \"40s\"",
            "ring_for = \"40s\"\nwebhook_url = \"ftp://platform\"\nwebhook_secret_file = \"webhook-secret\"",
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/bandgate.toml: fallback.webhook_url: "ftp://platform" is not a webhook address: it must start with https:// (or http:// on a trusted network); fix: write the platform's address, e.g. "https://platform.example/bandgate/fallback"
        $DIR/bandgate.toml: fallback.webhook_secret_file: $DIR/webhook-secret is readable by every user: anyone on the gateway could sign requests; fix: sudo chown root:bandgate $DIR/webhook-secret && sudo chmod 640 $DIR/webhook-secret
    "#]],
    );
    let path = example_in(dir.path(), |t| {
        let t = with_fallback(t);
        swap(
            t,
            "steps = [\"sms\", \"call\", \"call\"]",
            "steps = [\"webhook\", \"call\", \"call\"]",
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/bandgate.toml: fallback.steps: a "webhook" step, but no webhook_url: the step could never be taken; fix: add webhook_url and webhook_secret_file under [fallback], or remove the step
    "#]],
    );
    // Without [fallback], a person without the app is never reached; ranges are warned about.
    let path = example_in(dir.path(), |t| {
        swap(
            t,
            "# channels = [\"mqtt\", \"sms\", \"call\"]",
            "channels = [\"sms\", \"call\"]",
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/bandgate.toml: staff[3].channels: "li" has no "mqtt" channel, but there is no [fallback] section, so no SMS or call is ever made: this person would never be reached; fix: add a [fallback] section (see config/bandgate.toml), or add "mqtt" to their channels
    "#]],
    );
    let path = example_in(dir.path(), |t| {
        let t = with_fallback(t);
        let t = swap(t, "after = \"45s\"", "after = \"2s\"");
        let t = swap(
            t,
            "step_every = [\"60s\", \"120s\"]",
            "step_every = [\"3s\", \"3s\"]",
        );
        let t = swap(t, "modem = \"auto\"", "modem = \"none\"");
        swap(t, "ring_for = \"40s\"", "ring_for = \"5s\"")
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        warning: $DIR/bandgate.toml: fallback.after: 2s is below the recommended 20s to 5m: on a real site people are sent an SMS before their phone had a fair chance to confirm the page (a phone waking from sleep over a weak network takes seconds); fix: fine for a test or a demo; otherwise give at least "20s" (default "45s")
        warning: $DIR/bandgate.toml: fallback.ring_for: 5s is below the recommended 20s to 90s: on a real site the call is hung up before an old phone in a pocket can be answered; fix: fine for a test or a demo; otherwise give at least "20s" (default "40s")
        warning: $DIR/bandgate.toml: fallback.step_every[0]: 3s is below the recommended 1m to 10m: on a real site SMS and calls follow each other faster than a person can pick up the phone, and carriers flag a number that calls one callee more than once a minute; fix: fine for a test or a demo; otherwise give at least "1m" (default "60s")
        warning: $DIR/bandgate.toml: fallback.step_every[1]: 3s is below the recommended 1m to 10m: on a real site SMS and calls follow each other faster than a person can pick up the phone, and carriers flag a number that calls one callee more than once a minute; fix: fine for a test or a demo; otherwise give at least "1m" (default "60s")
        warning: $DIR/bandgate.toml: fallback.modem: "none": no SMS or call can be made; every step of the ladder is recorded as failed; fix: use "auto" once a 4G modem is plugged in and ModemManager sees it (mmcli -L)
    "#]],
    );
}

#[test]
fn mistakes_from_the_environment_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    let out = Command::new(crate::harness::bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("BANDGATE__MQTT__STATUS_INTERVL", "60s")
        .env("BANDGATE__ESCALATION__REPEAT_EVERY", "0s")
        .env("BANDGATE__SUPERVISION__LOW_BATTERY_PCT", "5")
        .env("BANDGATE__BLE__COLOUR", "red")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(out.stdout.is_empty());
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "$DIR");
    expect![[r#"
        $DIR/bandgate.toml: ble.colour: unknown key "colour" (set by the environment variable BANDGATE__BLE__COLOUR); fix: remove it; the keys allowed here are source, adapter, company_id, silence_restart, scan, replay_file
        $DIR/bandgate.toml: mqtt.status_intervl: unknown key "status_intervl"; did you mean "status_interval"? (set by the environment variable BANDGATE__MQTT__STATUS_INTERVL); fix: rename the variable to BANDGATE__MQTT__STATUS_INTERVAL
        $DIR/bandgate.toml: escalation.repeat_every: the duration "0s" is zero (set by the environment variable BANDGATE__ESCALATION__REPEAT_EVERY); fix: give a time longer than zero, e.g. "60s"
    "#]].assert_eq(&stderr);
}

#[test]
fn files_that_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    check(
        &dir.path().join("missing.toml"),
        dir.path(),
        expect![[r#"
            $DIR/missing.toml: the configuration file does not exist; fix: copy the example and edit it: cp config/bandgate.toml $DIR/missing.toml (from the bandgate source tree), or pass --config PATH
        "#]],
    );
    check(
        dir.path(),
        dir.path(),
        expect![[r#"
        $DIR: cannot read the configuration file: Is a directory (os error 21); fix: check that the bandgate user may read it
    "#]],
    );
    let path = example_in(dir.path(), |t| {
        swap(t, "locale = \"zh-CN\"", "locale = zh-CN")
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/bandgate.toml: not valid TOML at line 14, column 10: invalid string
        expected `"`, `'`; fix: look near that place for a missing quote, bracket, comma or '='; text values need double quotes
    "#]],
    );
    // The key file's own problems are the config's too.
    let path = example_in(dir.path(), |t| t);
    write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"not a key\"\n18 = 18\n",
    );
    check(
        &path,
        dir.path(),
        expect![[r#"
        $DIR/keys.toml: devices.17: the key is 9 characters of which 7 are not hex digits; a key is exactly 32 hex digits (0-9, a-f); fix: copy the key again from the enrolment record, or run bandgate enrol to make a new one
        $DIR/keys.toml: devices.18: the key is a integer, not a quoted string; fix: write the key in quotes: 17 = "eea7171f8b19f17864f43aa4d1cfbdd6"
    "#]],
    );
}

#[test]
fn warnings_for_values_outside_the_recommended_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                ("low_battery_pct = 20", "low_battery_pct = 5"),
                (
                    "ack_timeouts = [\"60s\", \"60s\"]",
                    "ack_timeouts = [\"60s\", \"60s\", \"60s\", \"60s\"]",
                ),
                ("silence_restart = \"60s\"", "silence_restart = \"1h\""),
            ],
        )
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        warning: $DIR/bandgate.toml: ble.silence_restart: 1h is above the recommended 30s to 10m: on a real site a radio that stopped hearing anything goes unnoticed this long; fix: give at most "10m" (default "60s") unless you mean it
        warning: $DIR/bandgate.toml: escalation.ack_timeouts: 4 waits, but only tier 1 (who is on duty) and tier 2 (adds the resident's team) page different people before the supervisors: tiers 3 to 4 page nobody new and are skipped at once; fix: give two waits, e.g. ack_timeouts = ["60s", "60s"]
        warning: $DIR/bandgate.toml: supervision.low_battery_pct: 5% is below the recommended 10 to 50: a band may run flat within a day of its notice; fix: use 10 to 50, e.g. low_battery_pct = 20
    "#]],
    );
    let path = example_in(dir.path(), |t| {
        swap(t, "low_battery_pct = 20", "low_battery_pct = 80")
    });
    check(
        &path,
        dir.path(),
        expect![[r#"
        warning: $DIR/bandgate.toml: supervision.low_battery_pct: 80% is above the recommended 10 to 50: bands raise a low_battery notice every day while still well charged; fix: use 10 to 50, e.g. low_battery_pct = 20
    "#]],
    );
}

#[test]
fn the_check_config_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    let cfg = config::load(&path).unwrap_or_else(|p| panic!("{p}"));
    // Friday 21:00 in Shanghai: the weekday night shift.
    let now = "2026-11-27T13:00:00Z".parse().unwrap();
    let text = summary(&cfg, now).replace(&dir.path().display().to_string(), "$DIR");
    expect![[r#"
        $DIR/bandgate.toml: configuration is valid
        site: guanghuiyuan
        gateway: gw-guanghuiyuan-1
        residents: 4
        staff: 6
        bands with keys: 4 of 4 (4 keys in $DIR/keys.toml)
        broker: mqtt://127.0.0.1:1883 (topics under bandgate/guanghuiyuan/)
        source: bluez
        tiers: 3
        supervisors: 陈静 (chen)
        on duty now (Fri 2026-11-27 21:00 Asia/Shanghai): 赵磊 (zhao)"#]]
    .assert_eq(&text);

    // With warnings, and nobody on duty.
    let path = example_in(dir.path(), |t| {
        let t = swap(t, "renotify_every = \"20s\"", "renotify_every = \"3s\"");
        swap(t, "staff = [\"liu\"]", "staff = [\"liu\"]\n\n[[rota]]\ndays = [\"mon\"]\nfrom = \"00:00\"\nto = \"00:01\"\nstaff = [\"li\"]")
            .replace("days = [\"sat\", \"sun\"]", "days = [\"sun\"]")
            .replace("supervisors = [\"chen\"]", "supervisors = []")
    });
    let cfg = config::load(&path).unwrap_or_else(|p| panic!("{p}"));
    // Saturday 10:00 in Shanghai.
    let now = "2026-11-28T02:00:00Z".parse().unwrap();
    let text = summary(&cfg, now).replace(&dir.path().display().to_string(), "$DIR");
    expect![[r#"
        $DIR/bandgate.toml: configuration is valid
        site: guanghuiyuan
        gateway: gw-guanghuiyuan-1
        residents: 4
        staff: 6
        bands with keys: 4 of 4 (4 keys in $DIR/keys.toml)
        broker: mqtt://127.0.0.1:1883 (topics under bandgate/guanghuiyuan/)
        source: bluez
        tiers: 3
        supervisors: none
        warnings: 1 (values outside their recommended range, listed on stderr; fine for a test or a demo)
        on duty now (Sat 2026-11-28 10:00 Asia/Shanghai): nobody (alerts start at tier 2, the residents' teams)"#]].assert_eq(&text);

    // With BTHome devices: each listed with its resident, lists and silence rule.
    let path = example_in(dir.path(), |t| {
        swap(t, "device_id = 17\n", "device_id = 9001\n")
    });
    let keys = dir.path().join("keys.toml");
    let mut k = std::fs::read_to_string(&keys).unwrap();
    k.push_str(
        "\n[bthome.\"54:48:e6:8f:80:a5\"]\ndevice_id = 9001\nkey = \"231d39c1d7cc1ab1aee224cd096db932\"\n\
         \n[bthome.\"54:48:E6:8F:80:A6\"]\ndevice_id = 9002\nkey = \"231d39c1d7cc1ab1aee224cd096db933\"\n\
         sos = [\"hold_press\"]\ncancel = []\nsilent_after = \"off\"\n",
    );
    std::fs::write(&keys, k).unwrap();
    let cfg = config::load(&path).unwrap_or_else(|p| panic!("{p}"));
    let now = "2026-11-27T13:00:00Z".parse().unwrap();
    let text = summary(&cfg, now).replace(&dir.path().display().to_string(), "$DIR");
    expect![[r#"
        $DIR/bandgate.toml: configuration is valid
        site: guanghuiyuan
        gateway: gw-guanghuiyuan-1
        residents: 4
        staff: 6
        bands with keys: 4 of 4 (6 keys in $DIR/keys.toml)
        BTHome device 9001 (54:48:E6:8F:80:A5, resident r017): sos = ["press", "long_press"], cancel = ["double_press"], silent after 2h
        BTHome device 9002 (54:48:E6:8F:80:A6, no resident): sos = ["hold_press"], cancel = [], never reported silent (silent_after = "off")
        broker: mqtt://127.0.0.1:1883 (topics under bandgate/guanghuiyuan/)
        source: bluez
        tiers: 3
        supervisors: 陈静 (chen)
        on duty now (Fri 2026-11-27 21:00 Asia/Shanghai): 赵磊 (zhao)"#]].assert_eq(&text);
}

#[test]
fn what_the_lenient_readers_say() {
    let dir = tempfile::tempdir().unwrap();
    let show =
        |p: config::Problem| format!("{p}").replace(&dir.path().display().to_string(), "$DIR");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "control_socket = \"x.sock\n").unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, "control_socket = 5\n").unwrap();
    let said = [
        lenient::control_socket(&dir.path().join("missing.toml")).unwrap_err(),
        lenient::control_socket(&broken).unwrap_err(),
        lenient::control_socket(&wrong).unwrap_err(),
    ]
    .map(show)
    .join("\n");
    expect![[r#"
        $DIR/missing.toml: cannot read the configuration file: No such file or directory (os error 2); fix: pass --socket PATH, or a --config your user may read
        $DIR/broken.toml: not valid TOML: invalid basic string; fix: run bandgate check-config
        $DIR/wrong.toml: control_socket: a integer, not a quoted path; fix: write control_socket = "/run/bandgate/bandgate.sock""#]].assert_eq(&said);
    // Nothing but the socket is checked: a file the daemon refuses still names it.
    let other = example_in(dir.path(), |t| {
        swaps(
            t,
            &[
                (
                    "# control_socket = \"/run/bandgate/bandgate.sock\"",
                    "control_socket = \"gw.sock\"",
                ),
                ("locale = \"zh-CN\"", "locale = 5"),
            ],
        )
    });
    assert_eq!(
        lenient::control_socket(&other),
        Ok(dir.path().join("gw.sock"))
    );
    // A broken [[residents]] entry: the socket is still found, but enrol refuses the file.
    let dir2 = tempfile::tempdir().unwrap();
    let broken_entry = example_in(dir2.path(), |t| {
        swaps(
            t,
            &[
                (
                    "# control_socket = \"/run/bandgate/bandgate.sock\"",
                    "control_socket = \"gw.sock\"",
                ),
                ("name = \"张德明\"", "name = \"张德明"),
            ],
        )
    });
    assert_eq!(
        lenient::control_socket(&broken_entry),
        Ok(dir2.path().join("gw.sock"))
    );
    let said = match lenient::enrolment(&broken_entry) {
        Err(lenient::Unread::Syntax(message)) => message,
        other => panic!("{other:?}"),
    };
    expect!["invalid basic string"].assert_eq(&said);
    let site = lenient::enrolment(&other).unwrap();
    assert_eq!(site.keys_file, dir.path().join("keys.toml"));
    assert_eq!(site.company_id, 0xFFFF);
    assert_eq!(site.residents.len(), 4);
    assert_eq!(
        site.residents[2],
        lenient::EnrolledResident {
            id: "r023".into(),
            name: "张德明".into(),
            device_id: Some(23)
        }
    );
    let missing = dir.path().join("no-socket.toml");
    std::fs::write(&missing, "site_id = \"s\"\n").unwrap();
    assert_eq!(
        lenient::control_socket(&missing),
        Ok(PathBuf::from(sections::site::CONTROL_SOCKET))
    );
}

// ---- the commented example states the code's defaults ----

/// One `key = value` line of the example, commented out or not, with its trailing comment.
#[derive(Debug)]
struct Line {
    key: String,
    /// The value as written (a TOML value).
    value: String,
    commented: bool,
    comment: String,
}

/// Every `key = value` line of `text`, by `section.key` (`key` at the top level); the lines of
/// `[[list]]` entries are left out (entries have no defaults).
fn example_lines(text: &str) -> Vec<Line> {
    let mut section: Option<String> = Some(String::new());
    let mut lines = Vec::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if let Some(name) = trimmed.strip_prefix("[[") {
            section = None;
            let _ = name;
            continue;
        }
        // An optional section is shown commented out, its header too (`# [fallback]`).
        let header = trimmed
            .strip_prefix('[')
            .or_else(|| trimmed.strip_prefix("# ["));
        if let Some(name) = header {
            let name = name.split(']').next().unwrap();
            section = Some(format!("{name}."));
            continue;
        }
        let Some(prefix) = &section else { continue };
        let (commented, body) = match trimmed.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        let Some((key, rest)) = body.split_once(" = ") else {
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') || key.is_empty() {
            continue;
        }
        // The value ends where its comment starts (no value of the example holds a '#').
        let (value, comment) = rest.split_once('#').unwrap_or((rest, ""));
        lines.push(Line {
            key: format!("{prefix}{key}"),
            value: value.trim().to_string(),
            commented,
            comment: comment.trim().to_string(),
        });
    }
    lines
}

/// A TOML value's text, parsed (so `0xFFFF` equals `65535`).
fn value_of(text: &str) -> toml::Value {
    let table: toml::Table = format!("v = {text}")
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a TOML value: {e}"));
    table["v"].clone()
}

/// The rule: every key with a default appears in the example, in its section, exactly once,
/// and either states the default as its value (set, or commented out), or sets another value
/// on purpose with a comment that says `default <the default>`.
fn defaults_stated(example: &str) -> Vec<String> {
    let lines = example_lines(example);
    let mut wrong = Vec::new();
    for (key, default) in sections::defaults() {
        let found: Vec<&Line> = lines.iter().filter(|l| l.key == key).collect();
        let [line] = found[..] else {
            wrong.push(format!(
                "{key}: {} lines in the example, not one",
                found.len()
            ));
            continue;
        };
        let states_it = value_of(&line.value) == value_of(&default);
        let says_it = line.comment.contains(&format!("default {default}"));
        if !states_it && !says_it {
            wrong.push(format!(
                "{key}: the example {} {}, but the default is {default} (write it, or say \"default {default}\" in the comment)",
                if line.commented { "suggests" } else { "sets" },
                line.value
            ));
        }
    }
    wrong
}

#[test]
fn the_example_states_exactly_the_code_defaults() {
    let example = std::fs::read_to_string(repo_config("bandgate.toml")).unwrap();
    let wrong = defaults_stated(&example);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The rule catches a drifted value, a drifted comment and a missing key.
    let drifted = [
        swap(
            example.clone(),
            "renotify_every = \"20s\"",
            "renotify_every = \"30s\"",
        ),
        swap(
            example.clone(),
            "company_id = 0xFFFF",
            "company_id = 0xFFFE",
        ),
        swap(
            example.clone(),
            "# control_socket = \"/run/bandgate/bandgate.sock\"",
            "# control_socket = \"/run/bandgate.sock\"",
        ),
        swap(
            example.clone(),
            "default \"bandgate/{site_id}\"",
            "default \"{site_id}\"",
        ),
        swap(
            example.clone(),
            "low_battery_pct = 20",
            "# low_battery = 20",
        ),
    ];
    for text in drifted {
        assert_eq!(defaults_stated(&text).len(), 1, "{text}");
    }
    // `bandgate scan` without --config uses the radio adapter's own defaults: the same values.
    let radio = bandgate::adapters::ble::BleSettings::default();
    assert_eq!(radio.company_id, sections::ble::COMPANY_ID);
    assert_eq!(
        Some(radio.silence_restart),
        humantime::parse_duration(sections::ble::SILENCE_RESTART).ok()
    );
    // And every default the code has is listed: the recommended ranges name every duration.
    let listed: Vec<&str> = sections::defaults().iter().map(|d| d.0).collect::<Vec<_>>();
    for range in bandgate::config::bounds::RANGES {
        assert!(
            listed.contains(&range.key),
            "{} has no default listed",
            range.key
        );
        let default = sections::defaults()
            .into_iter()
            .find(|d| d.0 == range.key)
            .unwrap()
            .1;
        assert!(
            default.contains(&format!("{:?}", range.default)),
            "{}: {default} vs {}",
            range.key,
            range.default
        );
    }
}
