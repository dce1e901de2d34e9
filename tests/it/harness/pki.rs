//! Throwaway certificates for the TLS tests (the broker's, the console's), made with the
//! `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl not found; install it: apt-get install -y openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A throwaway self-signed CA `{name}.pem` (key `{name}.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=bandgate test {name}"),
    );
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC_KEY);
    args.extend(["-keyout", &key, "-out", &pem, "-subj", &subj]);
    openssl(dir, &args);
    dir.join(pem)
}

/// In `dir`: `ca.pem` and the broker's `server.pem` + `server.key`, signed by that CA, for
/// 127.0.0.1 and localhost.
pub fn make_pki(dir: &Path) {
    make_ca(dir, "ca");
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    let mut args = vec!["req", "-nodes"];
    args.extend(EC_KEY);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}
