//! End to end: an auto build by an unprivileged user (user namespaces, the
//! subordinate ranges of /etc/subuid) gives the image a root build gives,
//! byte for byte — what lets a build fleet run kiln without privilege
//! (docs/scale.md) and share one cache with root builders.
#![cfg(feature = "e2e")]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use support::auto::{example, host_ca_args};
use support::kiln::Kiln;

/// Both builds use the host's network: the private network of a rootless
/// step needs /dev/net/tun open to the user, which this machine may not
/// allow (e2e_network tests that), and the network is not what is compared.
const NETWORK: [&str; 2] = ["--network", "host"];

#[test]
fn rootless_auto_builds_give_the_root_builds_digests() {
    let (uid, gid) = support::rootless::user();
    let dir = tempfile::Builder::new()
        .prefix("kiln-e2e-rootless-")
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let kiln = support::rootless::kiln_in(dir.path());
    let (cache, data) = (dir.path().join("cache"), dir.path().join("data"));
    fs::create_dir(&cache).unwrap();
    fs::create_dir(&data).unwrap();
    let root = Kiln::shared();
    for app in ["go-mod", "node-npm"] {
        let src = example(app, dir.path());
        let st = Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .args([&src, &cache, &data])
            .status()
            .unwrap();
        assert!(st.success());

        let mut args = vec!["--progress", "quiet", "build", src.to_str().unwrap()];
        args.extend(NETWORK);
        let ca = host_ca_args();
        args.extend(ca.iter().map(String::as_str));
        let as_root = String::from_utf8(root.ok(&args).stdout).unwrap();

        let out = Command::new("runuser")
            .args(["-u", support::rootless::USER, "--", "env"])
            .arg(format!("KILN_CACHE_DIR={}", cache.display()))
            .arg(format!("KILN_DATA_DIR={}", data.display()))
            .arg(&kiln)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{app}, rootless: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rootless = String::from_utf8(out.stdout).unwrap();
        assert!(as_root.trim().starts_with("sha256:"), "{as_root}");
        assert_eq!(
            rootless.trim(),
            as_root.trim(),
            "{app}: the rootless build's image differs from the root build's"
        );
    }
}
