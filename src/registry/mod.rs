//! The OCI Distribution client: references, auth, pull and push.
//!
//! | module | owns |
//! |---|---|
//! | [`reference`] | image references parsed as docker does |

pub mod reference;

pub use reference::{InvalidReference, Reference};
