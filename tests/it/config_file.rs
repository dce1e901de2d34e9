//! `bandgate.toml`: the example loads, environment overrides apply, every mistake is named with
//! its file and key in one run, `check-config` exits 78 on problems; and the rota's
//! past-midnight rules in local time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bandgate::config::summary::summary;
use bandgate::config::{self as file, Source};
use bandgate::engine::{Locale, Rota, Shift, WearerCancel};
use jiff::civil::{time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::harness::vectors::write_private;

fn repo_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

/// The example bandgate.toml (after `edit`) and keys.toml, copied into `dir`, keys chmod 600.
fn example_in(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo_config("bandgate.toml")).unwrap();
    let path = dir.join("bandgate.toml");
    std::fs::write(&path, edit(text)).unwrap();
    let keys = std::fs::read_to_string(repo_config("keys.toml")).unwrap();
    write_private(dir, "keys.toml", &keys);
    path
}

fn check_config(path: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(crate::harness::bin());
    cmd.arg("check-config").arg("--config").arg(path);
    // Only the child sees these; the test process's environment is never changed.
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Shanghai wall-clock time as a timestamp.
fn shanghai(civil: &str) -> Timestamp {
    civil
        .parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(TimeZone::get("Asia/Shanghai").unwrap())
        .unwrap()
        .timestamp()
}

#[test]
fn the_example_config_loads_with_the_spec_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    let config = file::load(&path).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.site_id, "guanghuiyuan");
    assert_eq!(config.gateway_id, "gw-guanghuiyuan-1");
    assert_eq!(config.setup.gateway_id, "gw-guanghuiyuan-1");
    assert_eq!(config.keys_file, dir.path().join("keys.toml"));
    assert_eq!(config.keys.len(), 4);
    assert_eq!(config.setup.residents.len(), 4);
    assert_eq!(config.setup.staff.len(), 6);
    assert_eq!(config.setup.rota.shifts.len(), 3);
    assert_eq!(config.setup.locale, Locale::ZhCn);
    assert_eq!(config.ble.source, Source::Bluez);
    assert_eq!(config.ble.company_id, 0xFFFF);
    assert_eq!(config.mqtt.broker.host, "127.0.0.1");
    assert_eq!(config.mqtt.broker.port, 1883);
    assert!(!config.mqtt.broker.tls);
    assert_eq!(config.mqtt.topic_prefix, "bandgate/guanghuiyuan");
    assert_eq!(config.setup.escalation.tiers(), 3);
    assert_eq!(config.setup.escalation.wearer_cancel, WearerCancel::Verify);
    assert_eq!(config.setup.escalation.supervisors, ["chen"]);
    assert_eq!(config.setup.resident(17).unwrap().name, "王秀英");
    assert!(!config.publish_vitals);
}

#[test]
fn a_minimal_config_gets_every_default() {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n",
    );
    let path = dir.path().join("bandgate.toml");
    std::fs::write(
        &path,
        "site_id = \"s\"\ngateway_id = \"g\"\nkeys_file = \"keys.toml\"\n",
    )
    .unwrap();
    let c = file::load(&path).unwrap_or_else(|p| panic!("{p}"));
    let s = |secs| Duration::from_secs(secs);
    assert_eq!(c.setup.locale, Locale::ZhCn);
    assert_eq!(c.setup.rota.tz.iana_name(), Some("Asia/Shanghai"));
    assert_eq!(c.state_dir, Path::new("/var/lib/bandgate"));
    assert_eq!(c.ble.company_id, 0xFFFF);
    assert_eq!(c.ble.radio.silence_restart, s(60));
    assert_eq!(c.mqtt.broker.url, "mqtt://127.0.0.1:1883");
    assert_eq!(c.mqtt.topic_prefix, "bandgate/s");
    assert_eq!(
        (c.mqtt.status_interval, c.mqtt.device_state_interval),
        (s(60), s(60))
    );
    assert_eq!(c.setup.resolved_retention, s(600));
    let e = &c.setup.escalation;
    assert_eq!(e.ack_timeouts, [s(60), s(60)]);
    assert_eq!((e.renotify_every, e.repeat_every), (s(20), s(60)));
    assert_eq!((e.claim_timeout, e.cancel_verify_timeout), (s(900), s(300)));
    assert_eq!(e.wearer_cancel, WearerCancel::Verify);
    assert_eq!(c.setup.supervision.silent_after, s(1800));
    assert_eq!(c.setup.supervision.low_battery_pct, 20);
    assert!(!c.publish_vitals);
}

#[test]
fn environment_overrides_reach_the_child_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    let out = check_config(
        &path,
        &[
            ("BANDGATE__MQTT__URL", "mqtts://broker.example.cn:8884"),
            ("BANDGATE__BLE__SOURCE", "simulate"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("broker: mqtts://broker.example.cn:8884"),
        "{stdout}"
    );
    assert!(stdout.contains("source: simulate"), "{stdout}");

    // A bad override is named by its variable, and top-level keys work too.
    let out = check_config(
        &path,
        &[
            ("BANDGATE__ESCALATION__RENOTIFY_EVERY", "soon"),
            ("BANDGATE__LOCALE", "fr"),
        ],
    );
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines.iter().any(
            |l| l.contains(": escalation.renotify_every: \"soon\" is not a duration")
                && l.contains("BANDGATE__ESCALATION__RENOTIFY_EVERY")
        ),
        "{stderr}"
    );
    assert!(
        lines.iter().any(
            |l| l.contains(": locale: unknown locale \"fr\"") && l.contains("BANDGATE__LOCALE")
        ),
        "{stderr}"
    );
}

#[test]
fn every_mistake_is_named_with_file_and_key_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace(
            "timezone = \"Asia/Shanghai\"",
            "timezone = \"Asia/Beijing\"",
        )
        .replace("locale = \"zh-CN\"", "locale = \"zh\"")
        .replace("renotify_every = \"20s\"", "renotfy_every = \"20s\"")
        .replace(
            "ack_timeouts = [\"60s\", \"60s\"]",
            "ack_timeouts = [\"60s\", \"1 minute-ish\"]",
        )
        .replace("repeat_every = \"60s\"", "repeat_every = \"0s\"")
        .replace("low_battery_pct = 20", "low_battery_pct = 120")
        .replace("source = \"bluez\"", "source = \"replay\"")
        .replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"tcp://127.0.0.1:1883\"",
        )
        .replace(
            "# password_file = \"/etc/bandgate/mqtt-password\"",
            "username = \"gw\"\npassword_file = \"no-such-password\"",
        )
        .replace(
            "# ca_file = \"/etc/bandgate/ca.pem\"",
            "ca_file = \"no-such-ca.pem\"",
        )
        .replacen("from = \"08:00\"", "from = \"8am\"", 1)
        .replacen(
            "days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
            "days = [\"mon\", \"tues\"]",
            1,
        )
        .replace("team = [\"li\"]", "team = [\"li\", \"wnag\"]")
        .replace("supervisors = [\"chen\"]", "supervisors = [\"boss\"]")
        .replace("staff = [\"liu\"]", "staff = [\"liu\", \"ghost\"]")
        .replace(
            "[[staff]]\nid = \"liu\"",
            "[[staff]]\nid = \"zhang\"\nname = \"张伟\"\n\n[[staff]]\nid = \"liu\"",
        )
        .replace("id = \"r018\"", "id = \"r017\"")
        .replace("device_id = 31", "device_id = 17\nnmae = \"x\"")
        .replace(
            "device_id = 23\nteam = [\"zhang\", \"liu\"]",
            "device_id = 99\nteam = [\"zhang\"]",
        )
    });
    let problems = file::load(&path).unwrap_err().0;
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let all = lines.join("\n");
    let file = path.display().to_string();
    for l in &lines {
        assert!(l.starts_with(&format!("{file}: ")), "no file in {l}");
        assert!(l.contains("; fix: "), "no fix in {l}");
    }
    let find = |key: &str, what: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{file}: {key}: ")) && l.contains(what)),
            "no line for {key} saying {what:?} in:\n{all}"
        )
    };
    find("timezone", "unknown time zone \"Asia/Beijing\"");
    find("locale", "unknown locale \"zh\"");
    find(
        "escalation.renotfy_every",
        "did you mean \"renotify_every\"",
    );
    find(
        "escalation.ack_timeouts[1]",
        "\"1 minute-ish\" is not a duration",
    );
    find("escalation.repeat_every", "is zero");
    find("supervision.low_battery_pct", "120 is not a percentage");
    find("ble.replay_file", "needs a capture file");
    find("mqtt.url", "must start with mqtt:// or mqtts://");
    find("mqtt.password_file", "cannot read");
    find("mqtt.ca_file", "does not exist");
    find("rota[0].from", "\"8am\" is not a time of day");
    find("rota[0].days[1]", "\"tues\" is not a day");
    find(
        "residents[1].team[1]",
        "staff id \"wnag\" is not listed under [[staff]] (did you mean \"wang\"?)",
    );
    find(
        "escalation.supervisors[0]",
        "staff id \"boss\" is not listed",
    );
    find("rota[2].staff[1]", "staff id \"ghost\" is not listed");
    find("staff[1].id", "the staff id \"zhang\" is used twice");
    find("residents[1].id", "the resident id \"r017\" is used twice");
    find("residents[3].nmae", "did you mean \"name\"");
    find(
        "residents[3].device_id",
        "band 17 is already worn by resident \"r017\"",
    );
    find("residents[2].device_id", "band 99 has no key");
    assert_eq!(lines.len(), 20, "{all}");
}

#[test]
fn a_toml_syntax_error_is_one_problem_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace(
            "gateway_id = \"gw-guanghuiyuan-1\"",
            "gateway_id = \"gw-guanghuiyuan-1",
        )
    });
    let problems = file::load(&path).unwrap_err().0;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let line = problems[0].to_string();
    assert!(line.contains("not valid TOML at line 13, column"), "{line}");
}

#[test]
fn type_mistakes_and_world_readable_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace("device_id = 17", "device_id = \"seventeen\"")
            .replace(
                "[privacy]\npublish_vitals = false",
                "[privacy]\npublish_vitals = \"maybe\"",
            )
    });
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("keys.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let problems = file::load(&path).unwrap_err().0;
    let all = problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains(": residents[0].device_id: "), "{all}");
    assert!(all.contains(": privacy.publish_vitals: "), "{all}");
    assert!(
        all.contains("keys.toml: the key file is readable by every user"),
        "{all}"
    );
}

#[test]
fn a_missing_file_says_how_to_start_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bandgate.toml");
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("cp config/bandgate.toml"), "{stderr}");
}

#[test]
fn check_config_prints_problems_one_per_line_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace("supervisors = [\"chen\"]", "supervisors = [\"boss\"]")
            .replace("from = \"20:00\"", "from = \"25:00\"")
    });
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": escalation.supervisors[0]: ")),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.contains(": rota[1].from: ")),
        "{stderr}"
    );
}

#[test]
fn the_summary_names_who_is_on_duty() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    let config = file::load(&path).unwrap_or_else(|p| panic!("{p}"));
    // Tuesday 03:00 in Shanghai: Monday's night shift.
    let s = summary(&config, shanghai("2026-11-24T03:00"));
    assert!(s.contains("residents: 4"), "{s}");
    assert!(s.contains("staff: 6"), "{s}");
    assert!(s.contains("bands with keys: 4 of 4"), "{s}");
    assert!(s.contains("broker: mqtt://127.0.0.1:1883"), "{s}");
    assert!(
        s.contains("on duty now (Tue 2026-11-24 03:00 Asia/Shanghai): 赵磊 (zhao)"),
        "{s}"
    );
    let s = summary(&config, shanghai("2026-11-24T10:00"));
    assert!(s.contains(": 张伟 (zhang)"), "{s}");

    // The binary prints the same, with the real clock: the example rota covers every hour.
    let out = check_config(&path, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("site: guanghuiyuan"), "{stdout}");
    let duty = stdout
        .lines()
        .find(|l| l.starts_with("on duty now"))
        .unwrap();
    assert!(
        ["(zhang)", "(zhao)", "(liu)"]
            .iter()
            .any(|id| duty.contains(id)),
        "{duty}"
    );
}

fn night_shift() -> Shift {
    Shift {
        days: vec![Weekday::Monday],
        from: time(20, 0, 0, 0),
        to: time(8, 0, 0, 0),
        staff: vec!["zhao".into()],
    }
}

#[test]
fn a_night_shift_belongs_to_the_day_it_starts() {
    let s = night_shift();
    assert!(s.covers(Weekday::Monday, time(20, 0, 0, 0)));
    assert!(s.covers(Weekday::Monday, time(23, 59, 0, 0)));
    assert!(s.covers(Weekday::Tuesday, time(3, 0, 0, 0)));
    assert!(s.covers(Weekday::Tuesday, time(7, 59, 59, 0)));
    assert!(!s.covers(Weekday::Tuesday, time(8, 0, 0, 0)));
    assert!(!s.covers(Weekday::Monday, time(3, 0, 0, 0)));
    assert!(!s.covers(Weekday::Monday, time(19, 59, 0, 0)));
    assert!(!s.covers(Weekday::Tuesday, time(20, 0, 0, 0)));
    // Sunday's night runs into Monday: the week wraps.
    let sunday = Shift {
        days: vec![Weekday::Sunday],
        ..night_shift()
    };
    assert!(sunday.covers(Weekday::Monday, time(3, 0, 0, 0)));
    // from == to is the whole day from `from` to the same time tomorrow.
    let all_day = Shift {
        from: time(8, 0, 0, 0),
        to: time(8, 0, 0, 0),
        ..night_shift()
    };
    assert!(all_day.covers(Weekday::Monday, time(8, 0, 0, 0)));
    assert!(all_day.covers(Weekday::Tuesday, time(7, 0, 0, 0)));
    assert!(!all_day.covers(Weekday::Monday, time(7, 0, 0, 0)));
}

#[test]
fn the_rota_reads_local_time_in_its_zone() {
    let rota = Rota {
        tz: TimeZone::get("Asia/Shanghai").unwrap(),
        shifts: vec![
            Shift {
                days: vec![Weekday::Monday, Weekday::Tuesday],
                from: time(8, 0, 0, 0),
                to: time(20, 0, 0, 0),
                staff: vec!["zhang".into(), "li".into()],
            },
            night_shift(),
            Shift {
                days: vec![Weekday::Tuesday],
                from: time(0, 0, 0, 0),
                to: time(9, 0, 0, 0),
                staff: vec!["li".into(), "zhao".into()],
            },
        ],
    };
    // 2026-11-23 is a Monday.
    assert_eq!(rota.on_duty(shanghai("2026-11-24T03:00")), ["zhao", "li"]);
    assert!(rota.on_duty(shanghai("2026-11-23T03:00")).is_empty());
    assert_eq!(rota.on_duty(shanghai("2026-11-23T21:00")), ["zhao"]);
    // Overlap: no one twice, rota order kept.
    assert_eq!(
        rota.on_duty(shanghai("2026-11-24T08:30")),
        ["zhang", "li", "zhao"]
    );
    // Tuesday 03:00 Shanghai is Monday 19:00 UTC: a UTC reading would get this wrong.
    let t: Timestamp = "2026-11-23T19:00:00Z".parse().unwrap();
    assert_eq!(rota.on_duty(t), ["zhao", "li"]);
    assert_eq!(rota.local_day(t).to_string(), "2026-11-24");
}

#[test]
fn tls_settings_and_the_password_file_are_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    write_private(dir.path(), "mqtt-password", "  s3cret\n");
    let path = example_in(dir.path(), |t| {
        t.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtts://broker.example.cn\"",
        )
        .replace(
            "# username = \"gw-guanghuiyuan-1\"",
            "username = \"gw-guanghuiyuan-1\"",
        )
        .replace(
            "# password_file = \"/etc/bandgate/mqtt-password\"",
            "password_file = \"mqtt-password\"",
        )
        .replace(
            "# ca_file = \"/etc/bandgate/ca.pem\"",
            "ca_file = \"ca.pem\"",
        )
        .replace(
            "# topic_prefix = \"bandgate/guanghuiyuan\"",
            "topic_prefix = \"city/gh\"",
        )
    });
    let c = file::load(&path).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(
        (
            c.mqtt.broker.host.as_str(),
            c.mqtt.broker.port,
            c.mqtt.broker.tls
        ),
        ("broker.example.cn", 8883, true)
    );
    assert_eq!(c.mqtt.username.as_deref(), Some("gw-guanghuiyuan-1"));
    assert_eq!(c.mqtt.password.as_deref(), Some("s3cret"));
    assert_eq!(c.mqtt.password_file, Some(dir.path().join("mqtt-password")));
    assert_eq!(c.mqtt.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(c.mqtt.topic_prefix, "city/gh");
}

#[test]
fn missing_keys_and_wrong_shapes_say_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace("gateway_id = \"gw-guanghuiyuan-1\"", "")
            .replace("device_id = 18\n", "")
            .replace("days = [\"sat\", \"sun\"]", "days = \"sat\"")
            .replace("ack_timeouts = [\"60s\", \"60s\"]", "ack_timeouts = []")
    });
    let problems = file::load(&path).unwrap_err().0;
    let all = problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains(": gateway_id: this required key is missing"),
        "{all}"
    );
    assert!(all.contains(": residents[1].device_id: this required key is missing; fix: add it, e.g. device_id = 17"), "{all}");
    assert!(all.contains(": rota[2].days: found a string \"sat\" where a list belongs; fix: write a list in square brackets"), "{all}");
    assert!(
        all.contains(": escalation.ack_timeouts: the list is empty"),
        "{all}"
    );
    assert_eq!(problems.len(), 4, "{all}");
}

#[test]
fn a_named_pipe_is_a_replay_capture_but_a_directory_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mkfifo")
        .arg(dir.path().join("feed.fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(dir.path().join("captures")).unwrap();
    let with = |file: &str| {
        example_in(dir.path(), |t| {
            t.replacen("source = \"bluez\"", "source = \"replay\"", 1)
                .replacen(
                    "# replay_file = \"capture.jsonl\"",
                    &format!("replay_file = \"{file}\""),
                    1,
                )
        })
    };
    let c = file::load(&with("feed.fifo")).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(
        c.ble.source,
        Source::Replay {
            file: dir.path().join("feed.fifo")
        }
    );
    let problems = file::load(&with("captures")).unwrap_err().to_string();
    assert!(problems.contains("ble.replay_file"), "{problems}");
}

/// Line `n` (1-based) of `text` starts at this column-1 offset: the line of `needle`'s first
/// occurrence.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).expect("needle in text");
    text[..at].matches('\n').count() + 1
}

#[test]
fn syntax_errors_inside_and_after_the_residents_name_the_line_in_the_file() {
    // [[residents]] entries are parsed one at a time; a mistake in one must still be named
    // with its line in the whole file, and so must one in a section after them.
    let dir = tempfile::tempdir().unwrap();
    let broken = "name = \"张德明\naddress";
    let path = example_in(dir.path(), |t| {
        t.replace("name = \"张德明\"\n", "name = \"张德明\n")
    });
    let written = std::fs::read_to_string(&path).unwrap();
    let line = line_of(&written, broken);
    let problems = file::load(&path).unwrap_err().0;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let said = problems[0].to_string();
    assert!(
        said.contains(&format!("not valid TOML at line {line}, column")),
        "{said} (expected line {line})"
    );

    let after = example_in(dir.path(), |t| {
        format!("{t}\n[[staff]]\nid = \"sun\"\nname = tru\n")
    });
    let written = std::fs::read_to_string(&after).unwrap();
    let line = line_of(&written, "name = tru");
    let problems = file::load(&after).unwrap_err().0;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let said = problems[0].to_string();
    assert!(
        said.contains(&format!("not valid TOML at line {line}, column")),
        "{said} (expected line {line})"
    );
}

#[test]
fn a_sub_table_of_a_resident_is_read_wherever_it_stands() {
    // Directly under its entry, or after another section (TOML gives it to the last entry):
    // either way it is the same unknown key of the same resident.
    let dir = tempfile::tempdir().unwrap();
    let under = example_in(dir.path(), |t| {
        format!("{t}\n[residents.pet]\nname = \"cat\"\n")
    });
    let later = example_in(dir.path(), |t| {
        format!("{t}\n[[staff]]\nid = \"sun\"\nname = \"孙\"\n\n[residents.pet]\nname = \"cat\"\n")
    });
    for path in [under, later] {
        let problems = file::load(&path).unwrap_err().0;
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(": residents[3].pet: unknown key \"pet\""),
            "{lines:?}"
        );
    }
}

#[test]
fn ten_thousand_residents_load_one_entry_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = String::from("[devices]\n");
    let path = example_in(dir.path(), |t| {
        // Drop the example's residents; write 10,000 new ones.
        let head = &t[..t.find("[[residents]]").unwrap()];
        let mut t = head.to_string();
        for id in 1..=10_000u32 {
            t.push_str(&format!(
                "[[residents]]\nid = \"r{id}\"\nname = \"居民 {id}\"\naddress = \"{} 号楼\"\nphone = \"139{id:08}\"\ndevice_id = {}\nteam = [\"li\"]\n\n",
                id / 100,
                100_000 + id
            ));
            keys.push_str(&format!("{} = \"{:032x}\"\n", 100_000 + id, id));
        }
        // An entry of another list after them is still read.
        t.push_str("[[staff]]\nid = \"sun\"\nname = \"孙\"\nphone = \"100\"\n");
        t
    });
    write_private(dir.path(), "keys.toml", &keys);
    let cfg = file::load(&path).unwrap();
    assert_eq!(cfg.setup.residents.len(), 10_000);
    assert_eq!(cfg.keys.len(), 10_000);
    assert_eq!(cfg.setup.staff_name("sun"), "孙");
    let r = &cfg.setup.residents[&107_000];
    assert_eq!(
        (r.id.as_str(), r.name.as_str(), r.address.as_str()),
        ("r7000", "居民 7000", "70 号楼")
    );
    assert_eq!(r.team, vec!["li".to_string()]);

    // Mistakes in entries 7,000 and 7,001 are named by their index; entry 7,002 has both, and
    // both are named every time (keys are read in file order, not a hash map's order).
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "phone = \"13900007000\"",
            "phone = \"13900007000\"\nage = 90",
        )
        .replace(
            "device_id = 107001\nteam = [\"li\"]",
            "device_id = 107001\nteam = \"li\"",
        )
        .replace(
            "phone = \"13900007002\"\ndevice_id = 107002\nteam = [\"li\"]",
            "phone = \"13900007002\"\nage = 91\ndevice_id = 107002\nteam = \"li\"",
        ),
    )
    .unwrap();
    let problems = file::load(&path).unwrap_err().0;
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": residents[6999].age: unknown key")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": residents[7000].team: found a string")),
        "{lines:?}"
    );
    for key in [
        "residents[7001].age: unknown key",
        "residents[7001].team: found a string",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!(": {key}"))),
            "no {key} in {lines:?}"
        );
    }
}

// ---- bounds: hard limits (errors, exit 78) and recommended ranges (warnings, exit 0) ----

/// Every duration key of bandgate.toml, as its environment variable.
const DURATION_VARS: [(&str, &str); 10] = [
    ("ble.silence_restart", "BANDGATE__BLE__SILENCE_RESTART"),
    ("mqtt.status_interval", "BANDGATE__MQTT__STATUS_INTERVAL"),
    (
        "mqtt.device_state_interval",
        "BANDGATE__MQTT__DEVICE_STATE_INTERVAL",
    ),
    (
        "alerts.resolved_retention",
        "BANDGATE__ALERTS__RESOLVED_RETENTION",
    ),
    (
        "escalation.ack_timeouts[0]",
        "BANDGATE__ESCALATION__ACK_TIMEOUTS",
    ),
    (
        "escalation.renotify_every",
        "BANDGATE__ESCALATION__RENOTIFY_EVERY",
    ),
    (
        "escalation.repeat_every",
        "BANDGATE__ESCALATION__REPEAT_EVERY",
    ),
    (
        "escalation.claim_timeout",
        "BANDGATE__ESCALATION__CLAIM_TIMEOUT",
    ),
    (
        "escalation.cancel_verify_timeout",
        "BANDGATE__ESCALATION__CANCEL_VERIFY_TIMEOUT",
    ),
    (
        "supervision.silent_after",
        "BANDGATE__SUPERVISION__SILENT_AFTER",
    ),
];

/// `check-config`'s stderr with the temp dir written as `$DIR`.
fn stderr_in(out: &Output, dir: &Path) -> String {
    text(&out.stderr).replace(&dir.display().to_string(), "$DIR")
}

#[test]
fn every_duration_is_refused_below_one_second_and_above_thirty_days() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    for (key, var) in DURATION_VARS {
        for (value, limit) in [
            ("1ns", "shorter than 1 second"),
            ("999ms", "shorter than 1 second"),
            ("30days 1s", "longer than 30 days"),
            ("300000000000y", "longer than 30 days"),
        ] {
            let out = check_config(&path, &[(var, value)]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{var}={value}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{var}={value}: {stderr}");
            assert!(
                lines[0].contains(&format!(": {key}: {value:?} is {limit}")),
                "{var}={value}: {stderr}"
            );
            assert!(lines[0].contains(var), "{stderr}");
            assert!(lines[0].contains("; fix: give at "), "{stderr}");
        }
        // The limits themselves are allowed.
        for value in ["1s", "30d"] {
            let out = check_config(&path, &[(var, value)]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{var}={value}: {}",
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn out_of_limit_durations_name_the_key_the_limit_and_the_recommended_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace("silent_after = \"30m\"", "silent_after = \"300000000000y\"")
            .replace("renotify_every = \"20s\"", "renotify_every = \"1ns\"")
            .replace(
                "ack_timeouts = [\"60s\", \"60s\"]",
                "ack_timeouts = [\"60s\", \"31d\"]",
            )
    });
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(out.stdout.is_empty());
    expect_test::expect![[r#"
        $DIR/bandgate.toml: escalation.ack_timeouts[1]: "31d" is longer than 30 days, the longest wait bandgate accepts: a timer this long would in effect never fire; fix: give at most "30d"; for a real site 30s to 10m is recommended (default "60s")
        $DIR/bandgate.toml: escalation.renotify_every: "1ns" is shorter than 1 second, the shortest wait bandgate accepts: a timer this short would page or check in a storm; fix: give at least "1s"; for a real site 10s to 5m is recommended (default "20s")
        $DIR/bandgate.toml: supervision.silent_after: "300000000000y" is longer than 30 days, the longest wait bandgate accepts: a timer this long would in effect never fire; fix: give at most "30d"; for a real site 15m to 24h is recommended (default "30m")
    "#]]
    .assert_eq(&stderr_in(&out, dir.path()));
}

#[test]
fn too_many_tiers_is_one_error_and_three_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| t);
    let many = vec!["60s"; 300].join(",");
    let out = check_config(&path, &[("BANDGATE__ESCALATION__ACK_TIMEOUTS", &many)]);
    assert_eq!(out.status.code(), Some(78));
    expect_test::expect![[r#"
        $DIR/bandgate.toml: escalation.ack_timeouts: 300 waits, so 301 tiers; at most 5 waits are accepted (set by the environment variable BANDGATE__ESCALATION__ACK_TIMEOUTS); fix: give one wait per tier before the supervisors: tier 1 is who is on duty, tier 2 adds the resident's team, e.g. ack_timeouts = ["60s", "60s"]
    "#]]
    .assert_eq(&stderr_in(&out, dir.path()));

    let out = check_config(
        &path,
        &[("BANDGATE__ESCALATION__ACK_TIMEOUTS", "60s,60s,60s")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    expect_test::expect![[r#"
        warning: $DIR/bandgate.toml: escalation.ack_timeouts: 3 waits, but only tier 1 (who is on duty) and tier 2 (adds the resident's team) page different people before the supervisors: tier 3 pages nobody new and is skipped at once (set by the environment variable BANDGATE__ESCALATION__ACK_TIMEOUTS); fix: give two waits, e.g. ack_timeouts = ["60s", "60s"]
    "#]]
    .assert_eq(&stderr_in(&out, dir.path()));
    assert!(text(&out.stdout).contains("tiers: 4"));
}

#[test]
fn values_outside_the_recommended_range_are_listed_as_warnings_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    // A demo's or a test's timers, and two values a real site should not run with.
    let path = example_in(dir.path(), |t| {
        t.replace("renotify_every = \"20s\"", "renotify_every = \"3s\"")
            .replace(
                "ack_timeouts = [\"60s\", \"60s\"]",
                "ack_timeouts = [\"6s\", \"20m\"]",
            )
            .replace("silent_after = \"30m\"", "silent_after = \"3d\"")
            .replace("low_battery_pct = 20", "low_battery_pct = 0")
    });
    let out = check_config(&path, &[("BANDGATE__ALERTS__RESOLVED_RETENTION", "5s")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    expect_test::expect![[r#"
        warning: $DIR/bandgate.toml: alerts.resolved_retention: 5s is below the recommended 1m to 24h: on a real site a resolved alert leaves the phones' board before everyone saw how it ended (set by the environment variable BANDGATE__ALERTS__RESOLVED_RETENTION); fix: fine for a test or a demo; otherwise give at least "1m" (default "10m")
        warning: $DIR/bandgate.toml: escalation.ack_timeouts[0]: 6s is below the recommended 30s to 10m: on a real site the next tier is paged before the people on this one could answer; fix: fine for a test or a demo; otherwise give at least "30s" (default "60s")
        warning: $DIR/bandgate.toml: escalation.ack_timeouts[1]: 20m is above the recommended 30s to 10m: on a real site an emergency nobody answers waits this long before more people are paged; fix: give at most "10m" (default "60s") unless you mean it
        warning: $DIR/bandgate.toml: escalation.renotify_every: 3s is below the recommended 10s to 5m: on a real site the phones on duty are paged every few seconds; fix: fine for a test or a demo; otherwise give at least "10s" (default "20s")
        warning: $DIR/bandgate.toml: supervision.low_battery_pct: 0 means no band ever raises a low_battery notice: a band runs flat unnoticed until it is reported silent; fix: use 10 to 50, e.g. low_battery_pct = 20
        warning: $DIR/bandgate.toml: supervision.silent_after: 3d is above the recommended 15m to 24h: on a real site a dead, removed or broken band goes unnoticed this long; fix: give at most "24h" (default "30m") unless you mean it
    "#]]
    .assert_eq(&stderr_in(&out, dir.path()));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": configuration is valid"), "{stdout}");
    assert!(stdout.contains("\nwarnings: 6 ("), "{stdout}");

    // The same list through the public API, for the daemon's start-up log.
    let cfg = file::load(&path).unwrap_or_else(|p| panic!("{p}"));
    let keys: Vec<&str> = cfg.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "escalation.ack_timeouts[0]",
            "escalation.ack_timeouts[1]",
            "escalation.renotify_every",
            "supervision.low_battery_pct",
            "supervision.silent_after"
        ]
    );

    // The example itself is a real site's: no warning.
    let clean = tempfile::tempdir().unwrap();
    let path = example_in(clean.path(), |t| t);
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
    assert!(file::load(&path).unwrap().warnings.is_empty());
}

#[test]
fn check_config_with_a_named_pipe_as_keys_file_answers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = example_in(dir.path(), |t| {
        t.replace("keys_file = \"keys.toml\"", "keys_file = \"keys.fifo\"")
    });
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("keys_file = \"keys.fifo\""));
    let fifo = dir.path().join("keys.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(crate::harness::bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("check-config blocked on a named pipe given as keys_file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = stderr_in(&out, dir.path());
    assert!(
        stderr.contains(
            "$DIR/keys.fifo: the key file is a named pipe (FIFO), not a regular file; fix: "
        ),
        "{stderr}"
    );
}
