//! Debian packages as image content: the repository (signed indexes,
//! cache), the resolver, .deb → layers with a dpkg database, the
//! maintainer-script results, and the lockfile. See `docs/packages.md`.
//!
//! | module | owns |
//! |---|---|
//! | [`repo`] | suites, mirrors, `InRelease`/`Packages` fetching, verification, cache |
//! | [`verify`] | OpenPGP checks of `InRelease` with the shipped archive keys |
//! | [`fetch`] | HTTP (conditional GETs, streams) |
//! | [`dns`] | one DNS lookup per host, not per download |
//! | [`index`] | a suite's package index and lookups |
//! | [`control`] | deb822 paragraphs |
//! | [`relation`] | `Depends`-style relation fields |
//! | [`version`] | Debian version ordering |
//! | [`resolve`] | the resolver and version requests |
//! | [`deb`] | reading .deb files into layer entries |
//! | [`dpkg`] | the dpkg database in the image |
//! | [`exclude`] | docs, manual pages and translations left out (dpkg `path-exclude`) |
//! | [`configure`] | maintainer-script results, emulated |
//! | [`compose`] | downloads, grouping by the dependency graph, layer cache |
//! | [`shared`] | what one build's package sets share: each .deb read once, layers written in the order the build needs them |
//! | [`lock`] | `kiln.lock` |
//! | [`resolved`] | resolved sets reused by later builds (like pulled base images) |
//! | [`image`] | the library API: request → lockfile → image |

pub mod compose;
pub mod configure;
pub mod control;
pub mod deb;
pub mod dpkg;
pub mod exclude;
pub mod fetch;
pub mod image;
pub mod index;
pub mod lock;
pub mod relation;
pub mod repo;
pub mod resolve;
pub mod resolved;
pub mod shared;
pub mod verify;
pub mod version;
