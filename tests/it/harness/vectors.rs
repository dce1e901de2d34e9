//! Shared test helpers: the spec's test vectors and a keyring made from them.

use std::path::{Path, PathBuf};

use bandgate::engine::{DeviceKey, Keyring};
use serde_json::Value;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn vectors() -> Value {
    let text = std::fs::read_to_string(data_dir().join("test-vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn vector_keyring(v: &Value) -> Keyring {
    v["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, hex)| {
            (
                id.parse::<u32>().unwrap(),
                DeviceKey::from_hex(hex.as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

pub fn company_id(v: &Value) -> u16 {
    v["company_id"].as_u64().unwrap() as u16
}

/// Writes `text` as a key file with mode 0600 in `dir`.
pub fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The vectors' keys as a keys.toml text.
pub fn vector_keys_toml(v: &Value) -> String {
    let mut s = String::from("[devices]\n");
    for (id, hex) in v["keys"].as_object().unwrap() {
        s.push_str(&format!("{id} = {hex}\n"));
    }
    s
}
