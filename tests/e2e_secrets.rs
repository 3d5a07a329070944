//! Build secrets (`--secret`) never reach the output or the build's
//! results: the real `kiln build` on a local Debian base, with steps that
//! print every kind of secret and fail, in every progress mode (plain,
//! json, tty, quiet, `--debug`) and in the failure summary; a build that
//! uses them leaves them in no layer, config or cache record; auto builds
//! get `/run/secrets/NAME` and the same masking. Runs as root (CI does).
#![cfg(feature = "e2e")]

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use support::kiln::Kiln;

/// A secret file ending in a newline (as `echo x > file` writes it).
const NL: &str = "nl-secret-5b1f";
/// A secret file ending in `\r\n`.
const CRLF: &str = "crlf-secret-91d0";
/// A secret file without a line ending.
const PLAIN: &str = "plain-secret-7c1e";
/// The lines of a multi-line secret (a PEM key).
const PEM: [&str; 4] = [
    "-----BEGIN TEST PRIVATE KEY-----",
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm",
    "-----END TEST PRIVATE KEY-----",
];
/// A secret given to a step as a variable (`env=`).
const ENV: &str = "env-secret-a55b";

/// Every secret text that must not be shown.
fn secret_texts() -> Vec<&'static str> {
    let mut all = vec![NL, CRLF, PLAIN, ENV];
    all.extend(PEM);
    all
}

/// A kiln home with `debian:bookworm` in its image store, and the secret
/// files outside it (so a search of the home finds only what kiln stored).
struct Env {
    kiln: Kiln,
    secrets: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let kiln = Kiln::new();
        support::base::local_debian(&kiln.data());
        let secrets = tempfile::tempdir().unwrap();
        let s = secrets.path();
        fs::write(s.join("nl"), format!("{NL}\n")).unwrap();
        fs::write(s.join("crlf"), format!("{CRLF}\r\n")).unwrap();
        fs::write(s.join("plain"), PLAIN).unwrap();
        fs::write(s.join("pem"), PEM.join("\n") + "\n").unwrap();
        Env { kiln, secrets }
    }

    /// The `--secret` flags for every secret.
    fn secret_args(&self) -> Vec<String> {
        let s = self.secrets.path();
        let mut args = Vec::new();
        for id in ["nl", "crlf", "plain", "pem"] {
            args.push("--secret".to_string());
            args.push(format!("id={id},src={}", s.join(id).display()));
        }
        args.push("--secret".into());
        args.push("id=tok,env=KILN_TEST_TOKEN".into());
        args
    }

    /// `kiln ARGS` with the secrets and the token's variable.
    fn kiln(&self, args: &[&str]) -> Output {
        self.kiln
            .cmd()
            .args(args)
            .args(self.secret_args())
            .env("KILN_TEST_TOKEN", ENV)
            .output()
            .unwrap()
    }
}

/// A Dockerfile whose step prints every secret (whole, inside a line, on
/// stdout and stderr) and fails.
const LEAKY: &str = r#"FROM debian:bookworm
RUN --mount=type=secret,id=nl --mount=type=secret,id=crlf --mount=type=secret,id=plain \
    --mount=type=secret,id=pem,target=/etc/key.pem --mount=type=secret,id=tok,env=TOKEN \
    cat /run/secrets/nl; cat /run/secrets/crlf; cat /run/secrets/plain; echo; \
    cat /etc/key.pem; echo "inline $(cat /run/secrets/nl) and $TOKEN here"; \
    echo "$TOKEN" >&2; echo "the end"; exit 3
"#;

/// Everything kiln printed, both streams.
fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for s in secret_texts() {
        assert!(!text.contains(s), "{what}: secret {s:?} shown in:\n{text}");
    }
}

/// The failure summary: the `error:` message and what follows it.
fn error_part(stderr: &str) -> &str {
    let at = stderr
        .find("error: ")
        .unwrap_or_else(|| panic!("no error message in:\n{stderr}"));
    &stderr[at..]
}

/// The step's failure summary shows its output tail with every secret
/// masked and the ordinary text kept.
fn assert_masked_summary(what: &str, stderr: &str) {
    let err = error_part(stderr);
    assert!(err.contains("failed with exit code 3"), "{what}:\n{err}");
    assert!(err.contains("inline **** and **** here"), "{what}:\n{err}");
    assert!(err.contains("the end"), "{what}:\n{err}");
    // nl, crlf, plain, the four PEM lines and the token on stderr.
    let masked = err.lines().filter(|l| l.trim() == "****").count();
    assert_eq!(masked, 8, "{what}:\n{err}");
}

fn leaky_context(env: &Env) -> String {
    let dir = env.kiln.path("leaky");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), LEAKY).unwrap();
    dir.display().to_string()
}

#[test]
fn secrets_are_masked_in_plain_debug_quiet_output_and_the_failure_summary() {
    let env = Env::new();
    let dir = leaky_context(&env);
    for mode in [
        &["--progress", "plain", "build"][..],
        &["build", "--debug"],
        &["--progress", "quiet", "build"],
    ] {
        let mut args = mode.to_vec();
        args.push(&dir);
        let out = env.kiln(&args);
        let text = shown(&out);
        assert_eq!(out.status.code(), Some(4), "{mode:?}:\n{text}");
        assert_no_secret(&format!("{mode:?}"), &text);
        assert_masked_summary(&format!("{mode:?}"), &String::from_utf8_lossy(&out.stderr));
        if mode.contains(&"quiet") {
            continue;
        }
        // The step's log lines, as they stream.
        for line in ["****", "inline **** and **** here"] {
            assert!(
                text.lines()
                    .any(|l| l.ends_with(&format!(" {line}")) && l.starts_with('#')),
                "{mode:?}: no log line {line:?} in:\n{text}"
            );
        }
    }
}

#[test]
fn secrets_are_masked_in_json_progress() {
    let env = Env::new();
    let dir = leaky_context(&env);
    let out = env.kiln(&["--progress", "json", "build", &dir]);
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert_no_secret("json", &text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<String> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "log")
        .map(|v| v["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logs.iter().filter(|l| *l == "****").count(), 8, "{logs:#?}");
    assert!(
        logs.iter().any(|l| l == "inline **** and **** here"),
        "{logs:#?}"
    );
    // In JSON mode the failure summary is the final `result` event's error.
    let result: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result event in:\n{stderr}"));
    assert_eq!(result["ok"], false);
    let summary = format!("error: {}", result["error"].as_str().unwrap());
    assert_masked_summary("json", &summary);
}

#[test]
fn secrets_are_masked_on_a_terminal() {
    let env = Env::new();
    let dir = leaky_context(&env);
    // `script` gives kiln a terminal (live bars), as a person sees it.
    let mut cmdline = format!("{} --progress tty build {dir}", env!("CARGO_BIN_EXE_kiln"));
    for a in env.secret_args() {
        cmdline.push(' ');
        cmdline.push_str(&a);
    }
    let out = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env("KILN_CACHE_DIR", env.kiln.cache())
        .env("KILN_DATA_DIR", env.kiln.data())
        .env("KILN_TEST_TOKEN", ENV)
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .current_dir(env.kiln.root())
        .output()
        .expect("script (util-linux) runs kiln on a terminal");
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert_no_secret("tty", &text);
    let plain = text.replace("\r\n", "\n");
    assert_masked_summary("tty", &plain);
}

/// A build that uses every secret succeeds, and the values are nowhere in
/// what kiln keeps: image store, exported layout, build cache (layers,
/// configs, step records, snapshots). Layers are uncompressed so a byte
/// search sees their files.
#[test]
fn used_secrets_are_in_no_layer_config_or_cache() {
    let env = Env::new();
    let dir = env.kiln.path("uses");
    fs::create_dir_all(&dir).unwrap();
    // The step checks each value by its sha256: the Dockerfile (kept in
    // image history and step records) must not hold the values either.
    let sha = |b: &[u8]| kiln::oci::Digest::of(b).hex().to_string();
    let file_sha = |id: &str| sha(&fs::read(env.secrets.path().join(id)).unwrap());
    let check = |path: &str, id: &str| {
        format!(
            "test \"$(sha256sum < {path} | cut -c1-64)\" = {}",
            file_sha(id)
        )
    };
    let checks = [
        check("/run/secrets/nl", "nl"),
        check("/run/secrets/crlf", "crlf"),
        check("/run/secrets/plain", "plain"),
        check("/etc/key.pem", "pem"),
        format!(
            "test \"$(printf %s \"$TOKEN\" | sha256sum | cut -c1-64)\" = {}",
            sha(ENV.as_bytes())
        ),
        "echo used > /used".to_string(),
    ];
    let dockerfile = format!(
        "FROM debian:bookworm\n\
         RUN --mount=type=secret,id=nl --mount=type=secret,id=crlf --mount=type=secret,id=plain \
         --mount=type=secret,id=pem,target=/etc/key.pem --mount=type=secret,id=tok,env=TOKEN \
         {}\n",
        checks.join(" && ")
    );
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
    assert_no_secret("the test's Dockerfile", &text);
    let layout = env.kiln.path("layout");
    let dest = format!("type=oci,dest={}", layout.display());
    let dirs = dir.display().to_string();
    let out = env.kiln(&[
        "--progress",
        "plain",
        "build",
        &dirs,
        "-t",
        "uses:1",
        "--compression",
        "none",
        "-o",
        &dest,
    ]);
    let text = shown(&out);
    assert!(out.status.success(), "{text}");
    assert_no_secret("build", &text);
    let ran = env.kiln.stdout(&["run", "uses:1", "cat", "/used"]);
    assert_eq!(ran, "used\n");
    let inspect = env.kiln.stdout(&["inspect", "uses:1"]);
    assert_no_secret("inspect", &inspect);
    assert_tree_has_no_secret(env.kiln.root());
}

/// `grep -r` over `dir` for every secret text (bytes, any file).
fn assert_tree_has_no_secret(dir: &Path) {
    let mut grep = Command::new("grep");
    grep.args(["-rlaF"]);
    for s in secret_texts() {
        grep.args(["-e", s]);
    }
    let out = grep.arg(dir).output().expect("grep");
    let found = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "secret values stored in:\n{found}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Auto builds: `--secret` is at `/run/secrets/NAME` (docs/plan.md) and in
/// the variable `NAME`; printed, it is masked in the log, the failure
/// summary and `--debug` output; the plan never holds the value.
#[test]
fn auto_build_secrets_are_files_and_masked() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("Procfile"), "web: sh -c 'echo hi'\n").unwrap();
    let secret_file = tmp.path().join("tok");
    fs::write(&secret_file, format!("{NL}\n")).unwrap();
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    // The variable holds the file's bytes, newline included.
    let build_cmd = "test -f /run/secrets/tok || { echo no secret file; exit 9; }; \
                     cat /run/secrets/tok; echo \"file $(cat /run/secrets/tok) here\"; \
                     echo \"var $tok\"; exit 3";
    let app_s = app.display().to_string();
    let mut args: Vec<String> = [
        "build",
        &app_s,
        "--debug",
        "--secret",
        &secret_arg,
        "-b",
        build_cmd,
        "-t",
        "auto-sec:1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(support::auto::host_ca_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = home.kiln(&args);
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(!text.contains(NL), "secret shown:\n{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err = error_part(&stderr);
    assert!(err.contains("failed with exit code 3"), "{err}");
    assert!(err.contains("file **** here"), "{err}");
    assert!(err.lines().any(|l| l == "var ****"), "{err}");
    assert!(err.lines().any(|l| l.trim() == "****"), "{err}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('#') && l.ends_with(" ****")),
        "{stderr}"
    );
    // --debug printed the plan and the equivalent Dockerfile: names only.
    assert!(
        stderr.contains("--mount=type=secret,id=tok,target=/run/secrets/tok"),
        "{stderr}"
    );
    let plan = home.stdout(&["plan", &app_s, "--secret", &secret_arg]);
    assert!(plan.contains("\"tok\"") && !plan.contains(NL), "{plan}");
}
