//! Loading `keys.toml`: refusals name the file, the entry and the fix.

use std::os::unix::fs::PermissionsExt;

use bandgate::config::keys;
use bandgate::engine::bthome::{self, ButtonEvent, EventSet};

use crate::harness::vectors::write_private;

#[test]
fn a_good_file_loads_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n4294967295 = \"AACE5FDF9D6B09CE7216FE2472301EAA\"\n",
    );
    let ring = keys::load(&path).unwrap();
    assert_eq!(ring.len(), 2);
    assert!(ring.contains(17) && ring.contains(u32::MAX));
}

#[test]
fn a_world_readable_file_is_refused_with_the_chmod_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(dir.path(), "keys.toml", "[devices]\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = keys::load(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("readable by every user"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
}

#[test]
fn every_bad_entry_is_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd\"\nabc = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n18 = \"zzz7171f8b19f17864f43aa4d1cfbdd6\"\n19 = 1234\n-1 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n",
    );
    let problems = keys::load(&path).unwrap_err().0;
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let find = |key: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!(": devices.{key}: ")))
            .unwrap_or_else(|| panic!("no problem for devices.{key}: {lines:#?}"))
            .clone()
    };
    assert!(find("17").contains("31 characters"));
    assert!(find("17").contains("exactly 32 hex digits"));
    assert!(find("abc").contains("not a number"));
    assert!(find("-1").contains("not a number"));
    assert!(find("18").contains("3 are not hex"));
    assert!(find("19").contains("not a quoted string"));
    for l in &lines {
        assert!(l.starts_with(&path.display().to_string()), "{l}");
        assert!(l.contains("; fix: "), "{l}");
    }
}

#[test]
fn a_file_that_is_not_toml_says_what_shape_it_should_have() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(dir.path(), "keys.toml", "[devices\n17 = ");
    let err = keys::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a valid key file"), "{err}");
    assert!(err.contains("[devices]"), "{err}");
}

#[test]
fn a_missing_file_names_the_path() {
    let err = keys::load(std::path::Path::new("/nonexistent/keys.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/keys.toml: cannot read"),
        "{err}"
    );
}

// ---- who may change the file, what kind of file it is, placeholder keys ----

const GOOD: &str = "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n";

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The problems of loading `path`, with the temp dir written as `$DIR`.
fn refusal(path: &std::path::Path, dir: &std::path::Path) -> String {
    keys::load(path)
        .unwrap_err()
        .to_string()
        .replace(&dir.display().to_string(), "$DIR")
}

#[test]
fn a_key_file_others_may_change_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(dir.path(), "keys.toml", GOOD);
    chmod(&path, 0o602);
    expect_test::expect![[r#"$DIR/keys.toml: the key file can be changed by every user on this machine (mode 0602); whoever changes it can swap a band's key, and that band's SOS then fails as auth; fix: run: chmod go-w $DIR/keys.toml (the Debian package's setting: chown root:bandgate $DIR/keys.toml && chmod 640 $DIR/keys.toml)"#]]
        .assert_eq(&refusal(&path, dir.path()));
    chmod(&path, 0o620);
    expect_test::expect![[r#"$DIR/keys.toml: the key file can be changed by every member of its group (mode 0620); whoever changes it can swap a band's key, and that band's SOS then fails as auth; fix: run: chmod go-w $DIR/keys.toml (the Debian package's setting: chown root:bandgate $DIR/keys.toml && chmod 640 $DIR/keys.toml)"#]]
        .assert_eq(&refusal(&path, dir.path()));
    // 0622: both the group and everyone; and 0646 is also readable by everyone: both named.
    chmod(&path, 0o622);
    assert!(refusal(&path, dir.path()).contains("every user on this machine (mode 0622)"));
    chmod(&path, 0o646);
    let err = refusal(&path, dir.path());
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("readable by every user"), "{err}");
    assert!(err.contains("can be changed by every user"), "{err}");
    // The package's own setting, and the owner's alone, load.
    for mode in [0o640, 0o600, 0o400] {
        chmod(&path, mode);
        assert_eq!(keys::load(&path).map(|k| k.len()), Ok(1), "mode {mode:o}");
    }
}

#[test]
fn a_key_file_in_a_directory_others_may_change_is_refused_unless_it_is_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).unwrap();
    let path = write_private(&sub, "keys.toml", GOOD);
    chmod(&sub, 0o777);
    expect_test::expect![[r#"$DIR/etc/keys.toml: the key file's directory $DIR/etc can be changed by every user on this machine (mode 0777, no sticky bit); whoever can write there can replace the key file; fix: run: chmod go-w $DIR/etc, or keep the key file in a directory only root may change, such as /etc/bandgate"#]]
        .assert_eq(&refusal(&path, dir.path()));
    chmod(&sub, 0o770);
    assert!(refusal(&path, dir.path()).contains("every member of its group (mode 0770"));
    // Sticky, like /tmp: only a file's owner may replace it there.
    chmod(&sub, 0o1777);
    assert_eq!(keys::load(&path).map(|k| k.len()), Ok(1));
    chmod(&sub, 0o755);
    assert_eq!(keys::load(&path).map(|k| k.len()), Ok(1));

    // A symbolic link from a safe directory to a key file in an unsafe one: the file's real
    // directory counts too.
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    let real = write_private(&open_dir, "keys.toml", GOOD);
    chmod(&open_dir, 0o777);
    let link = dir.path().join("etc/link.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = refusal(&link, dir.path());
    assert!(err.contains("directory $DIR/open can be changed"), "{err}");
    chmod(&open_dir, 0o700);
    assert_eq!(keys::load(&link).map(|k| k.len()), Ok(1));
}

#[test]
fn a_named_pipe_is_refused_at_once_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let made = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    // In a thread, so that a regression fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(keys::load(&p).map(|k| k.len()));
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("loading a named pipe as the key file blocked");
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("the key file is a named pipe (FIFO), not a regular file"),
        "{err}"
    );
    assert!(
        err.contains("fix: keys_file must name the key file itself"),
        "{err}"
    );
}

#[test]
fn a_directory_or_a_device_is_not_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = keys::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is a directory, not a regular file"), "{err}");
    let err = keys::load(std::path::Path::new("/dev/null"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is a character device, not a regular file"),
        "{err}"
    );
}

#[test]
fn all_zero_and_repeated_byte_keys_are_refused_as_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"00000000000000000000000000000000\"\n18 = \"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\"\n19 = \"a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5\"\n20 = \"00000000000000000000000000000001\"\n",
    );
    expect_test::expect![[r#"
        $DIR/keys.toml: devices.17: the key is the byte 00 sixteen times, a placeholder and not a secret: anyone can forge this band's frames, its SOS and its cancel; fix: run bandgate enrol for this band to make a random key and program the band with it, or copy the band's real key from its enrolment record
        $DIR/keys.toml: devices.18: the key is the byte ff sixteen times, a placeholder and not a secret: anyone can forge this band's frames, its SOS and its cancel; fix: run bandgate enrol for this band to make a random key and program the band with it, or copy the band's real key from its enrolment record
        $DIR/keys.toml: devices.19: the key is the byte a5 sixteen times, a placeholder and not a secret: anyone can forge this band's frames, its SOS and its cancel; fix: run bandgate enrol for this band to make a random key and program the band with it, or copy the band's real key from its enrolment record"#]]
    .assert_eq(&refusal(&path, dir.path()));
}

#[test]
fn a_bthome_entry_loads_with_its_defaults_and_binds_its_device_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n\n\
         [bthome.\"54:48:e6:8F:80:A5\"]\ndevice_id = 9001\nkey = \"231d39c1d7cc1ab1aee224cd096db932\"\n\n\
         [bthome.\"54:48:E6:8F:80:A6\"]\ndevice_id = 9002\nkey = \"231d39c1d7cc1ab1aee224cd096db933\"\n\
         sos = [\"long_press\", \"hold_press\"]\ncancel = []\nsilent_after = \"off\"\nenrolled = \"2026-11-26T15:00:00Z\"\n",
    );
    let ring = keys::load(&path).unwrap();
    assert_eq!(ring.len(), 3);
    assert!(ring.contains(9001) && ring.contains(9002) && ring.contains(17));
    assert!(!ring.is_band(9001));
    let mac = bthome::parse_mac("54:48:E6:8F:80:A5").unwrap();
    let d = ring.bthome().get(&mac).unwrap();
    assert_eq!(d.device_id, 9001);
    assert_eq!(d.sos, EventSet::default_sos());
    assert_eq!(d.cancel, EventSet::default_cancel());
    assert_eq!(
        d.silent_after,
        Some(std::time::Duration::from_secs(2 * 3600))
    );
    let (_, d2) = ring.bthome().by_device_id(9002).unwrap();
    assert_eq!(
        d2.sos,
        EventSet::of(&[ButtonEvent::LongPress, ButtonEvent::HoldPress])
    );
    assert_eq!(d2.cancel, EventSet::default());
    assert_eq!(d2.silent_after, None);
    assert_ne!(d.enrolment, d2.enrolment);
}

#[test]
fn every_bad_bthome_entry_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n\n\
         [bthome.\"54:48:E6:8F:80\"]\ndevice_id = 9001\nkey = \"231d39c1d7cc1ab1aee224cd096db932\"\n\n\
         [bthome.\"54:48:E6:8F:80:A5\"]\ndevice_id = 17\nkey = \"231d39c1d7cc1ab1aee224cd096db9\"\n\n\
         [bthome.\"54:48:E6:8F:80:A6\"]\ndevice_id = 9003\nkey = \"231d39c1d7cc1ab1aee224cd096db932\"\n\
         sos = [\"press\", \"none\"]\ncancel = [\"press\", \"tripple_press\"]\nsilent_after = \"soon\"\ncolour = 1\n\n\
         [bthome.\"54:48:e6:8f:80:a6\"]\ndevice_id = 9003\n",
    );
    let lines: Vec<String> = keys::load(&path)
        .unwrap_err()
        .0
        .iter()
        .map(|p| p.to_string())
        .collect();
    let has = |key: &str, what: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!(": {key}: ")) && l.contains(what)),
            "no problem at {key} saying {what:?}: {lines:#?}"
        )
    };
    has("bthome.\"54:48:E6:8F:80\"", "not a Bluetooth address");
    has("bthome.\"54:48:E6:8F:80:A5\".device_id", "also a band's");
    has("bthome.\"54:48:E6:8F:80:A5\".key", "exactly 32 hex digits");
    has("bthome.\"54:48:E6:8F:80:A6\".sos", "\"none\"");
    has("bthome.\"54:48:E6:8F:80:A6\".cancel", "not a button event");
    has(
        "bthome.\"54:48:E6:8F:80:A6\".cancel",
        "both raise and cancel",
    );
    has(
        "bthome.\"54:48:E6:8F:80:A6\".silent_after",
        "not a duration",
    );
    has("bthome.\"54:48:E6:8F:80:A6\".colour", "unknown key");
    has("bthome.\"54:48:e6:8f:80:a6\"", "the same device");
    has("bthome.\"54:48:e6:8f:80:a6\".key", "missing");
    for l in &lines {
        assert!(l.contains(&path.display().to_string()), "{l}");
    }
}
