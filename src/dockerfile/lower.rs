//! Lowering: a parsed Dockerfile plus build arguments, target and platform
//! become a [`Graph`], with variables expanded per Docker's scoping rules:
//!
//! - ARGs before the first FROM are global: only FROM lines (image and
//!   `--platform`) see them, unless a stage redeclares them (`ARG NAME`).
//! - `--build-arg` overrides an ARG's default; it is ignored (with a
//!   warning) when no ARG declares the name.
//! - Inside a stage, an ARG is visible from its declaration to the end of
//!   the stage; an ENV of the same name always wins over it.
//! - ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR,
//!   ARG defaults and the flags of COPY/ADD/RUN are expanded; RUN, CMD,
//!   ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD are not (the shell does it
//!   at run time, with ARGs and ENVs in its environment).
//! - `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT` and the
//!   `BUILD*` equivalents are predefined in the global scope.

use std::collections::{BTreeMap, BTreeSet};

use super::ast::{self, Command, CopySource, Dockerfile, Instruction, Kind};
use super::error::{Source, SyntaxError};
use super::lexer::heredoc_markers;
use super::mounts::parse_mount;
use super::parse::parse_trigger;
use super::shell::{Lexer, parse_words};
use super::stages::{self, Globals, StageHeader};
use crate::Result;
use crate::context::ignore::{Matcher, clean};
use crate::context::{Context, NotFound};
use crate::graph::{
    AddOptions, Base, ConfigChange, Copy, CopyFrom, CopyItem, Graph, Healthcheck, ImageConfig,
    Mount, Network, Op, Origin, Run, Security, Stage, Step, deps,
};
use crate::platform::Platform;

/// What the user passes besides the Dockerfile (`--build-arg`, `--target`,
/// `--platform`).
#[derive(Debug, Clone, Default)]
pub struct BuildArgs {
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Target platform (`linux/amd64`); default: the build platform.
    pub platform: Option<String>,
    /// The machine's platform; default: this host.
    pub build_platform: Option<String>,
    /// Names of `--build-context NAME=DIR` contexts: `COPY --from=NAME`
    /// reads them as images (the caller supplies them under that name).
    pub named_contexts: BTreeSet<String>,
}

/// Supplies base image configs (Env, WorkingDir, User, OnBuild…) so that
/// expansion sees e.g. the base's `PATH`. The solver implements it with the
/// registry client; [`NoResolver`] knows nothing (bases start empty).
pub trait BaseResolver {
    fn image_config(&self, reference: &str, platform: &Platform) -> Result<Option<ImageConfig>>;
}

/// A resolver that knows no image.
pub struct NoResolver;

impl BaseResolver for NoResolver {
    fn image_config(&self, _: &str, _: &Platform) -> Result<Option<ImageConfig>> {
        Ok(None)
    }
}

/// A lowered Dockerfile.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub graph: Graph,
    /// Stages the target needs, dependencies first.
    pub order: Vec<usize>,
    /// Non-fatal findings (unused build args, deprecated syntax).
    pub warnings: Vec<String>,
}

type Res<T> = std::result::Result<T, SyntaxError>;

/// Per-stage lowering state.
struct StageState {
    config: ImageConfig,
    /// ARGs declared in this stage, in order, with their values.
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
    ssh_count: usize,
}

impl StageState {
    fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.config.env_get(name) {
            return Some(v.to_string());
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }
}

/// Lowers a parsed Dockerfile. `text` is its source (for error lines);
/// `ctx` the build context (required when a needed stage reads it).
pub fn lower(
    df: &Dockerfile,
    text: &str,
    ctx: Option<&Context>,
    args: &BuildArgs,
    resolver: &dyn BaseResolver,
) -> Result<Lowered> {
    let src = Source::new(df.file.clone(), text);
    let lexer = Lexer::new(df.directives.escape);
    let mut warnings: Vec<String> = df
        .warnings
        .iter()
        .map(|(l, m)| format!("{}:{}: {m}", df.file, l.line))
        .collect();
    let mut used_args: BTreeSet<String> = BTreeSet::new();
    let globals = Globals::read(df, &src, lexer, args, &mut used_args)?;
    let headers = stages::headers(df, &src, lexer, &globals)?;
    let target = stages::target(df, &headers, args)?;

    let mut lw = StageLowering {
        src: &src,
        lexer,
        file: &df.file,
        headers: &headers,
        index: 0,
        globals: &globals,
        build_args: &args.args,
        used_args: &mut used_args,
        named_contexts: &args.named_contexts,
    };
    let (stages, errors) = lw.lower_stages(&df.instructions, resolver);
    let mut graph = Graph { stages, target };
    let order = deps::build_order(&graph, target)?;
    if let Some(e) = order.iter().find_map(|i| errors[*i].clone()) {
        return Err(e.into());
    }
    digest_context_reads(&mut graph, &order, ctx, &src)?;
    for k in args.args.keys() {
        if !used_args.contains(k) {
            warnings.push(format!(
                "build argument {k} was not consumed by any ARG instruction"
            ));
        }
    }
    Ok(Lowered {
        graph,
        order,
        warnings,
    })
}

/// Records in each needed step that reads the build context (COPY from it,
/// RUN with a bind mount of it) the content digest of what it reads, so
/// that its cache key changes with those files.
fn digest_context_reads(
    graph: &mut Graph,
    order: &[usize],
    ctx: Option<&Context>,
    src: &Source,
) -> Result<()> {
    for &si in order {
        for step in &mut graph.stages[si].steps {
            let at = step.origin.as_ref().map(|o| o.line).unwrap_or(0);
            let fail = |e: anyhow::Error| -> anyhow::Error {
                let loc = super::error::Location {
                    line: at,
                    column: 1,
                };
                match e.downcast_ref::<NotFound>() {
                    Some(nf) if nf.ignored => src
                        .error_hint(loc, e.to_string(), format!("{} is excluded by .dockerignore; remove the pattern that matches it", nf.path))
                        .into(),
                    Some(_) => src
                        .error_hint(loc, e.to_string(), "paths are relative to the build context directory; check the name and the context")
                        .into(),
                    None => src.error(loc, e.to_string()).into(),
                }
            };
            let need_ctx = || -> Result<&Context> {
                ctx.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}:{at}: this step reads the build context, but none was given",
                        src.file
                    )
                })
            };
            match &mut step.op {
                Op::Copy(c) if c.from == CopyFrom::Context => {
                    let paths: Vec<String> = c
                        .items
                        .iter()
                        .filter_map(|i| match i {
                            CopyItem::Path(p) => Some(p.clone()),
                            _ => None,
                        })
                        .collect();
                    if paths.is_empty() {
                        continue;
                    }
                    let ex = Matcher::new(&c.exclude)?;
                    c.context_digest = Some(need_ctx()?.digest_sources(&paths, &ex).map_err(fail)?);
                }
                Op::Run(r) => {
                    let paths: Vec<String> = r
                        .mounts
                        .iter()
                        .filter_map(|m| match m {
                            Mount::Bind {
                                from: CopyFrom::Context,
                                source,
                                ..
                            } => Some(source.clone()),
                            _ => None,
                        })
                        .collect();
                    if !paths.is_empty() {
                        r.context_digest = Some(
                            need_ctx()?
                                .digest_sources(&paths, &Matcher::default())
                                .map_err(fail)?,
                        );
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// What lives across the stages and instructions of one Dockerfile while
/// it is lowered.
struct StageLowering<'a> {
    src: &'a Source,
    lexer: Lexer,
    file: &'a str,
    headers: &'a [StageHeader],
    /// The stage being lowered.
    index: usize,
    globals: &'a Globals,
    build_args: &'a BTreeMap<String, String>,
    used_args: &'a mut BTreeSet<String>,
    named_contexts: &'a BTreeSet<String>,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn is_git(s: &str) -> bool {
    s.starts_with("git@")
        || s.starts_with("git://")
        || (is_url(s)
            && s.split(['?', '#'])
                .next()
                .is_some_and(|p| p.ends_with(".git")))
}

fn valid_chmod(s: &str) -> bool {
    if !s.is_empty() && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c)) {
        return true;
    }
    s.split(',').all(|part| {
        let p = part.trim_start_matches(['u', 'g', 'o', 'a']);
        let mut cs = p.chars();
        matches!(cs.next(), Some('+' | '-' | '=')) && cs.all(|c| "rwxXst".contains(c))
    })
}

impl StageLowering<'_> {
    /// Lowers every stage; a stage that fails only matters if it is needed,
    /// so its error is returned beside the others' results.
    fn lower_stages(
        &mut self,
        instructions: &[Instruction],
        resolver: &dyn BaseResolver,
    ) -> (Vec<Stage>, Vec<Option<SyntaxError>>) {
        let headers = self.headers;
        let mut stages: Vec<Stage> = Vec::new();
        let mut errors: Vec<Option<SyntaxError>> = Vec::new();
        let mut finals: Vec<ImageConfig> = Vec::new();
        for (si, h) in headers.iter().enumerate() {
            let end = headers
                .get(si + 1)
                .map(|n| n.inst)
                .unwrap_or(instructions.len());
            self.index = si;
            match self.lower_stage(h, &instructions[h.inst + 1..end], &finals, resolver) {
                Ok((stage, config)) => {
                    stages.push(stage);
                    finals.push(config);
                    errors.push(None);
                }
                Err(e) => {
                    stages.push(Stage {
                        name: h.name.clone(),
                        base: Base::Scratch,
                        platform: h.platform.clone(),
                        steps: vec![],
                        origin: None,
                    });
                    finals.push(ImageConfig::default());
                    errors.push(Some(e));
                }
            }
        }
        (stages, errors)
    }

    fn lower_stage(
        &mut self,
        h: &StageHeader,
        insts: &[Instruction],
        finals: &[ImageConfig],
        resolver: &dyn BaseResolver,
    ) -> Res<(Stage, ImageConfig)> {
        let mut config = match &h.base {
            Base::Stage(i) => finals.get(*i).cloned().unwrap_or_default(),
            Base::Image { reference } => resolver
                .image_config(reference, &h.platform)
                .map_err(|e| {
                    let at = super::error::Location {
                        line: h.origin.line,
                        column: 1,
                    };
                    self.src.error(
                        at,
                        format!("reading the config of base image {reference}: {e:#}"),
                    )
                })?
                .unwrap_or_default(),
            _ => ImageConfig::default(),
        };
        let triggers = std::mem::take(&mut config.on_build);
        let mut st = StageState {
            config,
            args: Vec::new(),
            cmd_set: false,
            ssh_count: 0,
        };
        let mut steps = Vec::new();
        for t in &triggers {
            let inst = parse_trigger(&format!("ONBUILD trigger of {}", h.image), t)?;
            let first = steps.len();
            self.lower_instruction(&inst, &mut st, &mut steps)?;
            // Triggers run at the FROM line that inherits them.
            for step in &mut steps[first..] {
                step.origin = Some(Origin {
                    file: self.file.to_string(),
                    line: h.origin.line,
                    text: format!("ONBUILD {t}"),
                });
            }
        }
        for inst in insts {
            self.lower_instruction(inst, &mut st, &mut steps)?;
        }
        Ok((
            Stage {
                name: h.name.clone(),
                base: h.base.clone(),
                platform: h.platform.clone(),
                steps,
                origin: Some(h.origin.clone()),
            },
            st.config,
        ))
    }

    fn origin(&self, inst: &Instruction) -> Origin {
        let first = inst.args.lines().next().unwrap_or("");
        Origin {
            file: self.file.to_string(),
            line: inst.location.line,
            text: format!("{} {}", inst.keyword, first).trim_end().to_string(),
        }
    }

    fn word(&self, inst: &Instruction, st: &StageState, w: &str) -> Res<String> {
        self.lexer
            .process_word(w, &|k: &str| st.lookup(k))
            .map_err(|e| {
                self.src
                    .error(inst.args_location, format!("{}: {e}", inst.keyword))
            })
    }

    fn words(&self, inst: &Instruction, st: &StageState, w: &str) -> Res<Vec<String>> {
        self.lexer
            .process_words(w, &|k: &str| st.lookup(k))
            .map_err(|e| {
                self.src
                    .error(inst.args_location, format!("{}: {e}", inst.keyword))
            })
    }

    fn shell_cmd(&self, st: &StageState, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = st.config.shell_or_default();
                v.push(s.clone());
                v
            }
        }
    }

    fn workdir(st: &StageState) -> String {
        if st.config.working_dir.is_empty() {
            "/".into()
        } else {
            st.config.working_dir.clone()
        }
    }

    /// Resolves `--from` / `from=`: a stage name or index, or an image.
    fn resolve_from(&self, inst: &Instruction, value: &str) -> Res<CopyFrom> {
        let lower = value.to_ascii_lowercase();
        if let Some(i) = self
            .headers
            .iter()
            .position(|h| h.name.as_deref() == Some(lower.as_str()))
        {
            if i == self.index {
                return Err(self.src.error(
                    inst.args_location,
                    format!(
                        "{}: --from={value} refers to the stage being built",
                        inst.keyword
                    ),
                ));
            }
            return Ok(CopyFrom::Stage(i));
        }
        if let Ok(i) = value.parse::<usize>() {
            if i < self.index {
                return Ok(CopyFrom::Stage(i));
            }
            return Err(self.src.error_hint(
                inst.args_location,
                format!(
                    "{}: --from={i}: stage index must refer to an earlier stage",
                    inst.keyword
                ),
                format!(
                    "stages before this one are numbered 0 to {}",
                    self.index.saturating_sub(1)
                ),
            ));
        }
        if value.contains(['/', ':', '@', '.']) || self.named_contexts.contains(value) {
            return Ok(CopyFrom::Image(value.to_string()));
        }
        let names: Vec<&str> = self
            .headers
            .iter()
            .filter_map(|h| h.name.as_deref())
            .collect();
        let close = names
            .iter()
            .map(|n| (strsim::levenshtein(n, &lower), *n))
            .min()
            .filter(|(d, _)| *d <= 2);
        let mut hint = match close {
            Some((_, n)) => format!("did you mean --from={n}? "),
            None => String::new(),
        };
        hint.push_str(&format!(
            "named stages: {}; to copy from an image, write a full reference such as {value}:latest",
            if names.is_empty() { "(none)".to_string() } else { names.join(", ") }
        ));
        Err(self.src.error_hint(
            inst.args_location,
            format!("{}: --from={value}: no stage named {value:?}", inst.keyword),
            hint,
        ))
    }

    /// Lowers one instruction: one line per kind, as BuildKit's dispatch.
    fn lower_instruction(
        &mut self,
        inst: &Instruction,
        st: &mut StageState,
        steps: &mut Vec<Step>,
    ) -> Res<()> {
        let op = match &inst.kind {
            Kind::From(_) => unreachable!("stages are split at FROM"),
            Kind::Arg(list) => return self.arg(inst, st, list),
            Kind::Env(pairs) => config(st, ConfigChange::Env(self.pairs(inst, st, pairs, "ENV")?)),
            Kind::Label(pairs) => config(
                st,
                ConfigChange::Labels(self.pairs(inst, st, pairs, "LABEL")?),
            ),
            Kind::Workdir(w) => config(st, ConfigChange::WorkingDir(self.workdir_of(inst, st, w)?)),
            Kind::User(u) => config(st, ConfigChange::User(self.user(inst, st, u)?)),
            Kind::Expose(ports) => config(
                st,
                ConfigChange::ExposedPorts(self.expose(inst, st, ports)?),
            ),
            Kind::Cmd(c) => self.cmd(st, c),
            Kind::Entrypoint(c) => self.entrypoint(st, c),
            Kind::Shell(s) => config(st, ConfigChange::Shell(s.clone())),
            Kind::Volume(vs) => config(st, ConfigChange::Volumes(self.volumes(inst, st, vs)?)),
            Kind::StopSignal(s) => {
                config(st, ConfigChange::StopSignal(self.stop_signal(inst, st, s)?))
            }
            Kind::Healthcheck(hc) => config(st, ConfigChange::Healthcheck(healthcheck(hc))),
            Kind::Onbuild(trigger, _) => config(st, ConfigChange::OnBuild(trigger.clone())),
            Kind::Maintainer(m) => config(st, ConfigChange::Author(m.clone())),
            Kind::Run(r) => Op::Run(self.lower_run(inst, st, r)?),
            Kind::Copy(c) => Op::Copy(self.lower_copy(inst, st, c)?),
        };
        steps.push(Step {
            op,
            origin: Some(self.origin(inst)),
        });
        Ok(())
    }

    /// `ARG`: declares names in the stage scope; a `--build-arg` wins over
    /// the default, and a name without either takes the global value.
    fn arg(
        &mut self,
        inst: &Instruction,
        st: &mut StageState,
        list: &[(String, Option<String>)],
    ) -> Res<()> {
        for (name, default) in list {
            self.used_args.insert(name.clone());
            let value = if let Some(v) = self.build_args.get(name) {
                Some(v.clone())
            } else if let Some(d) = default {
                Some(self.word(inst, st, d)?)
            } else {
                self.globals.lookup(name)
            };
            st.args.push((name.clone(), value));
        }
        Ok(())
    }

    /// `ENV`/`LABEL` pairs, expanded; all values see the environment from
    /// before this line.
    fn pairs(
        &self,
        inst: &Instruction,
        st: &StageState,
        pairs: &[(String, String)],
        what: &str,
    ) -> Res<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            let k = self.word(inst, st, k)?;
            if k.is_empty() {
                return Err(self
                    .src
                    .error(inst.args_location, format!("{what} names can not be blank")));
            }
            out.push((k, self.word(inst, st, v)?));
        }
        Ok(out)
    }

    /// `WORKDIR`: the absolute directory, relative ones from the current.
    fn workdir_of(&self, inst: &Instruction, st: &StageState, w: &str) -> Res<String> {
        let w = self.word(inst, st, w)?;
        Ok(if w.starts_with('/') {
            clean(&w)
        } else {
            clean(&format!("{}/{w}", Self::workdir(st)))
        })
    }

    fn user(&self, inst: &Instruction, st: &StageState, u: &str) -> Res<String> {
        let u = self.word(inst, st, u)?;
        if u.is_empty() {
            return Err(self
                .src
                .error(inst.args_location, "USER requires a user name or uid"));
        }
        Ok(u)
    }

    fn expose(&self, inst: &Instruction, st: &StageState, ports: &[String]) -> Res<Vec<String>> {
        let mut out = Vec::new();
        for p in ports {
            for w in self.words(inst, st, p)? {
                out.extend(expose_ports(&w).map_err(|e| self.src.error(inst.args_location, e))?);
            }
        }
        Ok(out)
    }

    fn cmd(&self, st: &mut StageState, c: &Command) -> Op {
        st.cmd_set = true;
        let change = ConfigChange::Cmd(Some(self.shell_cmd(st, c)));
        config(st, change)
    }

    /// `ENTRYPOINT` resets an inherited CMD, not one set in this stage.
    fn entrypoint(&self, st: &mut StageState, c: &Command) -> Op {
        let change = ConfigChange::Entrypoint {
            args: self.shell_cmd(st, c),
            reset_cmd: !st.cmd_set,
        };
        config(st, change)
    }

    fn volumes(&self, inst: &Instruction, st: &StageState, vs: &[String]) -> Res<Vec<String>> {
        let mut out = Vec::new();
        for v in vs {
            let v = self.word(inst, st, v)?;
            if v.trim().is_empty() {
                return Err(self.src.error(
                    inst.args_location,
                    "VOLUME specified can not be an empty string",
                ));
            }
            out.push(v);
        }
        Ok(out)
    }

    fn stop_signal(&self, inst: &Instruction, st: &StageState, s: &str) -> Res<String> {
        let s = self.word(inst, st, s)?;
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(self.src.error_hint(
                inst.args_location,
                format!("invalid signal {s:?}"),
                "write a signal name (SIGTERM) or number (15)",
            ));
        }
        Ok(s)
    }

    fn lower_run(&mut self, inst: &Instruction, st: &mut StageState, r: &ast::Run) -> Res<Run> {
        let at = inst.args_location;
        let mut mounts = Vec::new();
        let workdir = Self::workdir(st);
        for m in &r.mounts {
            let expand = |v: &str| self.lexer.process_word(v, &|k: &str| st.lookup(k));
            let spec = parse_mount(m, &workdir, st.ssh_count, &expand).map_err(|e| {
                self.src.error_hint(
                    at,
                    format!("RUN --mount={m}: {e}"),
                    "see docs/dockerfile.md for mount options",
                )
            })?;
            let mut mount = spec.mount;
            if matches!(mount, Mount::Ssh { .. }) {
                st.ssh_count += 1;
            }
            if let Some(f) = &spec.from {
                let resolved = self.resolve_from(inst, f)?;
                match &mut mount {
                    Mount::Bind { from, .. } => *from = resolved,
                    Mount::Cache { from, .. } => *from = Some(resolved),
                    _ => {
                        return Err(self.src.error(
                            at,
                            format!("RUN --mount={m}: from= only applies to bind and cache mounts"),
                        ));
                    }
                }
            }
            if let Mount::Bind {
                from: CopyFrom::Context,
                source,
                ..
            } = &mut mount
            {
                let c = clean(source.trim_start_matches('/'));
                if c == ".." || c.starts_with("../") {
                    return Err(self.src.error(
                        at,
                        format!("RUN --mount={m}: source {source} is outside the build context"),
                    ));
                }
                *source = c;
            }
            mounts.push(mount);
        }
        let network = match r
            .network
            .as_deref()
            .map(|n| self.word(inst, st, n))
            .transpose()?
            .as_deref()
        {
            None | Some("default") => Network::Default,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(o) => {
                return Err(self.src.error_hint(
                    at,
                    format!("unsupported network mode {o:?}"),
                    "use --network=default, none or host",
                ));
            }
        };
        let security = match r.security.as_deref() {
            None | Some("sandbox") => Security::Sandbox,
            Some("insecure") => Security::Insecure,
            Some(o) => {
                return Err(self.src.error_hint(
                    at,
                    format!("unsupported security mode {o:?}"),
                    "use --security=sandbox or insecure",
                ));
            }
        };
        let command = match (&r.command, r.heredocs.first()) {
            (Command::Shell(s), Some(first)) => {
                let lone = parse_words(s, self.lexer.escape).len() == 1
                    && heredoc_markers(s, self.lexer.escape)
                        .map(|m| m.len() == 1)
                        .unwrap_or(false);
                if lone {
                    let body = first.body();
                    // BuildKit looks for `#!` before `<<-` tab stripping.
                    if first.content.starts_with("#!") {
                        let target = format!("/dev/pipes/{}", first.name);
                        mounts.push(Mount::Inline {
                            target: target.clone(),
                            content: body,
                            mode: 0o755,
                        });
                        vec![target]
                    } else {
                        self.shell_cmd(st, &Command::Shell(body))
                    }
                } else {
                    // The shell reads the heredocs itself.
                    let mut full = s.clone();
                    for h in &r.heredocs {
                        full.push('\n');
                        full.push_str(&h.content);
                        full.push_str(&h.name);
                    }
                    self.shell_cmd(st, &Command::Shell(full))
                }
            }
            (c, _) => self.shell_cmd(st, c),
        };
        let build_args = st
            .args
            .iter()
            .filter(|(k, v)| v.is_some() && st.config.env_get(k).is_none())
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .fold(Vec::<(String, String)>::new(), |mut acc, (k, v)| {
                // A redeclared ARG keeps one entry, with its latest value.
                acc.retain(|(ek, _)| *ek != k);
                acc.push((k, v));
                acc
            });
        Ok(Run {
            command,
            build_args,
            mounts,
            network,
            security,
            context_digest: None,
        })
    }

    fn lower_copy(&mut self, inst: &Instruction, st: &mut StageState, c: &ast::Copy) -> Res<Copy> {
        let at = inst.args_location;
        let kw = &inst.keyword;
        let from = match &c.from {
            None => CopyFrom::Context,
            Some(f) => {
                let f = self.word(inst, st, f)?;
                self.resolve_from(inst, &f)?
            }
        };
        let mut items = Vec::new();
        let checksum = c
            .checksum
            .as_deref()
            .map(|v| self.word(inst, st, v))
            .transpose()?;
        if let Some(sum) = &checksum {
            let ok = match sum.split_once(':') {
                Some(("sha256", h)) => h.len() == 64,
                Some(("sha384", h)) => h.len() == 96,
                Some(("sha512", h)) => h.len() == 128,
                _ => false,
            } && sum
                .split_once(':')
                .is_some_and(|(_, h)| h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(self.src.error_hint(
                    at,
                    format!("invalid --checksum={sum}"),
                    "write --checksum=sha256:<64 hex digits> (sha384 and sha512 work too)",
                ));
            }
        }
        for s in &c.sources {
            match s {
                CopySource::Heredoc(h) => {
                    let body = h.body();
                    let content = if h.expand {
                        let raw = Lexer {
                            escape: self.lexer.escape,
                        };
                        raw.process_heredoc(&body, &|k: &str| st.lookup(k))
                            .map_err(|e| self.src.error(at, format!("{kw} <<{}: {e}", h.name)))?
                    } else {
                        body
                    };
                    items.push(CopyItem::Inline {
                        name: h.name.clone(),
                        content,
                    });
                }
                CopySource::Path(p) => {
                    let p = self.word(inst, st, p)?;
                    if c.add && (is_url(&p) || is_git(&p)) {
                        items.push(CopyItem::Url {
                            url: p,
                            checksum: checksum.clone(),
                            digest: None,
                        });
                        continue;
                    }
                    if is_url(&p) {
                        return Err(self.src.error_hint(
                            at,
                            format!("COPY cannot fetch URLs: {p}"),
                            "use ADD for URLs",
                        ));
                    }
                    // Paths are stored cleaned so `./a` and `a` share a key:
                    // relative to the context, absolute in a stage or image.
                    let cl = if from == CopyFrom::Context {
                        let cl = clean(p.trim_start_matches('/'));
                        if cl == ".." || cl.starts_with("../") {
                            return Err(self.src.error_hint(
                                at,
                                format!("{kw} {p}: path is outside the build context"),
                                "COPY and ADD only read files inside the context directory; move the file into it or widen the context",
                            ));
                        }
                        cl
                    } else {
                        clean(&format!("/{p}"))
                    };
                    items.push(CopyItem::Path(cl));
                }
            }
        }
        if checksum.is_some() && !items.iter().all(|i| matches!(i, CopyItem::Url { .. })) {
            return Err(self.src.error(
                at,
                "ADD --checksum can only be used with HTTP(S) and Git sources",
            ));
        }
        let dest_raw = self.word(inst, st, &c.dest)?;
        let is_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let mut dest = if dest_raw.starts_with('/') {
            clean(&dest_raw)
        } else {
            clean(&format!("{}/{dest_raw}", Self::workdir(st)))
        };
        if is_dir && !dest.ends_with('/') {
            dest.push('/');
        }
        if items.len() > 1 && !dest.ends_with('/') {
            return Err(self.src.error_hint(
                at,
                format!("when using {kw} with more than one source file, the destination must be a directory and end with a /"),
                format!("write {dest_raw}/"),
            ));
        }
        let chown = c
            .chown
            .as_deref()
            .map(|v| self.word(inst, st, v))
            .transpose()?;
        let chmod = c
            .chmod
            .as_deref()
            .map(|v| self.word(inst, st, v))
            .transpose()?;
        if let Some(m) = &chmod
            && !valid_chmod(m)
        {
            return Err(self.src.error_hint(
                at,
                format!("invalid --chmod={m}"),
                "use an octal mode like 0755 or a symbolic one like u+x,go-w",
            ));
        }
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.word(inst, st, e)?);
        }
        Matcher::new(&exclude).map_err(|e| self.src.error(at, format!("{kw} --exclude: {e:#}")))?;
        Ok(Copy {
            from,
            items,
            dest,
            chown,
            chmod,
            link: c.link,
            exclude,
            parents: c.parents,
            add: c.add.then(|| AddOptions {
                unpack: c.unpack.unwrap_or(true),
                keep_git_dir: c.keep_git_dir,
            }),
            context_digest: None,
        })
    }
}

/// `80`, `80/tcp`, `53/UDP`, `8000-8002` → `["80/tcp"]`, …
fn expose_ports(w: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid proto {proto:?} in EXPOSE {w} (tcp, udp or sctp)"
        ));
    }
    let num = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid port {s:?} in EXPOSE {w}: ports are numbers 0-65535"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if hi < lo {
        return Err(format!("invalid port range {ports:?} in EXPOSE {w}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}
/// A config instruction: applied to the stage's config (later instructions
/// see it) and recorded as a step.
fn config(st: &mut StageState, change: ConfigChange) -> Op {
    st.config.apply(&change);
    Op::Config(change)
}

/// `HEALTHCHECK` as the image config stores it.
fn healthcheck(hc: &ast::Healthcheck) -> Healthcheck {
    match hc {
        ast::Healthcheck::None => Healthcheck {
            test: vec!["NONE".into()],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        },
        ast::Healthcheck::Check {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match test {
                Command::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            Healthcheck {
                test,
                interval: *interval,
                timeout: *timeout,
                start_period: *start_period,
                start_interval: *start_interval,
                retries: *retries,
            }
        }
    }
}
