//! PHP (`composer.json` or `index.php`), Laravel included: Debian's PHP
//! (version from `require.php` matched as a real range), php-fpm behind
//! nginx configured by generated assets, composer on composer.json/lock
//! only, Node phases when there is a package.json. The nginx template is
//! rendered at start by `sh`/`sed` (no Node at runtime), and `PORT` is
//! read at start rather than baked.

use serde_json::Value;

use super::node;
use super::{Provider, VersionReq, existing};
use crate::plan::context::{Ctx, jstr, locate};
use crate::plan::model::{BuildPlan, Phase, StartPhase};
use crate::plan::versions::Kind;

pub struct Php;

/// Extensions in every Debian PHP (php-cli, php-common and their
/// dependencies), by `ext-*` name with `_` as `-`.
const BUILTIN_EXTS: &[&str] = &[
    "core",
    "ctype",
    "date",
    "filter",
    "gettext",
    "hash",
    "json",
    "libxml",
    "opcache",
    "zend-opcache",
    "openssl",
    "pcre",
    "pdo",
    "random",
    "readline",
    "reflection",
    "session",
    "sodium",
    "spl",
    "standard",
    "tokenizer",
    "fileinfo",
    "zlib",
    // Provided by php-common.
    "calendar",
    "exif",
    "ffi",
    "ftp",
    "iconv",
    "phar",
    "posix",
    "shmop",
    "sockets",
    "sysvmsg",
    "sysvsem",
    "sysvshm",
];

/// The Debian package of an extension (`pdo-mysql` is in `php-mysql`).
fn ext_package(ext: &str) -> String {
    let pkg = match ext {
        "pdo-mysql" | "mysqli" | "mysqlnd" => "mysql",
        "pdo-pgsql" => "pgsql",
        "pdo-sqlite" => "sqlite3",
        "dom" | "simplexml" | "xmlreader" | "xmlwriter" | "xsl" => "xml",
        e => e,
    };
    format!("php-{pkg}")
}

/// The nginx config template (`__PORT__` is replaced at start). Static
/// files are served with no validators and conditional requests are not
/// answered 304: every file in the image has the reproducible mtime, so
/// nginx's `mtime-size` ETag and `Last-Modified` would not change with a
/// same-size edit (and a 1970 `Last-Modified` invites years of heuristic
/// caching).
fn nginx_conf(root: &str, laravel: bool) -> String {
    let fallback = if laravel {
        "/index.php?$query_string"
    } else {
        "=404"
    };
    format!(
        "worker_processes 5;\ndaemon off;\nerror_log /dev/stderr;\nevents {{ worker_connections 1024; }}\n\
http {{\n  include /etc/nginx/mime.types;\n  access_log /dev/stdout;\n  etag off;\n  if_modified_since off;\n  add_header Last-Modified \"\";\n  server {{\n    listen __PORT__;\n    listen [::]:__PORT__;\n    root {root};\n    index index.php index.html;\n    charset utf-8;\n\
    location / {{ try_files $uri $uri/ {fallback}; }}\n    location ~ /\\.(?!well-known).* {{ deny all; }}\n\
    location ~ \\.php$ {{\n      fastcgi_pass 127.0.0.1:9000;\n      fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;\n      include /etc/nginx/fastcgi_params;\n    }}\n  }}\n}}\n"
    )
}

const FPM_CONF: &str = "[global]\nerror_log = /dev/stderr\ndaemonize = no\n\n[www]\nlisten = 127.0.0.1:9000\nuser = nobody\npm = dynamic\npm.max_children = 50\npm.start_servers = 18\npm.min_spare_servers = 1\npm.max_spare_servers = 50\nclear_env = no\ncatch_workers_output = yes\n";

const START_SH: &str = "#!/bin/sh\n# Renders the nginx config for $PORT and runs php-fpm next to nginx.\nset -e\nsed \"s/__PORT__/${PORT:-80}/g\" \"${NGINX_TEMPLATE:-/assets/nginx.conf}\" > /tmp/nginx.conf\n[ -d /app/storage ] && chmod -R a+w /app/storage || true\nfpm=$(ls /usr/sbin/php-fpm* | head -n 1)\n\"$fpm\" -y /assets/php-fpm.conf &\nexec nginx -c /tmp/nginx.conf\n";

impl Provider for Php {
    fn name(&self) -> &'static str {
        "php"
    }
    fn looks_for(&self) -> &'static str {
        "composer.json or index.php"
    }
    fn detect(&self, ctx: &Ctx) -> crate::Result<Option<String>> {
        Ok(["composer.json", "index.php"]
            .into_iter()
            .find(|f| ctx.is_file(f))
            .map(String::from))
    }
    fn plan(&self, ctx: &Ctx) -> crate::Result<BuildPlan> {
        let composer = ctx.json("composer.json")?.unwrap_or(Value::Null);
        let mut plan = BuildPlan::default();
        let req = jstr(&composer, "require.php").map(|r| {
            let src = ctx
                .read("composer.json")
                .map(|t| locate(&t, "composer.json", "\"php\""))
                .unwrap_or_default();
            VersionReq::new(r, src, Kind::Range)
        });
        plan.add_toolchain("php", req);
        // `ext-pdo_mysql` → Debian's `php-pdo-mysql` (a name php8.x-mysql
        // provides); extensions compiled into php-cli/php-common, or
        // pulled in by them (opcache, readline, sodium), need nothing.
        let mut exts: Vec<String> = composer
            .get("require")
            .and_then(Value::as_object)
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.strip_prefix("ext-"))
                    .map(|e| e.to_ascii_lowercase().replace('_', "-"))
                    .filter(|e| !BUILTIN_EXTS.contains(&e.as_str()))
                    .map(|e| ext_package(&e))
                    .collect()
            })
            .unwrap_or_default();
        exts.sort();
        exts.dedup();
        let ext_refs: Vec<&str> = exts.iter().map(String::as_str).collect();
        let mut setup = Phase::new("setup")
            .apt(&["php-cli", "php-fpm", "composer", "nginx", "unzip", "git"])
            .apt(&ext_refs);
        let has_node = ctx.is_file("package.json");
        let mut install = Phase::new("install");
        if ctx.is_file("composer.json") {
            install = install
                .cmd("composer install --no-dev --no-interaction --prefer-dist --no-scripts --ignore-platform-reqs")
                .cache(&["/root/.cache/composer"])
                .files(existing(ctx, &["composer.json", "composer.lock", "auth.json"]));
        }
        if has_node {
            let app = node::App::load(ctx)?;
            plan.add_toolchain("node", node::version(ctx, &app));
            let (nsetup, ninstall) = node::setup_and_install(ctx, &app);
            setup = setup.apt(&["nodejs", "npm"]);
            for c in nsetup.cmds.into_iter().flatten() {
                setup = setup.cmd(c);
            }
            plan.add_phase(ninstall.depends(&["setup"]));
            let renamed = plan.phases.as_mut().and_then(|p| p.remove("install"));
            if let Some(mut p) = renamed {
                p.name = Some("node:install".into());
                plan.add_phase(p);
            }
            let script = if app.script("prod").is_some() {
                Some("prod")
            } else if app.script("build").is_some() {
                Some("build")
            } else {
                None
            };
            if let Some(s) = script {
                plan.add_phase(
                    Phase::new("build")
                        .cmd(format!("{} run {s}", app.pm.cmd()))
                        .depends(&["install", "node:install"]),
                );
            }
        }
        plan.add_phase(setup);
        if install.cmds.is_some() {
            plan.add_phase(install);
        }
        let laravel = ctx.is_file("artisan");
        if laravel {
            plan.add_phase(
                plan.phase("build")
                    .cloned()
                    .unwrap_or_else(|| Phase::new("build"))
                    .cmd("composer dump-autoload --optimize --no-dev"),
            );
            plan.set_var("IS_LARAVEL", "yes");
        }
        let root = if laravel || ctx.is_dir("public") && !ctx.is_file("index.php") {
            "/app/public"
        } else {
            "/app"
        };
        let template = if ctx.is_file("nginx.conf") {
            "/app/nginx.conf"
        } else if ctx.is_file("nginx.template.conf") {
            "/app/nginx.template.conf"
        } else {
            "/assets/nginx.conf"
        };
        plan.add_asset("nginx.conf", nginx_conf(root, laravel));
        plan.add_asset("php-fpm.conf", FPM_CONF);
        plan.add_asset("start.sh", START_SH);
        // `sed` renders the nginx template in start.sh; the runtime base
        // (`minimal`) has coreutils and dash but no sed.
        let mut runtime: Vec<&str> = vec!["php-cli", "php-fpm", "nginx", "sed"];
        runtime.extend(ext_refs.iter());
        let cmd = if template == "/assets/nginx.conf" {
            "sh /assets/start.sh".to_string()
        } else {
            format!("NGINX_TEMPLATE={template} sh /assets/start.sh")
        };
        plan.set_start(StartPhase::cmd(cmd).runtime(&runtime));
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::context::Env;

    #[test]
    fn extensions_map_to_debian_packages() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("composer.json"),
            r#"{"require": {"ext-pdo_mysql": "*", "ext-mysqli": "*", "ext-DOM": "*",
                "ext-sodium": "*", "ext-zlib": "*", "ext-redis": "*"}}"#,
        )
        .unwrap();
        let env = Env::default();
        let plan = Php.plan(&Ctx::new(tmp.path(), &env)).unwrap();
        let apt = plan.phase("setup").unwrap().apt_pkgs.clone().unwrap();
        let exts: Vec<&str> = apt
            .iter()
            .map(String::as_str)
            .filter(|p| !["php-cli", "php-fpm", "composer", "nginx", "unzip", "git"].contains(p))
            .collect();
        assert_eq!(exts, ["php-mysql", "php-redis", "php-xml"]);
    }
}
