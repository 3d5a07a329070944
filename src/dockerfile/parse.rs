//! Turns lexed instructions into [`ast`](super::ast) nodes: flags
//! (`--name=value`), exec vs shell form, key=value lists, and per-instruction
//! argument rules, with errors that point at the offending line.

use std::collections::BTreeMap;

use super::ast::*;
use super::error::{Location, Source, SyntaxError};
use super::lexer::{self, RawInstruction, heredoc_markers};
use super::shell::parse_words;

/// Every instruction the Dockerfile reference defines.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile's text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, SyntaxError> {
    let src = Source::new(file, text);
    let lexed = lexer::lex(&src, text)?;
    let escape = lexed.directives.escape;
    let mut instructions = Vec::with_capacity(lexed.instructions.len());
    for raw in &lexed.instructions {
        instructions.push(parse_instruction(&src, raw, escape, false)?);
    }
    Ok(Dockerfile {
        file: file.to_string(),
        directives: lexed.directives,
        instructions,
        warnings: lexed.warnings,
    })
}

/// Parses one `ONBUILD` trigger (from a base image's config) as an
/// instruction; `origin` names it in errors.
pub fn parse_trigger(origin: &str, trigger: &str) -> Result<Instruction, SyntaxError> {
    let df = parse(origin, trigger)?;
    let mut it = df.instructions.into_iter();
    match (it.next(), it.next()) {
        (Some(i), None) => Ok(i),
        _ => Err(Source::new(origin, trigger).error(
            Location { line: 1, column: 1 },
            "an ONBUILD trigger must be exactly one instruction",
        )),
    }
}

/// Flag values by name; a list for repeatable flags.
struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Str,
    Bool,
    List,
}

impl Flags {
    fn str(&mut self, name: &str) -> Option<String> {
        self.values.remove(name).and_then(|mut v| v.pop())
    }
    fn list(&mut self, name: &str) -> Vec<String> {
        self.values.remove(name).unwrap_or_default()
    }
    fn bool(&mut self, name: &str) -> bool {
        self.str(name).is_some_and(|v| v == "true")
    }
    fn opt_bool(&mut self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v == "true")
    }
}

/// Splits leading `--flags` off the arguments (BuildKit's
/// `extractBuilderFlags`: quotes removed, `--` ends the flags).
fn extract_flags(line: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut pos = 0;
    loop {
        while pos < chars.len() && chars[pos].is_whitespace() {
            pos += 1;
        }
        if pos + 1 >= chars.len() || chars[pos] != '-' || chars[pos + 1] != '-' {
            return (chars[pos.min(chars.len())..].iter().collect(), words);
        }
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        while pos < chars.len() {
            let ch = chars[pos];
            match quote {
                None if ch.is_whitespace() => break,
                None if ch == '\'' || ch == '"' => {
                    quote = Some(ch);
                    blank_ok = true;
                }
                Some(q) if ch == q => quote = None,
                _ if ch == '\\' => {
                    if pos + 1 < chars.len() {
                        pos += 1;
                        word.push(chars[pos]);
                    }
                }
                _ => word.push(ch),
            }
            pos += 1;
        }
        if word == "--" {
            return (chars[pos.min(chars.len())..].iter().collect(), words);
        }
        if blank_ok || !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
}

fn parse_flags(
    src: &Source,
    raw: &RawInstruction,
    words: Vec<String>,
    allowed: &[(&str, FlagKind)],
) -> Result<Flags, SyntaxError> {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let at = raw.args_location;
    for w in words {
        let Some(body) = w.strip_prefix("--") else {
            return Err(src.error(
                at,
                format!("arguments to {} must start with --: {w:?}", raw.keyword),
            ));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
            let hint = if known.is_empty() {
                format!("{} takes no flags", raw.keyword.to_uppercase())
            } else {
                format!(
                    "{} accepts {}",
                    raw.keyword.to_uppercase(),
                    known.join(", ")
                )
            };
            return Err(src.error_hint(at, format!("unknown flag: --{name}"), hint));
        };
        let value = match (kind, value) {
            (FlagKind::Bool, None) => "true".to_string(),
            (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => "true".into(),
                "false" | "0" => "false".into(),
                _ => {
                    return Err(src.error(
                        at,
                        format!("expecting boolean value for flag --{name}, not: {v}"),
                    ));
                }
            },
            (_, None) => {
                return Err(src.error_hint(
                    at,
                    format!("missing a value on flag --{name}"),
                    format!("write --{name}=VALUE"),
                ));
            }
            (_, Some(v)) => v,
        };
        let slot = values.entry(name.clone()).or_default();
        if kind == FlagKind::Str && !slot.is_empty() {
            return Err(src.error(at, format!("duplicate flag specified: --{name}")));
        }
        slot.push(value);
    }
    Ok(Flags { values })
}

/// `[...]` JSON arrays of strings are exec form; anything else is shell form.
fn maybe_json(args: &str) -> Command {
    if args.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(args)
    {
        return Command::Exec(v);
    }
    Command::Shell(args.to_string())
}

fn whitespace_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Parses a Go duration (`1m30s`, `500ms`, `0`) to nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total.round() as u64)
}

fn key_values(
    src: &Source,
    raw: &RawInstruction,
    escape: char,
    what: &str,
) -> Result<Vec<(String, String)>, SyntaxError> {
    let at = raw.args_location;
    let words = parse_words(&raw.args, escape);
    if words.is_empty() {
        return Err(src.error_hint(
            at,
            format!("{what} requires at least one argument"),
            format!("write {what} name=value"),
        ));
    }
    if !words[0].contains('=') {
        // Legacy form: `ENV name value with spaces`.
        let mut it = raw.args.splitn(2, char::is_whitespace);
        let name = it.next().unwrap_or_default().to_string();
        let value = it.next().map(str::trim_start).unwrap_or_default();
        if value.is_empty() {
            return Err(src.error_hint(
                at,
                format!("{what} must have two arguments"),
                format!("write {what} {name}=value"),
            ));
        }
        return Ok(vec![(name, value.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(src.error_hint(
                at,
                format!("syntax error - can't find = in {w:?}. Must be of the form: name=value"),
                "quote values that contain spaces: name=\"a b\"",
            ));
        };
        if k.is_empty() {
            return Err(src.error(at, format!("{what} names can not be blank")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn parse_instruction(
    src: &Source,
    raw: &RawInstruction,
    escape: char,
    in_onbuild: bool,
) -> Result<Instruction, SyntaxError> {
    let keyword = raw.keyword.to_ascii_uppercase();
    let at = raw.args_location;
    if !INSTRUCTIONS.contains(&keyword.as_str()) {
        let best = INSTRUCTIONS
            .iter()
            .map(|k| (strsim::levenshtein(k, &keyword), *k))
            .min()
            .filter(|(d, _)| *d <= 3);
        let hint = match best {
            Some((_, k)) => format!(
                "did you mean {k}? instructions are: {}",
                INSTRUCTIONS.join(", ")
            ),
            None => format!("instructions are: {}", INSTRUCTIONS.join(", ")),
        };
        return Err(src.error_hint(
            raw.location,
            format!("unknown instruction: {}", raw.keyword),
            hint,
        ));
    }
    let (rest, flag_words) = extract_flags(&raw.args);
    let rest = rest.trim().to_string();
    use FlagKind::*;
    let allowed: &[(&str, FlagKind)] = match keyword.as_str() {
        "FROM" => &[("platform", Str)],
        "RUN" => &[("mount", List), ("network", Str), ("security", Str)],
        "COPY" => &[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("exclude", List),
            ("parents", Bool),
        ],
        "ADD" => &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("exclude", List),
            ("checksum", Str),
            ("keep-git-dir", Bool),
            ("unpack", Bool),
        ],
        "HEALTHCHECK" => &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
        _ => &[],
    };
    // Instructions without flags keep `--` text as arguments only when no
    // flag syntax is present, as BuildKit does (it errors on any flag).
    let mut flags = parse_flags(src, raw, flag_words, allowed)?;
    let need_args = |what: &str| -> Result<(), SyntaxError> {
        if rest.is_empty() {
            Err(src.error_hint(
                raw.location,
                format!("{keyword} requires at least one argument"),
                what.to_string(),
            ))
        } else {
            Ok(())
        }
    };
    let kind = match keyword.as_str() {
        "FROM" => {
            let words = whitespace_words(&rest);
            let (image, name) = match words.as_slice() {
                [image] => (image.clone(), None),
                [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    (image.clone(), Some(name.clone()))
                }
                _ => {
                    return Err(src.error_hint(
                        at,
                        "FROM requires either one or three arguments",
                        "write FROM IMAGE or FROM IMAGE AS NAME",
                    ));
                }
            };
            Kind::From(From {
                image,
                name,
                platform: flags.str("platform"),
            })
        }
        "RUN" => {
            need_args("write RUN COMMAND or RUN [\"executable\", \"arg\"]")?;
            let command = if raw.heredocs.is_empty() {
                maybe_json(&rest)
            } else {
                Command::Shell(rest.clone())
            };
            Kind::Run(Run {
                command,
                mounts: flags.list("mount"),
                network: flags.str("network"),
                security: flags.str("security"),
                heredocs: raw.heredocs.clone(),
            })
        }
        "COPY" | "ADD" => {
            let words = match maybe_json(&rest) {
                Command::Exec(v) => v,
                Command::Shell(s) => whitespace_words(&s),
            };
            let mut heredocs = raw.heredocs.iter();
            let mut sources = Vec::new();
            for w in &words {
                let is_doc = !raw.heredocs.is_empty()
                    && heredoc_markers(w, escape)
                        .map(|m| !m.is_empty())
                        .unwrap_or(false);
                let doc = if is_doc { heredocs.next() } else { None };
                match doc {
                    Some(h) => sources.push(CopySource::Heredoc(h.clone())),
                    None => sources.push(CopySource::Path(w.clone())),
                }
            }
            let dest = match sources.pop() {
                Some(CopySource::Path(d)) if !sources.is_empty() => d,
                _ => {
                    return Err(src.error_hint(
                        at,
                        format!("{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"),
                        format!("write {keyword} SOURCE... DEST"),
                    ));
                }
            };
            let add = keyword == "ADD";
            Kind::Copy(Copy {
                add,
                sources,
                dest,
                from: flags.str("from"),
                chown: flags.str("chown"),
                chmod: flags.str("chmod"),
                link: flags.bool("link"),
                exclude: flags.list("exclude"),
                parents: flags.bool("parents"),
                checksum: flags.str("checksum"),
                keep_git_dir: flags.bool("keep-git-dir"),
                unpack: flags.opt_bool("unpack"),
            })
        }
        "ENV" => Kind::Env(key_values(
            src,
            &RawInstruction {
                args: rest.clone(),
                ..raw.clone()
            },
            escape,
            "ENV",
        )?),
        "LABEL" => Kind::Label(key_values(
            src,
            &RawInstruction {
                args: rest.clone(),
                ..raw.clone()
            },
            escape,
            "LABEL",
        )?),
        "ARG" => {
            let words = parse_words(&rest, escape);
            if words.is_empty() {
                return Err(src.error_hint(
                    raw.location,
                    "ARG requires at least one argument",
                    "write ARG NAME or ARG NAME=default",
                ));
            }
            let mut args = Vec::new();
            for w in words {
                let (k, v) = match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w, None),
                };
                if k.is_empty() {
                    return Err(src.error(at, "ARG names can not be blank"));
                }
                args.push((k, v));
            }
            Kind::Arg(args)
        }
        "WORKDIR" => {
            need_args("write WORKDIR /path")?;
            Kind::Workdir(rest.clone())
        }
        "USER" => {
            need_args("write USER name[:group] or USER uid[:gid]")?;
            Kind::User(rest.clone())
        }
        "EXPOSE" => {
            need_args("write EXPOSE 8080 or EXPOSE 53/udp")?;
            Kind::Expose(whitespace_words(&rest))
        }
        "CMD" => Kind::Cmd(maybe_json(&rest)),
        "ENTRYPOINT" => Kind::Entrypoint(maybe_json(&rest)),
        "SHELL" => match maybe_json(&rest) {
            Command::Exec(v) if !v.is_empty() => Kind::Shell(v),
            _ => {
                return Err(src.error_hint(
                    at,
                    "SHELL requires the arguments to be in JSON form",
                    "write SHELL [\"/bin/bash\", \"-c\"]",
                ));
            }
        },
        "VOLUME" => {
            need_args("write VOLUME /data or VOLUME [\"/data\"]")?;
            let v = match maybe_json(&rest) {
                Command::Exec(v) => v,
                Command::Shell(s) => whitespace_words(&s),
            };
            if v.iter().any(|p| p.trim().is_empty()) {
                return Err(src.error(at, "VOLUME specified can not be an empty string"));
            }
            Kind::Volume(v)
        }
        "STOPSIGNAL" => {
            need_args("write STOPSIGNAL SIGTERM")?;
            Kind::StopSignal(rest.clone())
        }
        "MAINTAINER" => {
            need_args("write MAINTAINER name (or better: LABEL maintainer=...)")?;
            Kind::Maintainer(rest.clone())
        }
        "HEALTHCHECK" => parse_healthcheck(src, raw, &rest, &mut flags)?,
        "ONBUILD" => {
            if in_onbuild {
                return Err(src.error(at, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
            }
            need_args("write ONBUILD INSTRUCTION")?;
            let (kw, inner_args) = match rest.find(char::is_whitespace) {
                Some(p) => (&rest[..p], rest[p..].trim()),
                None => (rest.as_str(), ""),
            };
            let kwu = kw.to_ascii_uppercase();
            if kwu == "ONBUILD" {
                return Err(src.error(at, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
            }
            if kwu == "FROM" || kwu == "MAINTAINER" {
                return Err(src.error(at, format!("{kwu} isn't allowed as an ONBUILD trigger")));
            }
            let inner_raw = RawInstruction {
                keyword: kw.to_string(),
                location: at,
                args_location: at,
                args: inner_args.to_string(),
                end_line: raw.end_line,
                heredocs: Vec::new(),
            };
            let inner = parse_instruction(src, &inner_raw, escape, true)?;
            Kind::Onbuild(rest.clone(), Box::new(inner))
        }
        _ => unreachable!("keyword checked against INSTRUCTIONS"),
    };
    Ok(Instruction {
        location: raw.location,
        args_location: raw.args_location,
        end_line: raw.end_line,
        keyword,
        args: raw.args.clone(),
        kind,
    })
}

fn parse_healthcheck(
    src: &Source,
    raw: &RawInstruction,
    rest: &str,
    flags: &mut Flags,
) -> Result<Kind, SyntaxError> {
    let at = raw.args_location;
    let (typ, cmd) = match rest.find(char::is_whitespace) {
        Some(p) => (&rest[..p], rest[p..].trim()),
        None => (rest, ""),
    };
    match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !cmd.is_empty() || !flags.values.is_empty() {
                return Err(src.error(at, "HEALTHCHECK NONE takes no arguments"));
            }
            Ok(Kind::Healthcheck(Healthcheck::None))
        }
        "CMD" => {
            if cmd.is_empty() {
                return Err(src.error_hint(
                    at,
                    "missing command after HEALTHCHECK CMD",
                    "write HEALTHCHECK CMD curl -f http://localhost/",
                ));
            }
            let mut dur = |name: &str| -> Result<Option<u64>, SyntaxError> {
                let Some(v) = flags.str(name) else {
                    return Ok(None);
                };
                let d = parse_duration(&v).ok_or_else(|| {
                    src.error_hint(
                        at,
                        format!("invalid duration --{name}={v}"),
                        "use Go durations like 30s, 1m30s, 500ms",
                    )
                })?;
                if d != 0 && d < 1_000_000 {
                    return Err(src.error(at, format!("--{name} cannot be less than 1ms")));
                }
                Ok(Some(d))
            };
            let interval = dur("interval")?;
            let timeout = dur("timeout")?;
            let start_period = dur("start-period")?;
            let start_interval = dur("start-interval")?;
            let retries = match flags.str("retries") {
                None => None,
                Some(r) => Some(r.parse::<u32>().map_err(|_| {
                    src.error_hint(
                        at,
                        format!("invalid --retries={r}"),
                        "use a whole number ≥ 0",
                    )
                })?),
            };
            Ok(Kind::Healthcheck(Healthcheck::Check {
                test: maybe_json(cmd),
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            }))
        }
        _ => Err(src.error_hint(
            at,
            format!("unknown type {typ:?} for HEALTHCHECK"),
            "write HEALTHCHECK CMD command or HEALTHCHECK NONE",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Dockerfile {
        parse("Dockerfile", text).unwrap_or_else(|e| panic!("{e}"))
    }
    fn kinds(text: &str) -> Vec<Kind> {
        p(text).instructions.into_iter().map(|i| i.kind).collect()
    }
    fn err(text: &str) -> SyntaxError {
        parse("Dockerfile", text).unwrap_err()
    }

    #[test]
    fn from_forms() {
        let k = kinds("FROM alpine\nfrom --platform=$BUILDPLATFORM golang:1 as Build\n");
        assert_eq!(
            k[0],
            Kind::From(From {
                image: "alpine".into(),
                name: None,
                platform: None
            })
        );
        assert_eq!(
            k[1],
            Kind::From(From {
                image: "golang:1".into(),
                name: Some("Build".into()),
                platform: Some("$BUILDPLATFORM".into())
            })
        );
        assert!(err("FROM a b\n").message.contains("one or three"));
        assert!(err("FROM\n").message.contains("one or three"));
    }

    #[test]
    fn run_forms_and_flags() {
        let k = kinds(
            "RUN [\"echo\", \"a b\"]\nRUN echo [x\nRUN --mount=type=cache,target=/c --mount=type=secret,id=s --network=none echo hi\nRUN [\"bad\" json]\n",
        );
        assert_eq!(
            k[0],
            Kind::Run(Run {
                command: Command::Exec(vec!["echo".into(), "a b".into()]),
                mounts: vec![],
                network: None,
                security: None,
                heredocs: vec![]
            })
        );
        let Kind::Run(r) = &k[1] else { panic!() };
        assert_eq!(r.command, Command::Shell("echo [x".into()));
        let Kind::Run(r) = &k[2] else { panic!() };
        assert_eq!(r.mounts, vec!["type=cache,target=/c", "type=secret,id=s"]);
        assert_eq!(r.network.as_deref(), Some("none"));
        assert_eq!(r.command, Command::Shell("echo hi".into()));
        let Kind::Run(r) = &k[3] else { panic!() };
        assert_eq!(r.command, Command::Shell("[\"bad\" json]".into()));
    }

    #[test]
    fn run_heredoc() {
        let k = kinds("RUN <<EOF\necho a\nEOF\n");
        let Kind::Run(r) = &k[0] else { panic!() };
        assert_eq!(r.command, Command::Shell("<<EOF".into()));
        assert_eq!(r.heredocs[0].content, "echo a\n");
    }

    #[test]
    fn flag_errors() {
        let e = err("FROM a\nCOPY --form=x a b\n");
        assert_eq!(e.location.line, 2);
        assert!(e.message.contains("unknown flag: --form"), "{e}");
        assert!(e.hint.unwrap().contains("--from"));
        assert!(err("COPY --from a b\n").message.contains("missing a value"));
        assert!(err("COPY --link=maybe a b\n").message.contains("boolean"));
        assert!(
            err("COPY --from=a --from=b a b\n")
                .message
                .contains("duplicate flag")
        );
        assert!(err("ENV --x=1 A=b\n").message.contains("unknown flag"));
    }

    #[test]
    fn flags_quotes_and_double_dash() {
        let k = kinds("COPY --chown=\"1:2\" --link --exclude=*.md --exclude=x -- --weird /d/\n");
        let Kind::Copy(c) = &k[0] else { panic!() };
        assert_eq!(c.chown.as_deref(), Some("1:2"));
        assert!(c.link);
        assert_eq!(c.exclude, vec!["*.md", "x"]);
        assert_eq!(c.sources, vec![CopySource::Path("--weird".into())]);
        assert_eq!(c.dest, "/d/");
    }

    #[test]
    fn copy_forms() {
        let k = kinds(
            "COPY [\"a b\", \"c\", \"/dst/\"]\nADD --checksum=sha256:abc --unpack=false http://x/y.tar /y\nCOPY <<A <<B /dir/\na\nA\nb\nB\nCOPY <<EOF /f\nx\nEOF\n",
        );
        let Kind::Copy(c) = &k[0] else { panic!() };
        assert_eq!(
            c.sources,
            vec![CopySource::Path("a b".into()), CopySource::Path("c".into())]
        );
        let Kind::Copy(c) = &k[1] else { panic!() };
        assert!(c.add);
        assert_eq!(c.checksum.as_deref(), Some("sha256:abc"));
        assert_eq!(c.unpack, Some(false));
        let Kind::Copy(c) = &k[2] else { panic!() };
        assert!(
            matches!(&c.sources[0], CopySource::Heredoc(h) if h.name == "A" && h.content == "a\n")
        );
        assert!(matches!(&c.sources[1], CopySource::Heredoc(h) if h.name == "B"));
        assert_eq!(c.dest, "/dir/");
        let Kind::Copy(c) = &k[3] else { panic!() };
        assert_eq!(c.sources.len(), 1);
        assert!(err("COPY onlyone\n").message.contains("at least two"));
        assert!(
            err("ADD --from=x a b\n")
                .message
                .contains("unknown flag: --from")
        );
    }

    #[test]
    fn env_label_arg() {
        let k = kinds(
            "ENV A=1 B=\"two words\" C=x\\ y\nENV LEGACY value with  spaces\nLABEL \"com.x\"=1 b='2'\nARG X Y=1 Z=\nARG Q=\"a b\"\n",
        );
        assert_eq!(
            k[0],
            Kind::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into()),
                ("C".into(), "x\\ y".into())
            ])
        );
        assert_eq!(
            k[1],
            Kind::Env(vec![("LEGACY".into(), "value with  spaces".into())])
        );
        assert_eq!(
            k[2],
            Kind::Label(vec![
                ("\"com.x\"".into(), "1".into()),
                ("b".into(), "'2'".into())
            ])
        );
        assert_eq!(
            k[3],
            Kind::Arg(vec![
                ("X".into(), None),
                ("Y".into(), Some("1".into())),
                ("Z".into(), Some("".into()))
            ])
        );
        assert_eq!(k[4], Kind::Arg(vec![("Q".into(), Some("\"a b\"".into()))]));
        assert!(err("ENV A\n").message.contains("two arguments"));
        assert!(err("ENV A=1 B\n").message.contains("can't find ="));
        assert!(err("LABEL\n").message.contains("at least one"));
    }

    #[test]
    fn cmd_entrypoint_shell_volume() {
        let k = kinds(
            "CMD [\"a\"]\nCMD a b\nENTRYPOINT [\"x\",\"y\"]\nSHELL [\"/bin/bash\",\"-c\"]\nVOLUME [\"/a\",\"/b\"]\nVOLUME /c /d\nCMD []\n",
        );
        assert_eq!(k[0], Kind::Cmd(Command::Exec(vec!["a".into()])));
        assert_eq!(k[1], Kind::Cmd(Command::Shell("a b".into())));
        assert_eq!(
            k[2],
            Kind::Entrypoint(Command::Exec(vec!["x".into(), "y".into()]))
        );
        assert_eq!(k[3], Kind::Shell(vec!["/bin/bash".into(), "-c".into()]));
        assert_eq!(k[4], Kind::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(k[5], Kind::Volume(vec!["/c".into(), "/d".into()]));
        assert_eq!(k[6], Kind::Cmd(Command::Exec(vec![])));
        assert!(err("SHELL /bin/bash -c\n").message.contains("JSON form"));
    }

    #[test]
    fn healthcheck() {
        let k = kinds(
            "HEALTHCHECK NONE\nHEALTHCHECK --interval=1m30s --timeout=5s --start-period=500ms --start-interval=2s --retries=4 CMD curl -f http://x/\nHEALTHCHECK CMD [\"/bin/check\"]\n",
        );
        assert_eq!(k[0], Kind::Healthcheck(Healthcheck::None));
        assert_eq!(
            k[1],
            Kind::Healthcheck(Healthcheck::Check {
                test: Command::Shell("curl -f http://x/".into()),
                interval: Some(90_000_000_000),
                timeout: Some(5_000_000_000),
                start_period: Some(500_000_000),
                start_interval: Some(2_000_000_000),
                retries: Some(4),
            })
        );
        assert!(
            matches!(&k[2], Kind::Healthcheck(Healthcheck::Check { test: Command::Exec(v), .. }) if v == &vec!["/bin/check".to_string()])
        );
        assert!(err("HEALTHCHECK NONE x\n").message.contains("no arguments"));
        assert!(
            err("HEALTHCHECK --interval=1x CMD a\n")
                .message
                .contains("invalid duration")
        );
        assert!(
            err("HEALTHCHECK --interval=1us CMD a\n")
                .message
                .contains("less than 1ms")
        );
        assert!(err("HEALTHCHECK CMD\n").message.contains("missing command"));
        assert!(err("HEALTHCHECK FOO\n").message.contains("unknown type"));
        assert!(
            err("HEALTHCHECK --retries=-1 CMD a\n")
                .message
                .contains("--retries")
        );
    }

    #[test]
    fn onbuild_and_maintainer() {
        let k = kinds("ONBUILD RUN echo hi\nonbuild copy . /app\nMAINTAINER Jane <j@x>\n");
        let Kind::Onbuild(t, inner) = &k[0] else {
            panic!()
        };
        assert_eq!(t, "RUN echo hi");
        assert!(matches!(inner.kind, Kind::Run(_)));
        assert!(matches!(&k[1], Kind::Onbuild(_, i) if i.keyword == "COPY"));
        assert_eq!(k[2], Kind::Maintainer("Jane <j@x>".into()));
        assert!(err("ONBUILD ONBUILD RUN x\n").message.contains("chaining"));
        assert!(err("ONBUILD FROM x\n").message.contains("isn't allowed"));
        assert!(parse_trigger("base image ONBUILD", "COPY a b").is_ok());
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = err("FROM a\nRUN x\nCOPPY a b\n");
        assert_eq!(e.location, Location { line: 3, column: 1 });
        assert_eq!(e.message, "unknown instruction: COPPY");
        assert!(e.hint.as_deref().unwrap().starts_with("did you mean COPY?"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("Dockerfile:3:1: unknown instruction: COPPY"),
            "{shown}"
        );
        assert!(shown.contains("COPPY a b"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn expose_workdir_user_stopsignal() {
        let k = kinds("EXPOSE 80 443/tcp 53/udp\nWORKDIR /a b\nUSER app:app\nSTOPSIGNAL SIGQUIT\n");
        assert_eq!(
            k[0],
            Kind::Expose(vec!["80".into(), "443/tcp".into(), "53/udp".into()])
        );
        assert_eq!(k[1], Kind::Workdir("/a b".into()));
        assert_eq!(k[2], Kind::User("app:app".into()));
        assert_eq!(k[3], Kind::StopSignal("SIGQUIT".into()));
        assert!(err("WORKDIR\n").message.contains("at least one"));
    }
}
