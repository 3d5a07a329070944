//! `kiln rebase`: the library's [`crate::rebase()`], and what it
//! changed printed (`package: old → new`, then a summary line).

use clap::Args;

use crate::Result;
use crate::progress::Progress;
use crate::rebase;

#[derive(Args, Debug)]
pub struct RebaseArgs {
    /// The local image (name, name:tag or digest prefix), built by kiln.
    pub image: String,
    /// Name the rebased image NEW (default: IMAGE's own name, moved to it).
    #[arg(short = 't', long = "tag", value_name = "NEW")]
    pub tag: Option<String>,
}

pub fn run(a: RebaseArgs, progress: &Progress) -> Result<()> {
    let r = rebase::rebase_default(&a.image, a.tag.as_deref(), progress)?;
    let names = r.names.join(", ");
    if r.changes.is_empty() {
        println!(
            "{}: all {} Debian packages are current in {} (Release of {}); the image is unchanged: {names} {}",
            a.image, r.packages, r.suite, r.release_date, r.digest
        );
        return Ok(());
    }
    for c in &r.changes {
        println!("{c}");
    }
    println!(
        "rebased {} onto {} (Release of {}): {} package{} changed, {} of {} package layers new, {} app layers kept; {names} {}",
        a.image,
        r.suite,
        r.release_date,
        r.changes.len(),
        if r.changes.len() == 1 { "" } else { "s" },
        r.new_layers,
        r.package_layers,
        r.layers_kept,
        r.digest
    );
    Ok(())
}
