//! `kiln graph` through the binary: graph JSON on success, the
//! file:line:column error and exit code on bad input.

use std::process::Command;

fn kiln(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("graph")
        .arg(dir)
        .args(args)
        .env("KILN_PROGRESS", "plain")
        .output()
        .unwrap()
}

#[test]
fn prints_graph_and_keys() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.txt"), "a").unwrap();
    std::fs::write(
        t.path().join("Dockerfile"),
        "ARG BASE=localhost:5000/debian:bookworm\nFROM $BASE AS build\nCOPY a.txt /\nFROM scratch\nCOPY --from=build /a.txt /\n",
    )
    .unwrap();
    let out = kiln(
        t.path(),
        &["--keys", "--build-arg", "X=1", "--platform", "linux/amd64"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["graph"]["stages"][0]["base"]["image"]["reference"],
        "localhost:5000/debian:bookworm"
    );
    assert_eq!(v["order"], serde_json::json!([0, 1]));
    assert!(
        v["keys"]["stages"][1]["steps"][0]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("build argument X was not consumed"));
}

#[test]
fn syntax_error_exit_code_and_location() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("Dockerfile"), "FROM scratch\n  COPPY a /b\n").unwrap();
    let out = kiln(t.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2:3: unknown instruction: COPPY"),
        "{err}"
    );
    assert!(err.contains("did you mean COPY?"), "{err}");
}
