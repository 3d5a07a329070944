//! `kiln load` of hostile docker archives, OCI archives and OCI layouts:
//! each is refused with an error naming the field, exits non-zero, leaves
//! the local image store as it was, and never reads (or reveals) a host
//! file outside what it was given.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use kiln::oci::Digest;
use serde_json::{Value, json};
use support::kiln::Kiln as Env;

/// A home with one image (`app:1`, one gzip layer) and its docker archive
/// and OCI layout exports, plus a canary file standing for a host secret.
struct Fixture {
    env: Env,
    canary: PathBuf,
}

const CANARY: &[u8] = b"{\"secret\":\"host canary\"}";

impl Fixture {
    fn new() -> Fixture {
        let env = Env::new();
        let root = env.path("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/greeting"), "hello\n").unwrap();
        env.ok(&["image", "from-dir", root.to_str().unwrap(), "-t", "app:1"]);
        env.ok(&["save", "app:1", "-o", "type=docker,dest=good-docker.tar"]);
        env.ok(&["save", "app:1", "-o", "type=oci,dest=good-layout"]);
        let canary = env.path("canary.json");
        fs::write(&canary, CANARY).unwrap();
        Fixture { env, canary }
    }

    /// The image store's names and blobs.
    fn store_state(&self) -> (String, Vec<String>) {
        let images = self.env.data().join("images");
        let index = fs::read_to_string(images.join("index.json")).unwrap();
        let mut blobs: Vec<String> = fs::read_dir(images.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        blobs.sort();
        (index, blobs)
    }

    /// Loads `path`: must fail with an error containing every `needle`,
    /// change nothing in the store and leave the canary alone.
    fn refused(&self, path: &Path, needles: &[&str]) -> String {
        let before = self.store_state();
        let out = self.env.kiln(&["load", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "kiln load {} succeeded:\n{}{err}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        for n in needles {
            assert!(err.contains(n), "error lacks {n:?}:\n{err}");
        }
        assert_eq!(self.store_state(), before, "the store changed:\n{err}");
        assert_eq!(fs::read(&self.canary).unwrap(), CANARY);
        let canary_blob = Digest::of(CANARY);
        assert!(
            !self
                .store_state()
                .1
                .contains(&canary_blob.hex().to_string()),
            "the canary was stored as a blob"
        );
        // Leftovers of the refused load are removed.
        let leftovers: Vec<_> = fs::read_dir(self.env.data().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".load-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        err
    }

    /// The members of the good docker archive.
    fn docker_members(&self) -> BTreeMap<String, Vec<u8>> {
        read_tar(&self.env.path("good-docker.tar"))
    }
}

fn read_tar(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_str().unwrap().to_string();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
        out.insert(name, buf);
    }
    out
}

/// A member of a hand-made archive.
enum Member<'a> {
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    /// A file whose name is written as is (the tar crate refuses `..`).
    RawName(&'a str, Vec<u8>),
}

fn write_tar(path: &Path, members: &[Member]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match m {
            Member::File(name, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            Member::RawName(name, data) => {
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
            Member::Symlink(name, target) | Member::HardLink(name, target) => {
                h.set_size(0);
                h.set_entry_type(if matches!(m, Member::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.finish().unwrap();
}

/// The good docker archive's members with manifest.json replaced by `f(manifest)`.
fn docker_with(fx: &Fixture, f: impl FnOnce(&mut Value)) -> Vec<(String, Vec<u8>)> {
    let mut members = fx.docker_members();
    let mut manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    f(&mut manifest);
    members.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    members.into_iter().collect()
}

fn files(members: &[(String, Vec<u8>)]) -> Vec<Member<'_>> {
    members
        .iter()
        .map(|(n, d)| Member::File(n, d.clone()))
        .collect()
}

#[test]
fn docker_archive_config_outside_the_archive_is_refused() {
    let fx = Fixture::new();
    // `../canary.json` is a real file next to the data dir, `/etc/hostname`
    // and `/nonexistent` are host paths: all refused alike, before any
    // host lookup (no existence oracle).
    // From the temp dir `kiln load` extracts into (DATA/images/.load-*),
    // this climbs to the canary.
    let canary_rel = format!(
        "../../../{}",
        fx.canary.file_name().unwrap().to_str().unwrap()
    );
    let mut errors = Vec::new();
    for config in [canary_rel.as_str(), "/etc/hostname", "/nonexistent/x.json"] {
        let members = docker_with(&fx, |m| m[0]["Config"] = json!(config));
        let tar = fx.env.path("evil.tar");
        write_tar(&tar, &files(&members));
        let err = fx.refused(
            &tar,
            &[&format!("manifest.json: [0].Config {config:?}"), "refused"],
        );
        errors.push(err.replace(config, "PATH"));
    }
    assert_eq!(
        errors[1], errors[2],
        "errors differ for existing and missing host paths"
    );
}

#[test]
fn docker_archive_symlink_member_to_a_host_file_is_refused() {
    let fx = Fixture::new();
    let canary = fx.canary.to_str().unwrap().to_string();
    for (kind, target) in [
        ("symlink", canary.as_str()),
        ("symlink", "../../../../../../../../etc/hostname"),
        ("hardlink", canary.as_str()),
    ] {
        let members = docker_with(&fx, |m| m[0]["Config"] = json!("cfg.json"));
        let mut list = files(&members);
        list.push(if kind == "symlink" {
            Member::Symlink("cfg.json", target)
        } else {
            Member::HardLink("cfg.json", target)
        });
        let tar = fx.env.path("evil.tar");
        write_tar(&tar, &list);
        fx.refused(
            &tar,
            &[
                &format!("member \"cfg.json\" is a link to {target:?}, outside the archive"),
                "refused",
            ],
        );
    }
}

#[test]
fn docker_archive_links_inside_the_archive_still_load() {
    // `docker save` of old daemons links duplicate layers to each other.
    let fx = Fixture::new();
    let members = docker_with(&fx, |m| {
        m[0]["RepoTags"] = json!(["linked:1"]);
        let layer = m[0]["Layers"][0].as_str().unwrap().to_string();
        m[0]["Layers"][0] = json!(format!("other/{layer}"));
    });
    let layer = members
        .iter()
        .find(|(n, _)| n.ends_with("layer.tar"))
        .unwrap()
        .0
        .clone();
    let target = format!("../../{layer}");
    let mut list = files(&members);
    let linked = format!("other/{layer}");
    list.push(Member::Symlink(&linked, &target));
    let tar = fx.env.path("linked.tar");
    write_tar(&tar, &list);
    let out = fx.env.stdout(&["load", tar.to_str().unwrap()]);
    assert!(out.contains("Loaded image: linked:1"), "{out}");
}

#[test]
fn docker_archive_repo_tags_must_be_image_references() {
    let fx = Fixture::new();
    for tag in ["../../x:1", "/abs:1", "a b:1"] {
        let members = docker_with(&fx, |m| m[0]["RepoTags"] = json!([tag]));
        let tar = fx.env.path("evil.tar");
        write_tar(&tar, &files(&members));
        fx.refused(
            &tar,
            &[
                "manifest.json: [0].RepoTags: not an image reference",
                &format!("{tag:?}"),
            ],
        );
    }
}

#[test]
fn docker_archive_member_names_leaving_the_archive_are_refused() {
    let fx = Fixture::new();
    let members = docker_with(&fx, |_| {});
    for raw in ["../escape.json", "/abs/escape.json"] {
        let mut list = files(&members);
        list.push(Member::RawName(raw, b"{}".to_vec()));
        let tar = fx.env.path("evil.tar");
        write_tar(&tar, &list);
        fx.refused(
            &tar,
            &[
                &format!("member {raw:?} is absolute or leaves the archive"),
                "refused",
            ],
        );
    }
}

#[test]
fn docker_archive_wrong_diff_id_is_refused() {
    let fx = Fixture::new();
    let mut members = fx.docker_members();
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let cfg_name = manifest[0]["Config"].as_str().unwrap().to_string();
    let mut cfg: Value = serde_json::from_slice(&members[&cfg_name]).unwrap();
    cfg["rootfs"]["diff_ids"][0] = json!(Digest::of(b"not the layer").to_string());
    members.insert(cfg_name, serde_json::to_vec(&cfg).unwrap());
    let members: Vec<_> = members.into_iter().collect();
    let tar = fx.env.path("evil.tar");
    write_tar(&tar, &files(&members));
    fx.refused(&tar, &["manifest.json: [0].Layers[0]", "diff_id"]);
}

/// A copy of the good OCI layout that `f` may edit; `f` gets the layout
/// dir, and the helpers below rewrite blobs and fix up their parents.
fn layout_copy(fx: &Fixture, name: &str) -> PathBuf {
    let dst = fx.env.path(name);
    let _ = fs::remove_dir_all(&dst);
    support::auto::copy_dir(&fx.env.path("good-layout"), &dst);
    dst
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Writes `bytes` as a blob; returns its digest and size.
fn put_blob(layout: &Path, bytes: &[u8]) -> (String, u64) {
    let d = Digest::of(bytes).to_string();
    fs::write(blob_path(layout, &d), bytes).unwrap();
    (d, bytes.len() as u64)
}

/// Edits the (only) manifest and config, rewriting blobs and descriptors so
/// that every digest still matches: only what the edit breaks is broken.
fn edit_image(
    layout: &Path,
    edit_config: impl FnOnce(&mut Value),
    edit_manifest: impl FnOnce(&mut Value),
) {
    let mut index = read_json(&layout.join("index.json"));
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = read_json(&blob_path(layout, &mdigest));
    let cdigest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config = read_json(&blob_path(layout, &cdigest));
    edit_config(&mut config);
    let (cd, cs) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = json!(cd);
    manifest["config"]["size"] = json!(cs);
    edit_manifest(&mut manifest);
    let (md, ms) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = json!(md);
    index["manifests"][0]["size"] = json!(ms);
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn oci_layout_wrong_sizes_are_refused() {
    let fx = Fixture::new();
    // The manifest's size in index.json.
    let l = layout_copy(&fx, "bad-index-size");
    let mut index = read_json(&l.join("index.json"));
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    index["manifests"][0]["size"] = json!(size + 1);
    fs::write(l.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fx.refused(
        &l,
        &[
            "index.json: manifests[0]",
            &format!("has {size} bytes but its descriptor says {}", size + 1),
        ],
    );
    // A layer's size in the manifest (every digest consistent).
    let l = layout_copy(&fx, "bad-layer-size");
    edit_image(
        &l,
        |_| {},
        |m| {
            let s = m["layers"][0]["size"].as_u64().unwrap();
            m["layers"][0]["size"] = json!(s - 1);
        },
    );
    fx.refused(
        &l,
        &[
            "→ layers[0]",
            "is larger than the",
            "bytes its descriptor says",
        ],
    );
    // The config's size in the manifest.
    let l = layout_copy(&fx, "bad-config-size");
    edit_image(&l, |_| {}, |m| m["config"]["size"] = json!(3));
    fx.refused(
        &l,
        &["→ config", "is larger than the 3 bytes its descriptor says"],
    );
}

#[test]
fn oci_layout_wrong_diff_id_is_refused() {
    let fx = Fixture::new();
    let l = layout_copy(&fx, "bad-diff-id");
    edit_image(
        &l,
        |c| c["rootfs"]["diff_ids"][0] = json!(Digest::of(b"other").to_string()),
        |_| {},
    );
    fx.refused(&l, &["index.json: manifests[0]", "→ layers[0]", "diff_id"]);
    // And `kiln cache verify` has nothing to complain about afterwards.
    fx.env.ok(&["cache", "verify"]);
}

#[test]
fn oci_layout_wrong_blob_content_is_refused() {
    let fx = Fixture::new();
    let l = layout_copy(&fx, "bad-blob");
    let index = read_json(&l.join("index.json"));
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&blob_path(&l, md));
    let layer = blob_path(&l, manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::remove_file(&layer).unwrap();
    fs::write(&layer, &bytes).unwrap();
    fx.refused(&l, &["→ layers[0]", "hashes to"]);
}

#[test]
fn oci_layout_names_must_be_image_references() {
    let fx = Fixture::new();
    for key in [
        "io.containerd.image.name",
        "org.opencontainers.image.ref.name",
    ] {
        let l = layout_copy(&fx, "bad-name");
        let mut index = read_json(&l.join("index.json"));
        let ann = index["manifests"][0]["annotations"]
            .as_object_mut()
            .unwrap();
        ann.remove("io.containerd.image.name");
        ann.insert(key.into(), json!("../../x:1"));
        fs::write(l.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        fx.refused(
            &l,
            &[
                "index.json: manifests[0]",
                &format!("annotation {key} is not an image name"),
                "\"../../x:1\"",
            ],
        );
    }
}

#[test]
fn oci_layout_symlinked_blob_to_a_host_file_is_refused() {
    let fx = Fixture::new();
    // A directory layout whose config blob is a link to the canary.
    let l = layout_copy(&fx, "linked-layout");
    let index = read_json(&l.join("index.json"));
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&blob_path(&l, md));
    let cfg = blob_path(&l, manifest["config"]["digest"].as_str().unwrap());
    fs::remove_file(&cfg).unwrap();
    symlink(&fx.canary, &cfg).unwrap();
    fx.refused(&l, &["symbolic link", "refused"]);

    // The same as an OCI archive: the member is refused before any lookup.
    let good = layout_copy(&fx, "good-copy");
    let mut list = Vec::new();
    let mut names = Vec::new();
    for rel in ["oci-layout", "index.json"] {
        names.push((rel.to_string(), fs::read(good.join(rel)).unwrap()));
    }
    let cfg_rel = format!(
        "blobs/sha256/{}",
        cfg.file_name().unwrap().to_str().unwrap()
    );
    for e in fs::read_dir(good.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let rel = format!("blobs/sha256/{}", e.file_name().to_str().unwrap());
        if rel != cfg_rel {
            names.push((rel, fs::read(e.path()).unwrap()));
        }
    }
    for (n, d) in &names {
        list.push(Member::File(n, d.clone()));
    }
    let canary = fx.canary.to_str().unwrap().to_string();
    list.push(Member::Symlink(&cfg_rel, &canary));
    let tar = fx.env.path("evil-oci.tar");
    write_tar(&tar, &list);
    fx.refused(
        &tar,
        &[&format!(
            "member {cfg_rel:?} is a link to {canary:?}, outside the archive"
        )],
    );
}

#[test]
fn good_archives_and_layouts_still_load() {
    let fx = Fixture::new();
    fx.env.ok(&["rmi", "app:1"]);
    let out = fx
        .env
        .stdout(&["load", fx.env.path("good-docker.tar").to_str().unwrap()]);
    assert!(out.contains("Loaded image: app:1"), "{out}");
    fx.env.ok(&["rmi", "app:1"]);
    let out = fx
        .env
        .stdout(&["load", fx.env.path("good-layout").to_str().unwrap()]);
    assert!(out.contains("Loaded image: app:1"), "{out}");
    fx.env
        .ok(&["save", "app:1", "-o", "type=oci-archive,dest=good-oci.tar"]);
    fx.env.ok(&["rmi", "app:1"]);
    let out = fx
        .env
        .stdout(&["load", fx.env.path("good-oci.tar").to_str().unwrap()]);
    assert!(out.contains("Loaded image: app:1"), "{out}");
    fx.env.ok(&["cache", "verify"]);
}

/// Adds an in-toto "layer" (as in buildx's attestation manifests) whose
/// descriptor claims `size_delta` more bytes than it has.
fn add_attestation(layout: &Path, size_delta: u64) {
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#;
    let (d, size) = put_blob(layout, statement);
    let diff = d.clone();
    edit_image(
        layout,
        |c| {
            c["rootfs"]["diff_ids"]
                .as_array_mut()
                .unwrap()
                .push(json!(diff))
        },
        |m| {
            m["layers"].as_array_mut().unwrap().push(json!({
                "mediaType": "application/vnd.in-toto+json",
                "digest": d,
                "size": size + size_delta,
            }))
        },
    );
}

#[test]
fn oci_layout_with_a_non_tar_layer_loads_and_is_still_checked() {
    let fx = Fixture::new();
    let l = layout_copy(&fx, "attested");
    add_attestation(&l, 0);
    fx.env.ok(&["rmi", "app:1"]);
    let out = fx.env.stdout(&["load", l.to_str().unwrap()]);
    assert!(out.contains("Loaded image: app:1"), "{out}");
    // Its digest and size are still checked.
    let l = layout_copy(&fx, "attested-bad");
    add_attestation(&l, 5);
    fx.refused(&l, &["→ layers[1]", "its descriptor says"]);
}
