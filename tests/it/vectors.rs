//! `shared/spec/test-vectors.json`, frames from an independent encoder, through the public API.

use bandgate::cmd::cli::{frame_json, parse_hex};
use bandgate::engine::{frame, Intake, Reject};

use crate::harness::vectors::*;

#[test]
fn the_vectors_are_a_byte_identical_copy_of_the_spec() {
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/test-vectors.json");
    // The shared folder is beside the checkout for developers; CI may only have the copy.
    if let Ok(original) = std::fs::read(&spec) {
        let copy = std::fs::read(data_dir().join("test-vectors.json")).unwrap();
        assert!(
            original == copy,
            "tests/data/test-vectors.json drifted from the spec"
        );
    }
}

#[test]
fn every_valid_vector_decodes_to_exactly_the_expected_fields() {
    let v = vectors();
    let keys = vector_keyring(&v);
    let valid = v["valid"].as_array().unwrap();
    assert_eq!(valid.len(), 10);
    for case in valid {
        let data = parse_hex(case["data"].as_str().unwrap()).unwrap();
        let f = frame::open(&data, company_id(&v), &keys)
            .unwrap_or_else(|r| panic!("{} rejected: {r}", case["data"]));
        assert_eq!(frame_json(&f), case["expect"], "frame {}", case["data"]);
        // And our encoder makes the same bytes as the independent one.
        let key = bandgate::engine::DeviceKey::from_hex(
            v["keys"][f.device_id.to_string()].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(frame::seal(&f, company_id(&v), &key), data);
    }
}

#[test]
fn every_invalid_vector_is_rejected_for_exactly_the_given_reason() {
    let v = vectors();
    let invalid = v["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 16);
    for case in invalid {
        let data = parse_hex(case["data"].as_str().unwrap()).unwrap();
        let mut intake = Intake::new(company_id(&v), vector_keyring(&v));
        let got = intake.accept(&data).map(|_| ()).unwrap_err();
        assert_eq!(
            got.as_str(),
            case["reason"].as_str().unwrap(),
            "{} ({})",
            case["data"],
            case["note"]
        );
        assert_eq!(intake.rejected(got), 1);
    }
}

#[test]
fn the_replay_sequence_yields_exactly_the_given_outcomes() {
    let v = vectors();
    let seqs = &v["replay_window_device_300"];
    assert_eq!(seqs["window"], 64);
    let mut intake = Intake::new(company_id(&v), vector_keyring(&v));
    for step in seqs["frames"].as_array().unwrap() {
        let data = parse_hex(step["data"].as_str().unwrap()).unwrap();
        let outcome = match intake.accept(&data) {
            Ok(f) => {
                assert_eq!(u64::from(f.seq), step["seq"].as_u64().unwrap());
                "accepted".to_string()
            }
            Err(r) => r.as_str().to_string(),
        };
        assert_eq!(
            outcome,
            step["outcome"].as_str().unwrap(),
            "seq {}",
            step["seq"]
        );
    }
    assert_eq!(intake.rejected(Reject::Duplicate), 3);
    assert_eq!(intake.rejected(Reject::Stale), 2);
    assert_eq!(intake.accepted(), 6);
}

#[test]
fn a_restored_window_still_refuses_old_frames() {
    let v = vectors();
    let data = parse_hex("b1ac020a3ebc189adc660a78a4b85c").unwrap();
    let mut before = Intake::new(company_id(&v), vector_keyring(&v));
    before.accept(&data).unwrap();
    let saved = before.window(300).unwrap();

    let mut after = Intake::new(company_id(&v), vector_keyring(&v));
    after.restore_window(300, saved);
    assert_eq!(after.accept(&data), Err(Reject::Duplicate));
}
