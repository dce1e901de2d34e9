//! `bandgate decode`, the built binary, as an installer pastes frames into it.

use std::process::Command;

use serde_json::Value;

use crate::harness::vectors::*;

fn decode(keys: &std::path::Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(crate::harness::bin())
        .arg("decode")
        .arg("--keys")
        .arg(keys)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap(),
        lines,
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn decode_prints_one_json_line_per_frame_with_the_spec_names() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", &vector_keys_toml(&v));
    let mut args: Vec<&str> = vec!["--company-id", "0xFFFF"];
    let valid = v["valid"].as_array().unwrap();
    let invalid = v["invalid"].as_array().unwrap();
    // The empty frame cannot be passed as an argument by hand; every other one can.
    let invalid: Vec<&Value> = invalid.iter().filter(|c| c["data"] != "").collect();
    args.extend(valid.iter().map(|c| c["data"].as_str().unwrap()));
    args.extend(invalid.iter().map(|c| c["data"].as_str().unwrap()));
    let (code, lines, stderr) = decode(&keys, &args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), valid.len() + invalid.len());
    for (line, case) in lines.iter().zip(valid) {
        assert_eq!(line, &case["expect"]);
    }
    for (line, case) in lines[valid.len()..].iter().zip(&invalid) {
        assert_eq!(
            line,
            &serde_json::json!({"error": case["reason"]}),
            "{}",
            case["note"]
        );
    }
}

#[test]
fn decode_accepts_pasted_forms_and_with_window_flags_repeats_and_old_frames() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", &vector_keys_toml(&v));
    let (code, lines, _) = decode(
        &keys,
        &[
            "--company-id",
            "65535",
            "B1:11:2A:2D:1B:9E:1A:A5:47:4D",
            "0xb1112a2d1b9e1aa5474d",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(lines[0]["event"], "sos");
    assert_eq!(
        lines[1]["event"], "sos",
        "without --window each frame stands alone"
    );

    let replay = &v["replay_window_device_300"]["frames"];
    let mut args = vec!["--window"];
    args.extend(
        replay
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["data"].as_str().unwrap()),
    );
    let (code, lines, _) = decode(&keys, &args);
    assert_eq!(code, 0);
    for (line, step) in lines.iter().zip(replay.as_array().unwrap()) {
        match step["outcome"].as_str().unwrap() {
            "accepted" => assert_eq!(line["seq"], step["seq"]),
            reason => assert_eq!(line, &serde_json::json!({"error": reason})),
        }
    }
}

#[test]
fn decode_with_another_company_id_fails_auth() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", &vector_keys_toml(&v));
    let (_, lines, _) = decode(&keys, &["--company-id", "0x0059", "b1112a2d1b9e1aa5474d"]);
    assert_eq!(lines[0], serde_json::json!({"error": "auth"}));
}

#[test]
fn decode_reports_text_that_is_not_hex_and_exits_64() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", &vector_keys_toml(&v));
    let (code, lines, _) = decode(&keys, &["xyz", "b1112a2d1b9e1aa5474d"]);
    assert_eq!(code, 64);
    assert_eq!(lines[0]["error"], "not_hex");
    assert_eq!(lines[1]["event"], "sos");
}

#[test]
fn decode_refuses_a_world_readable_key_file_with_exit_78() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", &vector_keys_toml(&v));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o604)).unwrap();
    let (code, lines, stderr) = decode(&keys, &["b1112a2d1b9e1aa5474d"]);
    assert_eq!(code, 78);
    assert!(lines.is_empty());
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn decode_reads_bthome_service_data_from_the_specifications_examples() {
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(
        dir.path(),
        "keys.toml",
        "[devices]\n\n[bthome.\"54:48:E6:8F:80:A5\"]\ndevice_id = 9001\nkey = \"231d39c1d7cc1ab1aee224cd096db932\"\n",
    );
    // The encrypted worked example (with the UUID as on air, and without), its repeat, a
    // tampered MIC, the plain example from the enrolled device and from a stranger.
    let (code, lines, stderr) = decode(
        &keys,
        &[
            "--window",
            "--bthome",
            "54:48:e6:8f:80:a5",
            "d2fc41e445f3c9962b332211006c7c4519",
            "41e445f3c9962b332211006c7c4519",
            "41e445f3c9962b332211006c7c4518",
            "40 02 C4 09 03 BF 13",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 4);
    let ok = &lines[0];
    assert_eq!(ok["format"], "bthome");
    assert_eq!(ok["device_id"], 9001);
    assert_eq!(ok["counter"], 0x0011_2233);
    assert_eq!(ok["temperature_c"], 25.06);
    assert_eq!(ok["humidity_pct"], 50.55);
    assert_eq!(ok["event"], "none");
    assert_eq!(lines[1], serde_json::json!({"error": "duplicate"}));
    assert_eq!(lines[2], serde_json::json!({"error": "auth"}));
    assert_eq!(lines[3]["error"], "downgrade");
    assert_eq!(lines[3]["frame"]["temperature_c"], 25.0);
    let (code, lines, _) = decode(&keys, &["--bthome", "11:22:33:44:55:66", "4002c40903bf13"]);
    assert_eq!(code, 0);
    assert_eq!(lines[0]["error"], "unknown_device");
    assert_eq!(lines[0]["frame"]["humidity_pct"], 50.55);
    let (code, _, stderr) = decode(&keys, &["--bthome", "not-a-mac", "40"]);
    assert_eq!(code, 64, "{stderr}");
}
