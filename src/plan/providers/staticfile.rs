//! Static sites (`Staticfile`, `public/`, `dist/`, `index/`, `index.html`)
//! served by Caddy from Debian, configured by a generated Caddyfile asset
//! (Nixpacks used nginx; one small server for static sites and SPAs keeps
//! one config generator). The `Staticfile` keys `root`, `gzip` and
//! `directory` are honoured.

use super::Provider;
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, StartPhase};

pub struct Staticfile;

/// What makes Caddy serve every request in full: no validators out, none
/// honoured in. Every file of a kiln image has the reproducible mtime, and
/// Caddy's validators are that mtime (`Last-Modified`) and `mtime-size`
/// (`ETag`), so they stay the same across a same-size change: a browser or
/// CDN revalidating would get a 304 and keep the old page. Caddy (Debian's
/// 2.6) has no content-hash ETag, so there are no validators at all; the
/// deletes are deferred to the response, after `file_server` set them.
const NO_STALE_VALIDATORS: &str = "\trequest_header -If-None-Match\n\trequest_header -If-Modified-Since\n\trequest_header -If-Range\n\theader {\n\t\t-ETag\n\t\t-Last-Modified\n\t\tdefer\n\t}\n";

/// A Caddyfile serving `root`; `spa` falls back to `/index.html`.
pub fn caddyfile(root: &str, spa: bool, browse: bool) -> String {
    let port = if spa { 3000 } else { 80 };
    let mut s = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n\n:{{$PORT:{port}}} {{\n\tlog {{\n\t\toutput stdout\n\t\tformat json\n\t}}\n\troot * {root}\n\tencode gzip\n{NO_STALE_VALIDATORS}"
    );
    if spa {
        s.push_str("\ttry_files {path} /index.html\n");
    }
    s.push_str(if browse {
        "\tfile_server browse\n}\n"
    } else {
        "\tfile_server\n}\n"
    });
    s
}

/// `key: value` from the Staticfile (a flat YAML map).
fn staticfile_key(ctx: &Ctx, key: &str) -> Option<String> {
    let text = ctx.read("Staticfile")?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

impl Provider for Staticfile {
    fn name(&self) -> &'static str {
        "staticfile"
    }

    fn looks_for(&self) -> &'static str {
        "Staticfile, index.html, or a public/, dist/ or index/ directory"
    }

    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        if ctx.is_file("Staticfile") {
            return Ok(Some("Staticfile".into()));
        }
        for d in ["public", "index", "dist"] {
            if ctx.is_dir(d) {
                return Ok(Some(format!("{d}/")));
            }
        }
        Ok(ctx.is_file("index.html").then(|| "index.html".to_string()))
    }

    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let root = ctx
            .env
            .opt("STATICFILE_ROOT")
            .or_else(|| staticfile_key(ctx, "root"))
            .or_else(|| {
                ["public", "dist", "index"]
                    .into_iter()
                    .find(|d| ctx.is_dir(d))
                    .map(String::from)
            })
            .unwrap_or_else(|| ".".into());
        let root = root.trim_end_matches('/').to_string();
        let browse = staticfile_key(ctx, "directory").is_some_and(|v| v == "visible" || v == "on");
        let mut plan = BuildPlan::default();
        let served = if root == "." {
            "/app".to_string()
        } else {
            format!("/app/{root}")
        };
        plan.add_asset("Caddyfile", caddyfile(&served, false, browse));
        plan.set_start(
            StartPhase::cmd("caddy run --config /assets/Caddyfile --adapter caddyfile")
                .runtime(&["caddy"])
                .include(&[root.as_str()]),
        );
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Static sites and SPAs (Node providers) share the Caddyfile: both
    /// drop Caddy's mtime-based validators (the e2e test
    /// `static_site_change_of_the_same_size_is_not_served_stale` runs it).
    #[test]
    fn every_caddyfile_drops_mtime_validators() {
        for spa in [false, true] {
            let c = caddyfile("/app/dist", spa, false);
            let at = c.find(NO_STALE_VALIDATORS).expect(&c);
            assert!(at < c.find("file_server").unwrap(), "{c}");
        }
    }
}
