//! Auto builds that fail before any package or network work: no provider,
//! no start command, a bad flag combination. Hermetic.

mod support;

use support::kiln::Kiln;

#[test]
fn no_provider_is_exit_code_3_with_what_was_looked_for() {
    let k = Kiln::new();
    std::fs::create_dir_all(k.path("app")).unwrap();
    std::fs::write(k.path("app/notes.txt"), "not an app").unwrap();
    let out = k.kiln(&["build", "app", "-t", "x:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("No compatible providers found for auto-build."),
        "{err}"
    );
    assert!(err.contains("node: package.json"), "{err}");
    let images = String::from_utf8_lossy(&k.ok(&["images"]).stdout).into_owned();
    assert!(
        !images.contains("x:1") && !images.contains("x "),
        "{images}"
    );
}

#[test]
fn no_start_command_says_how_to_set_one() {
    let k = Kiln::new();
    std::fs::create_dir_all(k.path("app")).unwrap();
    std::fs::write(k.path("app/package.json"), r#"{"name":"x"}"#).unwrap();
    let out = k.kiln(&["build", "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for hint in ["[start] cmd", "NIXPACKS_START_CMD", "Procfile"] {
        assert!(err.contains(hint), "missing {hint:?} in:\n{err}");
    }
}

#[test]
fn auto_with_a_dockerfile_flag_is_refused_and_a_missing_dockerfile_is_named() {
    let k = Kiln::new();
    std::fs::create_dir_all(k.path("app")).unwrap();
    let out = k.kiln(&["build", "app", "--auto", "-f", "app/Dockerfile"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auto cannot be combined"));
    let out = k.kiln(&["build", "app", "-f", "app/Nope.Dockerfile"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile not found: app/Nope.Dockerfile"),
        "{err}"
    );
}

#[test]
fn auto_target_must_name_one_of_the_plan_stages() {
    let k = Kiln::new();
    std::fs::create_dir_all(k.path("app")).unwrap();
    std::fs::write(
        k.path("app/package.json"),
        r#"{"name":"x","scripts":{"start":"node index.js"}}"#,
    )
    .unwrap();
    let out = k.kiln(&["build", "app", "--target", "tests", "-t", "x:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "--target tests: the auto build has no such stage (its stages: build, runtime)"
        ),
        "{err}"
    );
}

#[test]
fn a_platform_without_debian_packages_is_refused_never_built_as_amd64() {
    let k = Kiln::new();
    std::fs::create_dir_all(k.path("app")).unwrap();
    std::fs::write(
        k.path("app/package.json"),
        r#"{"name":"x","scripts":{"start":"node index.js"}}"#,
    )
    .unwrap();
    for platform in ["linux/s390x", "linux/arm/v7"] {
        let out = k.kiln(&["build", "app", "--platform", platform, "-t", "x:1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{platform}: {err}");
        assert!(
            err.contains(&format!(
                "--platform: platform {platform} is not supported for Debian packages: kiln composes packages for linux/amd64, linux/arm64"
            )),
            "{platform}: {err}"
        );
    }
    let images = String::from_utf8_lossy(&k.ok(&["images"]).stdout).into_owned();
    assert!(!images.contains("x "), "{images}");
}
