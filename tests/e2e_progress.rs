//! The terminal display, as a user sees it: `kiln build` of a static site
//! on a cold cache, run in a real terminal (tmux, 120×40) whose screen is
//! captured while the build runs and when it has ended. The screen must
//! show the header with step counts and elapsed time, a running step with
//! its own elapsed time, each package base on one line (its layers folded
//! in), lower-case units and digests, steps numbered without gaps, and the
//! closing line. `--progress plain` on the warm rebuild ends the same way.
//!
//! Downloads the site's Debian packages (about 60 MB) into a private
//! cache: 10 to 30 s.
#![cfg(feature = "e2e")]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::auto::example;
use support::kiln::Kiln;

/// A tmux server of the test's own (`-L`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Starts `script` (a shell script) in a detached 120×40 session.
    fn start(script: &Path) -> Tmux {
        let tmux = Tmux {
            socket: format!("kiln-progress-{}", std::process::id()),
        };
        let out = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "build", "-x", "120", "-y", "40"])
            .arg(format!("sh {}", script.display()))
            .output()
            .expect("tmux is installed (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// The screen, one line per row, without the padding.
    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "build"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

fn re(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).unwrap()
}

#[test]
fn the_terminal_shows_header_step_times_folded_packages_and_a_closing_line() {
    let home = Kiln::new();
    let app = example("staticfile", home.root());
    let exit = home.path("exit");
    let script = home.path("build.sh");
    std::fs::write(
        &script,
        format!(
            "export KILN_CACHE_DIR='{}' KILN_DATA_DIR='{}' NO_COLOR=1\n\
             unset SOURCE_DATE_EPOCH\n\
             '{}' build -t static:latest '{}' </dev/null\n\
             echo $? > '{}.tmp' && mv '{}.tmp' '{}'\n\
             sleep 600\n",
            home.cache().display(),
            home.data().display(),
            env!("CARGO_BIN_EXE_kiln"),
            app.display(),
            exit.display(),
            exit.display(),
            exit.display(),
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&script);
    let started = Instant::now();
    let mut screens = Vec::new();
    while !exit.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the build did not end in 10 minutes; screen:\n{}",
            tmux.screen()
        );
        screens.push(tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = tmux.screen();
    let code = std::fs::read_to_string(&exit).unwrap();
    assert_eq!(code.trim(), "0", "the build failed; screen:\n{last}");

    // While it ran: the header, and a running step with its own time.
    let header = re(r"(?m)^\S building \d+/\d+ steps  \d+\.\ds$");
    let running = re(r"(?m)^\S \[packages\] .*  \d+\.\ds$");
    assert!(
        screens.iter().any(|s| header.is_match(s)),
        "no header `building N/M steps  T` on any of {} screens; last:\n{last}",
        screens.len()
    );
    assert!(
        screens.iter().any(|s| running.is_match(s)),
        "no running package step with its elapsed time on any of {} screens; last:\n{last}",
        screens.len()
    );

    // When it ended: one line per package base, no line per layer.
    let folded =
        re(r"(?m)^\[packages\] .* \(\w+\)  \d+ package layers, [\d.]+ (KiB|MiB)  \d+\.\ds$");
    assert!(
        folded.find_iter(&last).count() >= 1,
        "no folded package line:\n{last}"
    );
    assert!(
        !last.lines().any(|l| l.starts_with("layer ")),
        "a package layer has a line of its own:\n{last}"
    );
    // Lower-case units and digests.
    assert!(!last.contains("MIB") && !last.contains("KIB"), "{last}");
    assert!(!re(r"[0-9A-F]{12}").is_match(&last), "{last}");
    // Steps numbered 1..n in each stage.
    let step = re(r"(?m)^\[(\w+) (\d+)/(\d+)\] ");
    let mut seen: std::collections::BTreeMap<String, (Vec<usize>, usize)> = Default::default();
    for c in step.captures_iter(&last) {
        let e = seen.entry(c[1].to_string()).or_default();
        e.0.push(c[2].parse().unwrap());
        e.1 = c[3].parse().unwrap();
    }
    assert!(!seen.is_empty(), "no step lines:\n{last}");
    for (stage, (numbers, total)) in &seen {
        assert_eq!(
            numbers,
            &(1..=*total).collect::<Vec<_>>(),
            "stage {stage}:\n{last}"
        );
    }
    // The closing line.
    let closing =
        re(r"(?m)^named static:latest sha256:[0-9a-f]{12}… [\d.]+ (KiB|MiB) in \d+\.\d+ s$");
    assert!(closing.is_match(&last), "no closing line:\n{last}");
    drop(tmux);

    // Plain output: the same closing line, and the step counts.
    let out = home.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "static:latest",
        app.to_str().unwrap(),
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(re(r"(?m)^building: \d+ steps$").is_match(&err), "{err}");
    let counts: Vec<(u32, u32)> = re(r"(?m)^#\d+ \[.*  CACHED  \((\d+)/(\d+) steps\)$")
        .captures_iter(&err)
        .map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap()))
        .collect();
    assert!(
        counts
            .last()
            .is_some_and(|(done, total)| done == total && *total as usize == counts.len()),
        "{err}"
    );
    assert!(
        re(r"(?m)^named static:latest sha256:[0-9a-f]{12}… [\d.]+ (KiB|MiB) in \d+\.\d+ s$")
            .is_match(&err),
        "{err}"
    );
}
