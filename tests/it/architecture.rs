//! Architecture invariants checked on the source text: the engine stays sans-IO, and every
//! source file says what it is responsible for in a leading `//!` line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What `src/engine` must never name: async runtimes, radio, broker, database, IO and clocks.
/// Time reaches the engine as a value; a `::now()` call there would make it untestable by
/// arithmetic.
const FORBIDDEN_IN_ENGINE: &[&str] = &[
    "tokio", "btleplug", "rumqttc", "rusqlite", "std::fs", "std::net", "::now()",
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
