//! Architecture invariants checked on the source text: the engine stays sans-IO, and every
//! source file says what it is responsible for in a leading `//!` line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What `src/engine` must never name: async runtimes, radio, broker, database, IO and clocks.
/// Time reaches the engine as a value; a `::now()` call there would make it untestable by
/// arithmetic.
const FORBIDDEN_IN_ENGINE: &[&str] = &[
    "tokio", "dbus", "rumqttc", "rusqlite", "std::fs", "std::net", "::now()",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every file under `dir`, recursively, sorted so failures read the same every run.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The code part of a line: comments may say what the engine does not do ("no tokio").
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

#[test]
fn engine_touches_no_io_clock_or_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = files_under(&src_dir().join("engine"));
    assert!(!files.is_empty(), "src/engine has no files");
    let mut offences = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            for word in FORBIDDEN_IN_ENGINE {
                if code.contains(word) {
                    offences.push(format!(
                        "{}:{}: mentions `{word}`: {}",
                        path.strip_prefix(root).unwrap_or(&path).display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "src/engine must stay sans-IO (no IO, clock reads, tokio or adapter crates); \
         move this to an adapter or pass the value in:\n{}",
        offences.join("\n")
    );
}

#[test]
fn every_source_file_starts_with_a_module_doc_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for path in files_under(&src_dir()) {
        if path.extension() != Some(OsStr::new("rs")) {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if !text.starts_with("//!") {
            missing.push(format!(
                "{}:1: first line is not a `//!` doc line saying what the file is for",
                path.strip_prefix(root).unwrap_or(&path).display()
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Which files may name an outside crate that touches the world (in code, not comments): the
/// README's "adapters are the only code that touches the world", one adapter per crate.
const BOUNDARIES: &[(&str, &[&str])] = &[
    // SQL only in the store.
    ("rusqlite", &["adapters/store.rs", "adapters/store/"]),
    // The MQTT client only in the MQTT adapter and the demo's scripted phones.
    ("rumqttc", &["adapters/mqtt/", "cmd/demo/"]),
    // The embedded broker only in the demo.
    ("rumqttd", &["cmd/demo/"]),
    // The radio (and D-Bus, which is how BlueZ and ModemManager are reached) only in the
    // adapters that speak to those services.
    ("dbus", &["adapters/ble", "adapters/modem"]),
];

/// The sans-IO state machines: like the engine, they take time and results as values.
const SANS_IO: &[&str] = &["daemon/delivery.rs"];

fn offences(allowed: impl Fn(&str) -> bool, words: &[&str]) -> Vec<String> {
    let src = src_dir();
    let mut out = Vec::new();
    for path in files_under(&src) {
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.extension() != Some(OsStr::new("rs")) || allowed(&rel) {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            for word in words {
                let named = code
                    .match_indices(word)
                    .any(|(i, _)| is_crate_path(code, i, word));
                if named {
                    out.push(format!("src/{rel}:{}: `{word}`: {}", n + 1, line.trim()));
                }
            }
        }
    }
    out
}

/// `word` at `i` is used as a crate path (`word::`, `use word`), not inside another name or
/// a string.
fn is_crate_path(code: &str, i: usize, word: &str) -> bool {
    let before = code[..i].chars().next_back();
    let after = &code[i + word.len()..];
    let starts_name = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"');
    starts_name && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as"))
}

#[test]
fn each_outside_crate_is_named_only_by_its_adapter() {
    let mut all = Vec::new();
    for (krate, places) in BOUNDARIES {
        all.extend(offences(
            |rel| places.iter().any(|p| rel.starts_with(p)),
            &[krate],
        ));
    }
    assert!(
        all.is_empty(),
        "an outside crate is used outside its adapter (move the code there, or pass values):\n{}",
        all.join("\n")
    );
}

#[test]
fn delivery_stays_sans_io() {
    let mut all = offences(
        |rel| !SANS_IO.iter().any(|p| rel.starts_with(p)),
        &["tokio", "rusqlite", "rumqttc", "std::fs", "std::net"],
    );
    for path in SANS_IO.iter().map(|p| src_dir().join(p)) {
        for file in if path.is_dir() {
            files_under(&path)
        } else {
            vec![path]
        } {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if code_of(line).contains("::now()") {
                    all.push(format!("{}:{}: reads the clock", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        all.is_empty(),
        "delivery must take IO results and time as values:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_boundary_check_sees_a_crate_path() {
    assert!(is_crate_path("use rusqlite::Connection;", 4, "rusqlite"));
    assert!(is_crate_path(
        "let c = rusqlite::Connection::open(p);",
        8,
        "rusqlite"
    ));
    assert!(!is_crate_path("let s = \"rusqlite::x\";", 9, "rusqlite"));
    assert!(!is_crate_path("fn my_rusqlite_thing() {}", 6, "rusqlite"));
}
