//! The OCI image core: blobs, layers, images, and where they are kept.
//!
//! | module | owns |
//! |---|---|
//! | [`digest`] | `sha256:` digests and hashing readers/writers |
//! | [`store`] | the content-addressed blob store (crash-safe writes, verify, prune) |
//! | [`layer`] | reproducible layer tars from directory scans or entry lists |
//! | [`pgzip`] | gzip on every core, bytes independent of the thread count |
//! | [`unpack`] | applying layer tars to directories (rootfs or overlay lower dirs) |
//! | [`image`] | config / manifest / index assembly, canonical JSON, platforms |
//! | [`layout`] | OCI image layout directories |
//! | [`links`] | symlinks followed through a listing of a tree (the context's, an image's) |
//! | [`images`] | the local image store (named images) |
//! | [`export`] | `--output` destinations: OCI dir, OCI archive, docker archive |
//! | [`import`] | `kiln load`: layouts and archives into the image store, verified |
//! | [`members`] | the files of a loaded layout or archive, read as data only |
//! | [`spool`] | file contents parked in an anonymous temp file until a layer is written |
//! | [`from_dir`] | one-layer images from a directory |

pub mod digest;
pub mod export;
pub mod from_dir;
pub mod image;
pub mod images;
pub mod import;
pub mod inroot;
pub mod layer;
pub mod layout;
pub mod links;
pub mod members;
pub mod pgzip;
pub mod reference;
pub mod spool;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use image::{Image, ImageBuilder};
pub use images::ImageStore;
pub use layer::{Compression, Entry, EntryKind, Layer, LayerOptions, Meta};
pub use store::{BlobInfo, Store};

/// The blob store under the cache dir (`KILN_CACHE_DIR`), shared by builds.
pub fn cache_store() -> crate::Result<Store> {
    Store::open(crate::paths::cache_dir()?.join("store"))
}
