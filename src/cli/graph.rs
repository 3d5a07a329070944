//! `kiln graph`: parse and lower a Dockerfile, print the build graph.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::Result;
use crate::dockerfile::{self, BuildArgs, NoResolver};
use crate::graph::key;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// Build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Dockerfile path (default: DIR/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build argument NAME=VALUE (repeatable).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// Stage to build (default: the last one).
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform, e.g. linux/amd64 (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Also print each needed stage's cache keys.
    #[arg(long)]
    pub keys: bool,
}

pub fn run(args: GraphArgs, progress: &Progress) -> Result<()> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--build-arg {a}: write NAME=VALUE");
        };
        build_args.insert(k.to_string(), v.to_string());
    }
    let dockerfile = dockerfile::dockerfile_path(&args.context, args.file.as_deref());
    let ba = BuildArgs {
        args: build_args,
        target: args.target,
        platform: args.platform,
        build_platform: None,
        ..Default::default()
    };
    let loaded = dockerfile::load_with(&args.context, &dockerfile, &ba, &NoResolver)?;
    for w in &loaded.lowered.warnings {
        progress.warn(w.clone());
    }
    let g = &loaded.lowered.graph;
    let mut out = serde_json::json!({
        "graph": g,
        "order": loaded.lowered.order,
        "ignore_file": loaded.ignore_file,
    });
    if args.keys {
        out["keys"] = serde_json::to_value(key::compute(g, g.target, &Default::default())?)?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
