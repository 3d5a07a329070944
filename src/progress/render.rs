//! The line renderers: `--progress plain` ([`Plain`]) and `--progress json`
//! ([`Json`]), and the [`Board`] the terminal renderers share: which tasks
//! run, which are parts of another (folded into its line), the step counts,
//! and the text of finish lines, the header and the closing line.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use super::{BuildOutcome, Event, Level, ProgressSink, human_bytes};

/// What the terminal renderers know of the running tasks.
#[derive(Default)]
pub struct Board {
    tasks: HashMap<u64, Entry>,
    /// Steps the build will run ([`Event::Steps`]), and how many ended.
    pub total: u64,
    pub done: u64,
}

struct Entry {
    name: String,
    parent: Option<u64>,
    step: bool,
    /// Folded package layers: how many ended, and their bytes.
    layers: u64,
    layer_bytes: u64,
    /// The last `bytes` event's count.
    bytes: u64,
}

impl Board {
    /// A task started.
    pub fn start(&mut self, id: u64, name: &str, parent: Option<u64>, step: bool) {
        self.tasks.insert(
            id,
            Entry {
                name: name.to_string(),
                parent,
                step,
                layers: 0,
                layer_bytes: 0,
                bytes: 0,
            },
        );
    }

    /// The running top-level task `id` is folded into: itself when it is
    /// no part of another, or when that one has ended.
    pub fn root(&self, id: u64) -> u64 {
        let mut at = id;
        while let Some(p) = self.tasks.get(&at).and_then(|e| e.parent) {
            if !self.tasks.contains_key(&p) {
                break;
            }
            at = p;
        }
        at
    }

    pub fn name(&self, id: u64) -> &str {
        self.tasks.get(&id).map(|e| e.name.as_str()).unwrap_or("")
    }

    pub fn bytes(&mut self, id: u64, done: u64) {
        if let Some(e) = self.tasks.get_mut(&id) {
            e.bytes = done;
        }
    }

    /// A task ended: the line to print for it, `None` for a task folded
    /// into another (its layers are summed into that one's line).
    pub fn finish(&mut self, id: u64, status: &str, seconds: f64) -> Option<String> {
        let root = self.root(id);
        let entry = self.tasks.remove(&id)?;
        if root != id {
            if entry.name.starts_with("layer ")
                && let Some(r) = self.tasks.get_mut(&root)
            {
                r.layers += 1;
                r.layer_bytes += entry.bytes;
            }
            return None;
        }
        if entry.step && status != "failed" {
            self.done += 1;
        }
        let folded = (entry.layers > 0).then(|| {
            format!(
                "  {} package layers, {}",
                entry.layers,
                human_bytes(entry.layer_bytes)
            )
        });
        Some(finish_line(
            &entry.name,
            status,
            seconds,
            folded.as_deref().unwrap_or(""),
        ))
    }

    /// A solve began (a second one replaces the first's counts).
    pub fn steps(&mut self, total: u64) {
        self.total = total;
        self.done = 0;
    }

    /// The header's counts: `3/9 steps`.
    pub fn counts(&self) -> String {
        format!("{}/{} steps", self.done.min(self.total), self.total)
    }
}

/// A finished task's line: its name, what it folded, its status and time.
/// Status words are upper case (`CACHED`, as BuildKit); nothing else is.
fn finish_line(name: &str, status: &str, seconds: f64, folded: &str) -> String {
    match status {
        "done" => format!("{name}{folded}  {seconds:.1}s"),
        "cached" => format!("{name}{folded}  CACHED"),
        "skipped" => format!("{name}  SKIPPED"),
        "failed" => format!("{name}  FAILED after {seconds:.1}s"),
        other => format!("{name}{folded}  {other}  {seconds:.1}s"),
    }
}

/// The last line of a build: `named app:latest sha256:1a2b3c4d5e6f… 41.0 MiB
/// in 9.4 s`, or how long it ran before failing (the error follows).
pub fn closing_line(o: &BuildOutcome) -> String {
    // Under a second (a warm build), two decimals say more than `0.0`.
    let took = if o.seconds < 1.0 {
        format!("{:.2} s", o.seconds)
    } else {
        format!("{:.1} s", o.seconds)
    };
    if !o.ok {
        return format!("failed after {took}");
    }
    let digest = o
        .digest
        .as_deref()
        .map(|d| match d.split_once(':') {
            Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
            _ => d.to_string(),
        })
        .unwrap_or_default();
    let mut line = if o.names.is_empty() {
        format!("built {digest}")
    } else {
        format!("named {} {digest}", o.names.join(", "))
    };
    if let Some(size) = o.size {
        line.push_str(&format!(" {}", human_bytes(size)));
    }
    line.push_str(&format!(" in {took}"));
    if !o.pushed.is_empty() {
        let to: Vec<&str> = o
            .pushed
            .iter()
            .map(|p| p.split_once('@').map_or(p.as_str(), |(n, _)| n))
            .collect();
        line.push_str(&format!(", pushed to {}", to.join(", ")));
    }
    line
}

/// `warning: text`, the word in yellow with colours on.
pub fn warning(text: &str, color: bool) -> String {
    if color {
        format!("\x1b[33mwarning\x1b[0m: {text}")
    } else {
        format!("warning: {text}")
    }
}

/// `--progress plain`: one line per event (`#ID name`, `#ID output line`,
/// `#ID name  1.2s`), parts of a task folded into its finish line, and the
/// closing line. For logs and CI.
pub struct Plain {
    state: Mutex<(Board, Box<dyn Write + Send>)>,
    color: bool,
}

impl Plain {
    pub fn new(out: Box<dyn Write + Send>, color: bool) -> Plain {
        Plain {
            state: Mutex::new((Board::default(), out)),
            color,
        }
    }

    pub fn stderr(color: bool) -> Plain {
        Plain::new(Box::new(std::io::stderr()), color)
    }
}

impl ProgressSink for Plain {
    fn event(&self, event: &Event) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (board, out) = &mut *guard;
        let line = match event {
            Event::Start {
                id,
                name,
                parent,
                step,
            } => {
                board.start(*id, name, *parent, *step);
                (board.root(*id) == *id).then(|| format!("#{id} {name}"))
            }
            Event::Log { id, line } => Some(format!("#{} {line}", board.root(*id))),
            Event::Bytes { id, done, .. } => {
                board.bytes(*id, *done);
                None
            }
            Event::Finish {
                id,
                status,
                seconds,
            } => {
                let step = board.tasks.get(id).is_some_and(|e| e.step);
                board.finish(*id, status, *seconds).map(|l| {
                    if step {
                        format!("#{id} {l}  ({})", board.counts())
                    } else {
                        format!("#{id} {l}")
                    }
                })
            }
            Event::Message {
                level: Level::Info,
                text,
            } => Some(text.clone()),
            Event::Message {
                level: Level::Warn,
                text,
            } => Some(warning(text, self.color)),
            // The CLI prints the error itself.
            Event::Message {
                level: Level::Error,
                ..
            } => None,
            Event::Steps { total } => {
                board.steps(*total);
                Some(format!("building: {total} steps"))
            }
            Event::Result(o) => Some(closing_line(o)),
        };
        if let Some(line) = line {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// `--progress json`: every event as one JSON object per line on stderr,
/// with its wall-clock `time` (a stable schema, docs/build.md).
pub struct Json {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Json {
    pub fn new(out: Box<dyn Write + Send>) -> Json {
        Json {
            out: Mutex::new(out),
        }
    }

    pub fn stderr() -> Json {
        Json::new(Box::new(std::io::stderr()))
    }
}

impl ProgressSink for Json {
    fn event(&self, event: &Event) {
        let Ok(mut v) = serde_json::to_value(event) else {
            return;
        };
        // Every line carries its wall-clock time (RFC 3339, UTC, ms).
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "time".into(),
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn start(id: u64, name: &str, parent: Option<u64>, step: bool) -> Event {
        Event::Start {
            id,
            name: name.into(),
            parent,
            step,
        }
    }

    fn finish(id: u64, status: &str, seconds: f64) -> Event {
        Event::Finish {
            id,
            status: status.into(),
            seconds,
        }
    }

    /// A cold auto build as the solver reports it: a package set whose 40
    /// layers are its parts, two steps, the result.
    fn cold_build() -> Vec<Event> {
        let mut ev = vec![
            Event::Steps { total: 3 },
            start(1, "[packages] nodejs npm (bookworm)", None, true),
        ];
        ev.push(start(2, "download 40 packages", Some(1), false));
        ev.push(finish(2, "done", 3.0));
        for i in 0..40u64 {
            ev.push(start(10 + i, &format!("layer pkg{i}"), Some(1), false));
            ev.push(Event::Bytes {
                id: 10 + i,
                done: 1024 * 1024,
                total: Some(1024 * 1024),
            });
            ev.push(finish(10 + i, "done", 0.1));
        }
        ev.push(finish(1, "done", 6.31));
        ev.push(start(60, "[build 1/2] COPY . /app", None, true));
        ev.push(finish(60, "cached", 0.0));
        ev.push(start(61, "[build 2/2] RUN npm ci", None, true));
        ev.push(Event::Log {
            id: 61,
            line: "added 3 packages".into(),
        });
        ev.push(finish(61, "done", 2.04));
        ev.push(Event::Result(BuildOutcome {
            ok: true,
            seconds: 9.43,
            digest: Some(format!("sha256:{}", "acc2950a7537".repeat(5) + "abcd")),
            size: Some(43 * 1024 * 1024),
            names: vec!["node-npm:latest".into()],
            ..Default::default()
        }));
        ev
    }

    #[test]
    fn plain_folds_package_layers_counts_steps_and_closes() {
        let buf = Buf::default();
        let plain = Plain::new(Box::new(buf.clone()), false);
        for e in cold_build() {
            plain.event(&e);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            vec![
                "building: 3 steps",
                "#1 [packages] nodejs npm (bookworm)",
                "#1 [packages] nodejs npm (bookworm)  40 package layers, 40.0 MiB  6.3s  (1/3 steps)",
                "#60 [build 1/2] COPY . /app",
                "#60 [build 1/2] COPY . /app  CACHED  (2/3 steps)",
                "#61 [build 2/2] RUN npm ci",
                "#61 added 3 packages",
                "#61 [build 2/2] RUN npm ci  2.0s  (3/3 steps)",
                "named node-npm:latest sha256:acc2950a7537… 43.0 MiB in 9.4 s",
            ]
        );
    }

    #[test]
    fn parts_outliving_their_task_show_as_their_own() {
        let mut b = Board::default();
        b.start(1, "[packages] a", None, true);
        b.start(2, "layer a", Some(1), false);
        assert_eq!(b.root(2), 1);
        assert_eq!(
            b.finish(1, "done", 1.0).as_deref(),
            Some("[packages] a  1.0s")
        );
        assert_eq!(b.root(2), 2);
        assert_eq!(b.finish(2, "done", 0.5).as_deref(), Some("layer a  0.5s"));
    }

    #[test]
    fn status_words_only_are_upper_case() {
        assert_eq!(finish_line("x", "fetched", 1.0, ""), "x  fetched  1.0s");
        assert_eq!(finish_line("x", "failed", 2.0, ""), "x  FAILED after 2.0s");
        let failed = BuildOutcome {
            ok: false,
            seconds: 3.04,
            ..Default::default()
        };
        assert_eq!(closing_line(&failed), "failed after 3.0 s");
        let warm = BuildOutcome {
            ok: true,
            seconds: 0.043,
            digest: Some("sha256:0123456789abcdef".into()),
            ..Default::default()
        };
        assert_eq!(closing_line(&warm), "built sha256:0123456789ab… in 0.04 s");
        let pushed = BuildOutcome {
            ok: true,
            seconds: 1.0,
            digest: Some("sha256:0123456789abcdef".into()),
            names: vec!["r.example/app:1".into()],
            pushed: vec!["r.example/app@sha256:0123456789abcdef".into()],
            ..Default::default()
        };
        assert_eq!(
            closing_line(&pushed),
            "named r.example/app:1 sha256:0123456789ab… in 1.0 s, pushed to r.example/app"
        );
    }
}
