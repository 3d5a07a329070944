//! Native dependencies: a Python or Node package that compiles against (or
//! loads at run time) a C library gets the library's `-dev` packages in the
//! build stage and its shared libraries in the runtime stage.
//!
//! Nixpacks keeps such a table inside each provider, tested by substring
//! of the manifest's text (so `pg` matched any Gemfile mentioning it). Here it is one
//! table keyed by the parsed dependency name, for both languages. A library
//! the table misses is still caught after the build: the runtime stage
//! checks every shared object it copied ([`super::shared_libs`]) and names
//! the library, the file that needs it and, from [`SONAMES`], the package
//! (which `kiln build` then adds to the runtime and builds again).

/// Which manifest a dependency name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecosystem {
    /// PyPI names, normalised (lower case, `_` → `-`).
    Python,
    /// npm names.
    Node,
}

/// A native dependency and the Debian packages it needs.
pub struct Native {
    pub ecosystem: Ecosystem,
    pub name: &'static str,
    /// Headers, `pkg-config` files, compilers: the build stage only.
    pub build: &'static [&'static str],
    /// Shared libraries and programs the package loads or runs.
    pub runtime: &'static [&'static str],
}

const fn py(
    name: &'static str,
    build: &'static [&'static str],
    runtime: &'static [&'static str],
) -> Native {
    Native {
        ecosystem: Ecosystem::Python,
        name,
        build,
        runtime,
    }
}

const fn node(
    name: &'static str,
    build: &'static [&'static str],
    runtime: &'static [&'static str],
) -> Native {
    Native {
        ecosystem: Ecosystem::Node,
        name,
        build,
        runtime,
    }
}

/// What node-gyp needs to compile an addon (Debian's npm brings node-gyp
/// and the Node headers, not a compiler).
const NODE_GYP: &[&str] = &["python3", "g++", "make"];

/// The table (names checked against every suite's index by the e2e test
/// `every_planned_package_exists_in_its_suite`; suite renames are in
/// `plan::suite_package`).
pub const TABLE: &[Native] = &[
    // Python: packages built from source (no wheel for the platform, or
    // sdist-only like psycopg2), and ctypes/cffi loaders of system libraries.
    py("psycopg2", &["libpq-dev"], &["libpq5"]),
    py("psycopg", &["libpq-dev"], &["libpq5"]),
    py("psycopg-c", &["libpq-dev"], &["libpq5"]),
    py(
        "mysqlclient",
        &["default-libmysqlclient-dev", "pkg-config"],
        &["libmariadb3"],
    ),
    py("pycairo", &["libcairo2-dev", "pkg-config"], &["libcairo2"]),
    py("cairo", &["libcairo2-dev", "pkg-config"], &["libcairo2"]),
    py(
        "pillow",
        &["libjpeg62-turbo-dev", "zlib1g-dev", "libfreetype-dev"],
        &["libjpeg62-turbo", "zlib1g", "libfreetype6"],
    ),
    py(
        "lxml",
        &["libxml2-dev", "libxslt1-dev"],
        &["libxml2", "libxslt1.1"],
    ),
    py("cffi", &["libffi-dev"], &["libffi8"]),
    py("pyodbc", &["unixodbc-dev"], &["libodbc2"]),
    py("python-magic", &[], &["libmagic1t64"]),
    py(
        "weasyprint",
        &[],
        &["libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0"],
    ),
    py("opencv-python", &[], &["libgl1", "libglib2.0-0t64"]),
    py("pydub", &["ffmpeg"], &["ffmpeg"]),
    py("pdf2image", &["poppler-utils"], &["poppler-utils"]),
    // Node: addons compiled by node-gyp at install time.
    node("bcrypt", NODE_GYP, &[]),
    node("argon2", NODE_GYP, &[]),
    node("better-sqlite3", NODE_GYP, &[]),
    node("sqlite3", NODE_GYP, &[]),
    node("node-pty", NODE_GYP, &[]),
    node("cpu-features", NODE_GYP, &[]),
    node(
        "canvas",
        &[
            "python3",
            "g++",
            "make",
            "pkg-config",
            "libcairo2-dev",
            "libpango1.0-dev",
            "libjpeg-dev",
            "libgif-dev",
            "librsvg2-dev",
        ],
        &[
            "libcairo2",
            "libpango-1.0-0",
            "libpangocairo-1.0-0",
            "libjpeg62-turbo",
            "libgif7",
            "librsvg2-2",
        ],
    ),
    // Puppeteer's own Chrome download lands in a cache the runtime does
    // not copy: Debian's chromium (and its libraries) runs instead.
    node("puppeteer", &["chromium"], &["chromium"]),
    node("prisma", &["libssl-dev", "pkg-config"], &["libssl3t64"]),
    node(
        "@prisma/client",
        &["libssl-dev", "pkg-config"],
        &["libssl3t64"],
    ),
];

/// The entries for `deps` of `eco`, in table order.
pub fn lookup<'a>(
    eco: Ecosystem,
    deps: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'static Native> + 'a {
    TABLE
        .iter()
        .filter(move |n| n.ecosystem == eco && deps(n.name))
}

/// Shared-library names (sonames) and the Debian package (trixie's name)
/// that ships them: the package a missing library's error suggests.
pub const SONAMES: &[(&str, &str)] = &[
    ("libpq.so.5", "libpq5"),
    ("libmariadb.so.3", "libmariadb3"),
    ("libmysqlclient.so.21", "libmysqlclient21"),
    ("libcairo.so.2", "libcairo2"),
    ("libjpeg.so.62", "libjpeg62-turbo"),
    ("libpng16.so.16", "libpng16-16t64"),
    ("libfreetype.so.6", "libfreetype6"),
    ("libz.so.1", "zlib1g"),
    ("libxml2.so.2", "libxml2"),
    ("libxslt.so.1", "libxslt1.1"),
    ("libexslt.so.0", "libxslt1.1"),
    ("libffi.so.8", "libffi8"),
    ("libodbc.so.2", "libodbc2"),
    ("libmagic.so.1", "libmagic1t64"),
    ("libGL.so.1", "libgl1"),
    ("libglib-2.0.so.0", "libglib2.0-0t64"),
    ("libgthread-2.0.so.0", "libglib2.0-0t64"),
    ("libgobject-2.0.so.0", "libglib2.0-0t64"),
    ("libpango-1.0.so.0", "libpango-1.0-0"),
    ("libpangocairo-1.0.so.0", "libpangocairo-1.0-0"),
    ("libgif.so.7", "libgif7"),
    ("librsvg-2.so.2", "librsvg2-2"),
    ("libssl.so.3", "libssl3t64"),
    ("libcrypto.so.3", "libssl3t64"),
    ("libsqlite3.so.0", "libsqlite3-0"),
    ("libvips.so.42", "libvips42t64"),
    ("libgomp.so.1", "libgomp1"),
    ("libgfortran.so.5", "libgfortran5"),
    ("libstdc++.so.6", "libstdc++6"),
    ("libuuid.so.1", "libuuid1"),
    ("libyaml-0.so.2", "libyaml-0-2"),
    ("libgeos_c.so.1", "libgeos-c1t64"),
    ("libgdal.so.36", "libgdal36"),
    ("libsndfile.so.1", "libsndfile1"),
    ("libX11.so.6", "libx11-6"),
    ("libnss3.so", "libnss3"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_ecosystem_and_normalised() {
        for (i, a) in TABLE.iter().enumerate() {
            if a.ecosystem == Ecosystem::Python {
                assert_eq!(a.name, a.name.to_ascii_lowercase().replace('_', "-"));
            }
            for b in &TABLE[i + 1..] {
                assert!(
                    a.ecosystem != b.ecosystem || a.name != b.name,
                    "{} twice",
                    a.name
                );
            }
        }
    }

    #[test]
    fn lookup_by_parsed_names() {
        let deps = ["bcrypt", "express"];
        let hits: Vec<&str> = lookup(Ecosystem::Node, |d| deps.contains(&d))
            .map(|n| n.name)
            .collect();
        assert_eq!(hits, ["bcrypt"]);
        assert_eq!(lookup(Ecosystem::Python, |d| d == "bcrypt").count(), 0);
    }
}
