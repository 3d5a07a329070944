//! The test harness itself: the registry starts, answers, and stops.
#![cfg(feature = "e2e")]
mod support;

use support::registry::Registry;

#[test]
fn registry_starts_answers_and_stops() {
    let reg = Registry::start();
    let out = std::process::Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/nothing", reg.addr),
        ])
        .output()
        .expect("skopeo is installed by ./scripts/test");
    // An empty registry answers NAME_UNKNOWN for a repository it lacks.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (err.contains("name unknown") || err.contains("404")),
        "unexpected skopeo answer: {err}"
    );
    let addr = reg.addr.clone();
    drop(reg);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "registry still listening after drop"
    );
}

#[test]
fn basic_auth_registry_refuses_anonymous() {
    let reg = Registry::start_with_basic_auth("kiln", "s3cret");
    let out = std::process::Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/x", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
}
