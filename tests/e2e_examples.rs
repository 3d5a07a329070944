//! End to end: the example apps of issue 8 beyond the basic ones in
//! `e2e_auto.rs` — a Vite React SPA served by Caddy, a Next.js server,
//! FastAPI + uvicorn with uv (and with poetry, optional), Django +
//! gunicorn, a Rust HTTP server with a crates.io dependency and a Turbo
//! monorepo (and, optional, Nuxt, Remix, SvelteKit, Yarn Berry and Haunt
//! apps). Each is built by kiln with no Dockerfile,
//! loaded into podman, started with `--network host -e PORT=…`, asked
//! over HTTP, then sent SIGTERM and expected to exit within 10 s.
//!
//! The builds share one kiln cache (`support::shared_cache()`) and run
//! one after another. `KILN_EXAMPLES=a,b`
//! runs only some of them (and the optional ones, such as python-poetry).
#![cfg(feature = "e2e")]

mod support;

use std::time::Instant;

use support::auto::build_and_serve;
use support::kiln::Kiln;

/// (example, text the HTTP answer must contain)
const EXAMPLES: &[(&str, &str)] = &[
    (
        "node-vite-react",
        "<title>Hello from node-vite-react</title>",
    ),
    ("node-nextjs", "Hello from node-nextjs"),
    ("python-uv", "Hello from python-uv"),
    ("python-django", "Hello from python-django"),
    ("rust-cargo", "Hello from rust-cargo"),
    // `npx turbo run start`: the app sees PORT (turbo's loose env mode).
    ("node-turbo", "Hello from node-npm"),
];

/// Run only when named in `KILN_EXAMPLES` (they push a cold run past the
/// ~8 min budget): poetry on bookworm (`.python-version` 3.11) adds ~80 s;
/// the framework apps bench/examples.sh also runs, cold, 10 to 110 s each
/// (nuxt is the one with npm's musl bindings in node_modules).
const OPTIONAL: &[(&str, &str)] = &[
    ("python-poetry", "Hello from python-poetry"),
    ("node-nuxt", "<html"),
    ("node-remix", "Hello from node-remix"),
    ("node-sveltekit", "Hello from node-sveltekit"),
    ("node-yarn-berry", "Hello from node-npm"),
    ("scheme-haunt", "Hello from haunt"),
];

#[test]
fn more_examples_build_and_answer_http() {
    let home = Kiln::shared();
    let tmp = tempfile::tempdir().unwrap();
    let only = std::env::var("KILN_EXAMPLES").ok();
    let all = Instant::now();
    let mut ran = 0;
    let named = |name: &str| {
        only.as_deref()
            .is_some_and(|o| o.split(',').any(|x| x == name))
    };
    for (name, expect) in EXAMPLES.iter().chain(OPTIONAL) {
        let optional = OPTIONAL.iter().any(|(n, _)| n == name);
        if (only.is_some() || optional) && !named(name) {
            continue;
        }
        build_and_serve(&home, tmp.path(), name, expect);
        ran += 1;
    }
    assert!(ran > 0, "KILN_EXAMPLES={only:?} matches no example");
    eprintln!("all examples: {:.1}s", all.elapsed().as_secs_f64());
}
