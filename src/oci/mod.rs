//! The OCI image core: blobs, layers, images, and where they are kept.
//!
//! | module | owns |
//! |---|---|
//! | [`digest`] | `sha256:` digests and hashing readers/writers |
//! | [`store`] | the content-addressed blob store (crash-safe writes, verify, prune) |

pub mod digest;
pub mod layer;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use layer::{Compression, Entry, EntryKind, Layer, LayerOptions, Meta};
pub use store::{BlobInfo, Store};
