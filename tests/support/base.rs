//! A Debian bookworm base image (mmdebstrap minbase, one uncompressed
//! layer) pushed to a local registry, for builds by kiln and buildah from
//! the same base.

use std::path::Path;
use std::process::Command;

use kiln::oci::ImageStore;
use kiln::oci::image::{ImageBuilder, host_platform, set_env};
use kiln::oci::layer::{Compression, Layer};
use kiln::oci::store::BlobInfo;

use super::debian;
use super::registry::Registry;

/// Puts `debian:bookworm` in the image store at `data_dir/images` (hard
/// links to the shared e2e store: fast).
pub fn local_debian(data_dir: &Path) {
    let store = debian::store();
    let digest = debian::base_layer();
    let size = store.size(&digest).unwrap();
    let layer = Layer {
        diff_id: digest.clone(),
        blob: BlobInfo { digest, size },
        compression: Compression::None,
    };
    let mut b = ImageBuilder::scratch(host_platform());
    b.add_layer(&layer, "mmdebstrap --variant=minbase bookworm");
    set_env(
        b.config_mut(),
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    b.config_mut().set_cmd(Some(vec!["bash".into()]));
    let img = b.write(&store, 1).unwrap();
    let images = ImageStore::open(data_dir.join("images")).unwrap();
    images
        .import(&store, &img.manifest_desc, "debian:bookworm")
        .unwrap();
}

/// [`local_debian`], then pushes it to `registry` as `debian:bookworm`.
/// Returns the pushed reference.
pub fn push_debian(registry: &Registry, data_dir: &Path, cache_dir: &Path) -> String {
    local_debian(data_dir);
    let reference = format!("{}/debian:bookworm", registry.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--progress", "quiet", "push", "debian:bookworm", &reference])
        .env("KILN_DATA_DIR", data_dir)
        .env("KILN_CACHE_DIR", cache_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pushing the base: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reference
}
