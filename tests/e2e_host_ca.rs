//! End to end, on a network that intercepts TLS (this machine's and CI's):
//! the README's first command works without flags, because auto builds'
//! steps trust the host's CA bundle; that bundle is in no layer, image or
//! cache record, and a changed bundle keeps the cache; and `--no-host-ca` brings back the certificate failure,
//! with a report that says what to do.
//!
//! Cold builds on a private cache (the npm cache mount starts empty, so
//! `npm ci` really downloads through the proxy): about a minute.
#![cfg(feature = "e2e")]

mod support;

use std::path::Path;
use std::process::Command;

use support::auto::{example, host_ca_certs};
use support::kiln::Kiln;

/// The first base64 line of each of the host's extra CAs (the proxy's):
/// lines that are in no Debian bundle, so finding one means the host's
/// bundle leaked.
fn proxy_ca_lines() -> Vec<String> {
    let lines: Vec<String> = host_ca_certs()
        .iter()
        .map(|p| {
            let pem = std::fs::read_to_string(p).unwrap();
            pem.lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                .nth(1)
                .unwrap_or_else(|| panic!("{}: no PEM certificate", p.display()))
                .to_string()
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "this test needs a network that intercepts TLS with its CA in /usr/local/share/ca-certificates (as on the dev machines and CI)"
    );
    lines
}

/// `grep -rlF -e NEEDLE… DIRS…`: its exit code (1 on no match, 0 on a
/// match, 2 on an error) and what it printed.
fn grep(needles: &[String], dirs: &[&Path]) -> (Option<i32>, String) {
    let mut cmd = Command::new("grep");
    cmd.args(["-rlF", "-D", "skip"]);
    for n in needles {
        cmd.arg("-e").arg(n);
    }
    cmd.args(dirs);
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn readme_command_trusts_the_host_ca_without_storing_it() {
    let needles = proxy_ca_lines();
    let home = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = example("node-npm", tmp.path());
    let dir = dir.to_str().unwrap();
    let kiln = |args: &[&str]| {
        home.cmd()
            .env_remove("KILN_CA_CERTS")
            .env_remove("KILN_NO_HOST_CA")
            .args(args)
            .output()
            .unwrap()
    };

    // Opted out: npm does not trust the proxy, and the report says why
    // and what to do.
    let off = kiln(&[
        "--progress",
        "plain",
        "build",
        dir,
        "-t",
        "hello:0",
        "--no-host-ca",
        // Fail at the first refused download, not after npm's retries.
        "-e",
        "NPM_CONFIG_FETCH_RETRIES=0",
    ]);
    let err = String::from_utf8_lossy(&off.stderr);
    assert_eq!(off.status.code(), Some(4), "{err}");
    assert!(err.contains("npm ci --omit=dev"), "{err}");
    assert!(
        err.contains("hint: the step failed verifying a TLS certificate"),
        "{err}"
    );
    assert!(
        err.contains("unless --no-host-ca or KILN_NO_HOST_CA=1"),
        "{err}"
    );
    assert!(err.contains("--ca-cert FILE"), "{err}");
    assert!(err.contains("docs/auto.md"), "{err}");

    // The README's command, no flag: npm ci downloads through the proxy.
    let oci = tmp.path().join("oci");
    let on = kiln(&[
        "--progress",
        "plain",
        "build",
        dir,
        "-t",
        "hello:1",
        "--compression",
        "none",
        "-o",
        &format!("type=oci,dest={}", oci.display()),
    ]);
    let err = String::from_utf8_lossy(&on.stderr);
    assert!(on.status.success(), "{err}");
    assert!(err.contains("npm ci --omit=dev"), "{err}");
    let run = kiln(&[
        "--progress",
        "quiet",
        "run",
        "hello:1",
        "node",
        "-e",
        "console.log('hello from ' + require('/app/package.json').name)",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "hello from node-npm"
    );
    // A rotated host store (here: one CA fewer) keeps the cache: the key
    // records only that the steps trust the host.
    let host = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
    let second = host
        .match_indices("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .unwrap()
        .0;
    let rotated = tmp.path().join("rotated.crt");
    std::fs::write(&rotated, &host[second..]).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let again = home
        .cmd()
        .env_remove("KILN_CA_CERTS")
        .env_remove("KILN_NO_HOST_CA")
        .env("SSL_CERT_FILE", &rotated)
        .env("SSL_CERT_DIR", empty.path())
        .args(["--progress", "plain", "build", dir, "-t", "hello:2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("npm ci --omit=dev") && l.contains("CACHED")),
        "{err}"
    );
    // Nowhere stored: the exported layers (uncompressed tars), the store,
    // the step records, snapshots and cache mounts.
    assert!(oci.join("index.json").is_file());
    let (code, found) = grep(&needles, &[&oci, &home.data(), home.cache()]);
    assert_eq!(
        code,
        Some(1),
        "the host's CA bundle is stored (or grep failed):\n{found}"
    );
    // The search does find the lines where they are.
    let (code, found) = grep(&needles, &[Path::new("/usr/local/share/ca-certificates")]);
    assert_eq!(code, Some(0), "{found}");
    assert!(home.cache().join("steps").is_dir());
}
