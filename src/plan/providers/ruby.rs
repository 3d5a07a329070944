//! Ruby (`Gemfile`), Rails included: Debian's Ruby when it satisfies the
//! requested version (Nixpacks compiled every Ruby from source through an
//! unpinned rbenv), bundle install on Gemfile/Gemfile.lock, gem checks on
//! parsed gem names, Rails asset precompilation and server start, Node
//! phases embedded as `node:setup`/`node:install` when needed.

use std::collections::BTreeSet;

use super::{Provider, VersionReq, env_version, existing, first_file, node, version_file};
use crate::plan::context::Ctx;
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Ruby;

/// Gem names from Gemfile.lock's specs (or Gemfile `gem "x"` lines).
fn gems(ctx: &Ctx) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(lock) = ctx.read("Gemfile.lock") {
        for l in lock.lines() {
            // "    name (1.2.3)" — exactly four spaces in the specs section.
            if l.starts_with("    ")
                && !l.starts_with("     ")
                && let Some(n) = l.split_whitespace().next()
            {
                out.insert(n.to_string());
            }
        }
    }
    if let Some(g) = ctx.read("Gemfile") {
        for l in g.lines() {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("gem ") {
                let n = rest.trim().trim_start_matches(['"', '\'']);
                let n: String = n.chars().take_while(|c| *c != '"' && *c != '\'').collect();
                out.insert(n);
            }
        }
    }
    out
}

fn version(ctx: &Ctx) -> Option<VersionReq> {
    if let Some(v) = env_version(ctx, "RUBY_VERSION") {
        return Some(v);
    }
    if let Some(mut v) = version_file(ctx, ".ruby-version") {
        v.text = v.text.trim_start_matches("ruby-").to_string();
        return Some(v);
    }
    if let Some(g) = ctx.read("Gemfile") {
        for (i, l) in g.lines().enumerate() {
            if let Some(rest) = l.trim().strip_prefix("ruby ") {
                let v = rest.trim().trim_matches(['"', '\'']);
                let kind = if v.starts_with(['~', '>', '<', '=']) {
                    Kind::Range
                } else {
                    Kind::Pin
                };
                return Some(VersionReq::new(v, format!("Gemfile:{}", i + 1), kind));
            }
        }
    }
    let lock = ctx.read("Gemfile.lock")?;
    let mut lines = lock.lines().enumerate();
    while let Some((_, l)) = lines.next() {
        if l.trim() == "RUBY VERSION" {
            let (i, v) = lines.next()?;
            let v = v
                .trim()
                .trim_start_matches("ruby ")
                .split('p')
                .next()?
                .to_string();
            return Some(VersionReq::new(
                v,
                format!("Gemfile.lock:{}", i + 1),
                Kind::Pin,
            ));
        }
    }
    None
}

impl Provider for Ruby {
    fn name(&self) -> &'static str {
        "ruby"
    }
    fn looks_for(&self) -> &'static str {
        "Gemfile"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(first_file(ctx, &["Gemfile"]))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let gems = gems(ctx);
        let has = |g: &str| gems.contains(g);
        let mut plan = BuildPlan::default();
        plan.add_toolchain("ruby", version(ctx));
        let mut setup = Phase::new("setup").apt(&[
            "ruby",
            "ruby-dev",
            "bundler",
            "build-essential",
            "libyaml-dev",
            "procps",
        ]);
        let mut runtime: Vec<&str> = vec!["ruby", "bundler"];
        if has("pg") {
            setup = setup.apt(&["libpq-dev"]);
            runtime.push("libpq5");
        }
        if has("mysql2") {
            setup = setup.apt(&["default-libmysqlclient-dev"]);
            runtime.push("libmariadb3");
        }
        if has("rmagick") || has("mini_magick") {
            setup = setup.apt(&["libmagickwand-dev", "imagemagick"]);
            runtime.push("imagemagick");
        }
        if has("ruby-vips") || has("image_processing") {
            setup = setup.apt(&["libvips-dev"]);
            runtime.push("libvips42t64");
        }
        if has("charlock_holmes") {
            setup = setup.apt(&["libicu-dev"]);
        }
        if has("sqlite3") {
            setup = setup.apt(&["libsqlite3-dev"]);
            runtime.push("libsqlite3-0");
        }
        let rails = ctx.contains("config/application.rb", "Rails::Application");
        let mut build_deps = vec!["install"];
        if ctx.is_file("package.json") || has("execjs") {
            let app = node::App::load(ctx)?;
            plan.add_toolchain("node", node::version(ctx, &app));
            let (mut s, mut i) = node::setup_and_install(ctx, &app);
            s.name = Some("node:setup".into());
            s.depends_on = None;
            i.name = Some("node:install".into());
            i.depends_on = Some(vec!["node:setup".into()]);
            plan.add_phase(s);
            plan.add_phase(i);
            build_deps.push("node:install");
            runtime.push("nodejs");
        }
        plan.add_phase(setup);
        let mut install = Phase::new("install")
            .cmd("bundle install")
            .cache(&["/root/.bundle/cache"])
            .files(existing(ctx, &["Gemfile", "Gemfile.lock", ".ruby-version"]));
        if has("bootsnap") {
            install = install.cmd("bundle exec bootsnap precompile --gemfile");
        }
        plan.add_phase(install);
        let mut build = Phase::new("build").depends(&build_deps);
        if rails && (has("sprockets") || has("propshaft") || has("sprockets-rails")) {
            build = build.cmd("bundle exec rake assets:precompile");
        }
        if rails && has("bootsnap") {
            build = build.cmd("bundle exec bootsnap precompile app/ lib/");
        }
        plan.add_phase(build);
        let cmd = if rails && ctx.is_file("rails") {
            Some("bundle exec rails server -b 0.0.0.0 -p ${PORT:-3000}")
        } else if rails {
            Some("bundle exec bin/rails server -b 0.0.0.0 -p ${PORT:-3000} -e $RAILS_ENV")
        } else if ctx.is_file("config/environment.rb") && ctx.is_dir("script") {
            Some("bundle exec ruby script/server -p ${PORT:-3000}")
        } else if ctx.is_file("config.ru") {
            Some("bundle exec rackup config.ru -o 0.0.0.0 -p ${PORT:-3000}")
        } else if ctx.is_file("Rakefile") {
            Some("bundle exec rake")
        } else {
            None
        };
        plan.set_var("BUNDLE_GEMFILE", "/app/Gemfile");
        plan.set_var("BUNDLE_WITHOUT", "development:test");
        plan.set_var("MALLOC_ARENA_MAX", "2");
        if rails {
            plan.set_var("RAILS_ENV", "production");
            plan.set_var("RAILS_LOG_TO_STDOUT", "enabled");
            plan.set_var("RAILS_SERVE_STATIC_FILES", "1");
        }
        plan.set_start(
            StartPhase {
                cmd: cmd.map(String::from),
                ..StartPhase::default()
            }
            .runtime(&runtime)
            .include(&[".", "/var/lib/gems", "/usr/local/bin"]),
        );
        Ok(plan)
    }
}
