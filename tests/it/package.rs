//! The Debian package's metadata (`[package.metadata.deb]` in Cargo.toml) names files that
//! exist and says what the installers rely on. The built .deb itself is checked by
//! `.ci/check-deb` in `.ci/run` (it needs a release build).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deb_metadata() -> toml::Table {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb] in Cargo.toml")
        .clone()
}

/// (source, destination as installed, mode) of each asset.
fn assets(deb: &toml::Table) -> Vec<(String, String, String)> {
    deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            let s = |i: usize| a[i].as_str().unwrap().to_string();
            let (src, dest) = (s(0), s(1));
            // cargo-deb: a destination ending in "/" is a directory; the file keeps its name.
            let dest = if dest.ends_with('/') {
                let name = Path::new(&src).file_name().unwrap().to_str().unwrap();
                format!("/{dest}{name}")
            } else {
                format!("/{dest}")
            };
            (src, dest, s(2))
        })
        .collect()
}

#[test]
fn assets_exist_and_land_where_the_docs_say() {
    let deb = deb_metadata();
    let assets = assets(&deb);
    for (src, _, _) in &assets {
        // The binary is the build's output; cargo-deb builds it first.
        if src.starts_with("target/") {
            continue;
        }
        assert!(root().join(src).is_file(), "asset {src} does not exist");
    }
    let mode_of = |dest: &str| {
        assets
            .iter()
            .find(|(_, d, _)| d == dest)
            .map(|(_, _, m)| m.clone())
            .unwrap_or_else(|| panic!("no asset installed as {dest}"))
    };
    assert_eq!(mode_of("/usr/bin/bandgate"), "755");
    assert_eq!(mode_of("/etc/bandgate/bandgate.toml"), "644");
    assert_eq!(
        mode_of("/etc/bandgate/keys.toml"),
        "600",
        "the key file must never be world-readable, not even for a moment"
    );
    mode_of("/usr/share/doc/bandgate/examples/mosquitto.conf");
    mode_of("/usr/share/doc/bandgate/examples/mosquitto.acl");
    // The fallback ladder's SMS and calls: ModemManager lets the bandgate user use them.
    assert_eq!(
        mode_of("/usr/share/polkit-1/rules.d/50-bandgate-modemmanager.rules"),
        "644"
    );
    let rule =
        std::fs::read_to_string(root().join("polkit/50-bandgate-modemmanager.rules")).unwrap();
    for needle in [
        "subject.user === \"bandgate\"",
        "org.freedesktop.ModemManager1.Messaging",
        "org.freedesktop.ModemManager1.Voice",
    ] {
        assert!(rule.contains(needle), "the polkit rule lacks {needle}");
    }
}

#[test]
fn conffiles_are_installed_assets() {
    let deb = deb_metadata();
    let dests: Vec<String> = assets(&deb).into_iter().map(|(_, d, _)| d).collect();
    let conf: Vec<&str> = deb["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        conf,
        ["/etc/bandgate/bandgate.toml", "/etc/bandgate/keys.toml"]
    );
    for c in conf {
        assert!(dests.iter().any(|d| d == c), "conffile {c} is not an asset");
    }
}

#[test]
fn maintainer_scripts_and_unit_exist() {
    let deb = deb_metadata();
    let scripts = root().join(deb["maintainer-scripts"].as_str().unwrap());
    for name in ["postinst", "postrm"] {
        let path = scripts.join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{name} is not executable");
        assert!(text.starts_with("#!/bin/sh\n"), "{name}: not a sh script");
        assert!(
            text.contains("#DEBHELPER#"),
            "{name}: no #DEBHELPER# token for cargo-deb's systemd snippets"
        );
    }
    let postinst = std::fs::read_to_string(scripts.join("postinst")).unwrap();
    for needle in [
        "adduser --quiet --system --group --home /var/lib/bandgate",
        "adduser --quiet bandgate bluetooth",
        "dpkg-statoverride --update --add root bandgate 0640 /etc/bandgate/keys.toml",
    ] {
        assert!(postinst.contains(needle), "postinst lacks `{needle}`");
    }

    let units = &deb["systemd-units"];
    let unit_dir = root().join(units["unit-scripts"].as_str().unwrap());
    let unit = std::fs::read_to_string(unit_dir.join("bandgate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/bandgate run"));
    assert!(unit.contains("User=bandgate"));
    // Installed, not started: the example config must be edited first.
    assert_eq!(units["enable"].as_bool(), Some(false));
    assert_eq!(units["start"].as_bool(), Some(false));
}

#[test]
fn production_build_has_no_demo_broker() {
    let deb = deb_metadata();
    assert_eq!(deb["default-features"].as_bool(), Some(false));
    let features = deb["features"].as_array().unwrap();
    assert!(
        !features.iter().any(|f| f.as_str() == Some("demo")),
        "the package must not embed the demo broker"
    );
    let depends = deb["depends"].as_str().unwrap();
    // $auto resolves to libc6 and libdbus-1-3 (checked in the built .deb by .ci/check-deb).
    assert!(depends.contains("$auto") && depends.contains("adduser"));
    let recommends = deb["recommends"].as_str().unwrap();
    assert!(recommends.contains("mosquitto") && recommends.contains("bluez"));
}
