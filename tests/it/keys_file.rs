//! Loading `keys.toml`: refusals name the file, the entry and the fix.

use std::os::unix::fs::PermissionsExt;

use bandgate::config::keys;

use crate::support::write_private;

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
