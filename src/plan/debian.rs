//! `nixPkgs`/`nixLibs` names (what Nixpacks configs and plans use) mapped
//! to Debian packages. The table is the one in `docs/plan.md`; a name that
//! is not in it is an error that points at `aptPkgs`.

use anyhow::bail;

/// `(nix name or prefix*, build packages, runtime packages)`.
pub const TABLE: &[(&str, &[&str], &[&str])] = &[
    ("nodejs*", &["nodejs", "npm"], &["nodejs"]),
    ("npm*", &["npm"], &[]),
    ("yarn*", &["yarnpkg"], &[]),
    (
        "python3*",
        &["python3", "python3-venv", "python3-dev"],
        &["python3"],
    ),
    (
        "python",
        &["python3", "python3-venv", "python3-dev"],
        &["python3"],
    ),
    ("pipenv", &["pipenv"], &[]),
    ("postgresql*", &["libpq-dev"], &["libpq5"]),
    (
        "libmysqlclient*",
        &["default-libmysqlclient-dev"],
        &["libmariadb3"],
    ),
    ("cairo", &["libcairo2-dev"], &["libcairo2"]),
    ("ffmpeg*", &["ffmpeg"], &["ffmpeg"]),
    ("poppler_utils", &["poppler-utils"], &["poppler-utils"]),
    ("gcc", &["gcc"], &[]),
    ("gcc-unwrapped", &["libstdc++6"], &["libstdc++6"]),
    ("stdenv.cc.cc.lib", &["libstdc++6"], &["libstdc++6"]),
    ("binutils", &["binutils"], &[]),
    ("gnumake", &["make"], &[]),
    ("zlib", &["zlib1g-dev"], &["zlib1g"]),
    ("zlib.dev", &["zlib1g-dev"], &[]),
    ("go", &["golang-go"], &[]),
    ("go_1_*", &["golang-go"], &[]),
    ("rustc", &["rustc", "cargo"], &[]),
    ("cargo", &["cargo"], &[]),
    ("rust-bin*", &["rustc", "cargo"], &[]),
    ("musl", &["musl-tools"], &[]),
    ("musl.dev", &["musl-dev"], &[]),
    ("openssl", &["libssl-dev", "pkg-config"], &["libssl3t64"]),
    ("openssl.dev", &["libssl-dev", "pkg-config"], &[]),
    ("pkg-config", &["pkg-config"], &[]),
    (
        "jdk*",
        &["openjdk-21-jdk-headless"],
        &["openjdk-21-jre-headless"],
    ),
    ("maven", &["maven"], &[]),
    ("leiningen", &["leiningen"], &[]),
    ("clojure", &["clojure"], &[]),
    ("elixir*", &["elixir", "erlang-dev"], &["erlang-nox"]),
    ("erlang", &["erlang-nox"], &["erlang-nox"]),
    ("rebar3", &["rebar3"], &[]),
    ("php*", &["php-cli", "php-fpm"], &["php-cli", "php-fpm"]),
    ("nginx", &["nginx"], &["nginx"]),
    ("caddy", &["caddy"], &["caddy"]),
    (
        "imagemagick",
        &["imagemagick", "libmagickwand-dev"],
        &["imagemagick"],
    ),
    ("libuuid", &["uuid-dev"], &["libuuid1"]),
    ("libGL", &["libgl1"], &["libgl1"]),
    ("crystal", &["crystal"], &[]),
    ("shards", &["shards"], &[]),
    ("stack", &["haskell-stack"], &[]),
    ("guile", &["guile-3.0"], &["guile-3.0"]),
    ("swift", &["swiftlang"], &[]),
    ("clang", &["clang"], &[]),
    ("coreutils", &["coreutils"], &[]),
    ("gnu-cobol", &["gnucobol3"], &["libcob4"]),
    ("wget", &["wget"], &[]),
    ("curl", &["curl"], &[]),
    ("git", &["git"], &[]),
    ("cowsay", &["cowsay"], &[]),
    ("sl", &["sl"], &[]),
    ("procps", &["procps"], &[]),
    ("sqlite", &["sqlite3", "libsqlite3-dev"], &["libsqlite3-0"]),
    ("graphviz", &["graphviz"], &["graphviz"]),
    ("chromium", &["chromium"], &["chromium"]),
];

/// Debian packages for a Nix name: `(build, runtime)`.
pub fn map(nix: &str) -> crate::Result<(&'static [&'static str], &'static [&'static str])> {
    // Nix expressions such as `(php83.withExtensions …)` map by their head.
    let head = nix
        .trim_start_matches('(')
        .split(['.', ' '])
        .next()
        .unwrap_or(nix);
    for (key, build, run) in TABLE {
        let hit = match key.strip_suffix('*') {
            Some(prefix) => head.starts_with(prefix) || nix.starts_with(prefix),
            None => *key == nix || *key == head && !nix.contains('.'),
        };
        if hit {
            return Ok((build, run));
        }
    }
    bail!(
        "the Nix package `{nix}` has no Debian equivalent in kiln's table: \
         list the Debian package(s) in `aptPkgs` instead (e.g. `aptPkgs = [\"...\", \"<debian-name>\"]`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_common_names() {
        assert_eq!(map("nodejs_20").unwrap().0, &["nodejs", "npm"]);
        assert_eq!(map("python311").unwrap().1, &["python3"]);
        assert_eq!(map("postgresql_16.dev").unwrap().0, &["libpq-dev"]);
        assert_eq!(
            map("(php83.withExtensions (pe: pe.enabled))").unwrap().0,
            &["php-cli", "php-fpm"]
        );
        let e = map("frobnicator").unwrap_err().to_string();
        assert!(e.contains("aptPkgs"), "{e}");
    }

    /// docs/plan.md carries the same table as the code.
    #[test]
    fn docs_list_every_mapping() {
        let doc = include_str!("../../docs/plan.md");
        for (nix, build, run) in TABLE {
            let fmt = |l: &[&str]| {
                if l.is_empty() {
                    "–".to_string()
                } else {
                    l.iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            };
            let row = format!("| `{nix}` | {} | {} |", fmt(build), fmt(run));
            assert!(doc.contains(&row), "docs/plan.md lacks the row {row}");
        }
    }
}
