//! Progress reporting shared by every long-running operation.
//!
//! Library code reports through a [`Progress`] handle and never prints
//! itself: the handle turns what happens into [`Event`]s and hands each one,
//! as it happens, to a [`ProgressSink`]. The CLI's four modes, chosen like
//! BuildKit's `--progress`, are sinks: `tty` (live bars, [`tty`]), `plain`
//! (one line per event, for logs) and `json` (one JSON object per line on
//! stderr, for machines), both in [`render`]; `quiet` has none (the library
//! default). `auto` picks `tty` on a terminal, else `plain`. `NO_COLOR`
//! turns colours off in every mode. A program embedding kiln passes its own
//! sink to [`Progress::with_sink`].
//!
//! Every piece of text a handle is given (task names, log lines, messages,
//! warnings) is passed through its [`Redactor`] first, so the secrets
//! registered with [`Progress::add_secret`] are shown as `****` in every
//! mode, in recorded events and in the tails kept for failure reports. The
//! CLI passes error messages through [`Progress::redact`] too.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::redact::Redactor;

pub mod render;
#[cfg(feature = "cli")]
pub mod tty;

/// Where a [`Progress`] handle sends its events, as they happen (from the
/// threads that do the work: steps and package sets run in parallel).
/// Implementations must be cheap: the build waits for `event` to return.
pub trait ProgressSink: Send + Sync {
    fn event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> ProgressSink for F {
    fn event(&self, event: &Event) {
        self(event)
    }
}

/// How progress is shown. `Auto` is resolved by [`ProgressMode::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ProgressMode {
    #[default]
    Auto,
    Plain,
    Tty,
    Json,
    Quiet,
}

impl ProgressMode {
    /// Replaces `Auto` with `Tty` when stderr is a terminal, else `Plain`.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        }
    }
}

/// One thing that happened, as machines see it (`--progress=json`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A task (a build step, a blob transfer…) started. `parent` is the
    /// task it is part of (the package set a package layer belongs to);
    /// `step` marks the build's steps, the ones [`Event::Steps`] counts.
    Start {
        id: u64,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        parent: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        step: bool,
    },
    /// A line of a task's output.
    Log { id: u64, line: String },
    /// Bytes done out of an optional total.
    Bytes {
        id: u64,
        done: u64,
        total: Option<u64>,
    },
    /// The task ended. `status` is `done`, `cached`, `skipped` or `failed`.
    Finish {
        id: u64,
        status: String,
        seconds: f64,
    },
    /// A message not tied to a task.
    Message { level: Level, text: String },
    /// A build's solve began: `total` steps (package sets and the shown
    /// steps of the stages it builds) will start, as `step` tasks. A
    /// second one (a rebuild with more packages) replaces the first.
    Steps { total: u64 },
    /// The last event of a build: what it made, or why it failed.
    Result(BuildOutcome),
}

/// The final `result` event of `kiln build --progress json` (a stable
/// schema, docs/build.md): on success `digest`, `size` (bytes a pull
/// transfers), `names`, `pushed`; on failure `error` and `exit_code`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BuildOutcome {
    pub ok: bool,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
    /// Why the command failed (`--progress json` only; the other modes
    /// print `error: …` lines).
    Error,
}

/// A cheap, clonable progress handle.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
    /// The task the tasks started through this handle belong to.
    parent: Option<u64>,
    /// Tasks started through this handle are build steps.
    steps: bool,
}

struct Inner {
    mode: ProgressMode,
    color: bool,
    next_id: Mutex<u64>,
    sink: Option<Arc<dyn ProgressSink>>,
    /// Every event, in order, when recording is on (tests and library users
    /// that want to inspect what happened, e.g. which steps were cached).
    recorded: Option<Mutex<Vec<Event>>>,
    /// The last lines of output of finished tasks, by task name, so a
    /// failure report can show them (see [`Progress::tail`]).
    tails: Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// The secrets masked in everything shown or recorded.
    redactor: std::sync::RwLock<Redactor>,
    /// A `result` event was emitted: it already carries the error.
    ended: std::sync::atomic::AtomicBool,
}

/// How many output lines of a task are kept for failure reports.
pub const TAIL_LINES: usize = 30;

impl Progress {
    /// A handle that renders in `mode` on stderr (what the CLI uses).
    pub fn new(mode: ProgressMode) -> Progress {
        let mode = mode.resolve();
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stderr().is_terminal();
        let sink: Option<Arc<dyn ProgressSink>> = match mode {
            #[cfg(feature = "cli")]
            ProgressMode::Tty => Some(Arc::new(tty::Tty::new(color))),
            #[cfg(not(feature = "cli"))]
            ProgressMode::Tty => Some(Arc::new(render::Plain::stderr(color))),
            ProgressMode::Plain => Some(Arc::new(render::Plain::stderr(color))),
            ProgressMode::Json => Some(Arc::new(render::Json::stderr())),
            ProgressMode::Quiet | ProgressMode::Auto => None,
        };
        Progress::make(mode, color, sink, false)
    }

    fn make(
        mode: ProgressMode,
        color: bool,
        sink: Option<Arc<dyn ProgressSink>>,
        record: bool,
    ) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                mode,
                color,
                next_id: Mutex::new(0),
                sink,
                recorded: record.then(|| Mutex::new(Vec::new())),
                tails: Mutex::new(std::collections::HashMap::new()),
                redactor: std::sync::RwLock::new(Redactor::new()),
                ended: std::sync::atomic::AtomicBool::new(false),
            }),
            parent: None,
            steps: false,
        }
    }

    /// A handle that hands every event to `sink` as it happens: how a
    /// program embedding kiln shows progress its own way.
    pub fn with_sink(sink: Arc<dyn ProgressSink>) -> Progress {
        Progress::make(ProgressMode::Quiet, false, Some(sink), false)
    }

    /// A handle that shows nothing: the library default.
    pub fn quiet() -> Progress {
        Progress::new(ProgressMode::Quiet)
    }

    /// A quiet handle that records every event, readable with [`Progress::events`].
    pub fn recording() -> Progress {
        Progress::make(ProgressMode::Quiet, false, None, true)
    }

    /// A handle whose tasks are parts of `task` (renderers fold them into
    /// its line): the package layers of a package set.
    pub fn under(&self, task: &Task) -> Progress {
        Progress {
            inner: self.inner.clone(),
            parent: Some(task.id),
            steps: false,
        }
    }

    /// A handle whose tasks are build steps (counted against [`Event::Steps`]).
    pub fn for_steps(&self) -> Progress {
        Progress {
            inner: self.inner.clone(),
            parent: self.parent,
            steps: true,
        }
    }

    /// The events recorded so far (empty unless made by [`Progress::recording`]).
    pub fn events(&self) -> Vec<Event> {
        match &self.inner.recorded {
            Some(r) => r.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    /// The last [`TAIL_LINES`] lines of output of the finished task named `name`.
    pub fn tail(&self, name: &str) -> Vec<String> {
        // Tasks are kept under their shown (redacted) name.
        let name = self.redact(name);
        self.inner
            .tails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned()
            .unwrap_or_default()
    }

    /// Masks `value` (a secret) in everything this handle and its clones
    /// show or record from now on (see [`crate::redact`] for the forms).
    pub fn add_secret(&self, value: &[u8]) {
        self.inner
            .redactor
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(value);
    }

    /// `text` with the registered secrets masked: for output that does not
    /// go through this handle (the CLI's error messages).
    pub fn redact(&self, text: &str) -> String {
        self.inner
            .redactor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .redact(text)
            .into_owned()
    }

    pub fn mode(&self) -> ProgressMode {
        self.inner.mode
    }

    pub fn color(&self) -> bool {
        self.inner.color
    }

    /// Whether anything receives the events (bytes events are only made then).
    fn listened(&self) -> bool {
        self.inner.sink.is_some() || self.inner.recorded.is_some()
    }

    fn emit(&self, ev: Event) {
        if let Some(sink) = &self.inner.sink {
            sink.event(&ev);
        }
        if let Some(r) = &self.inner.recorded {
            r.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
        }
    }

    /// The command's error, as a `message` event of level `error`.
    pub fn error(&self, text: impl Into<String>) {
        let text = self.redact(&text.into());
        self.emit(Event::Message {
            level: Level::Error,
            text,
        });
    }

    /// Records how a build ended (`--progress json` prints it last; the
    /// terminal renderers print the closing line from it).
    pub fn result(&self, outcome: BuildOutcome) {
        let mut outcome = outcome;
        outcome.error = outcome.error.map(|e| self.redact(&e));
        self.emit(Event::Result(outcome));
        self.inner
            .ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Progress::result`] was called.
    pub fn has_result(&self) -> bool {
        self.inner.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A build's solve is about to start `total` steps.
    pub fn steps(&self, total: u64) {
        self.emit(Event::Steps { total });
    }

    pub fn info(&self, text: impl Into<String>) {
        let text = self.redact(&text.into());
        self.emit(Event::Message {
            level: Level::Info,
            text,
        });
    }

    pub fn warn(&self, text: impl Into<String>) {
        let text = self.redact(&text.into());
        // Warnings are shown even without a sink: losing them hides problems.
        if !self.listened() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}",
                render::warning(&text, self.inner.color)
            );
        }
        self.emit(Event::Message {
            level: Level::Warn,
            text,
        });
    }

    /// Starts a task; the returned [`Task`] reports its output and end.
    pub fn task(&self, name: impl Into<String>) -> Task {
        let name = self.redact(&name.into());
        let id = {
            let mut n = self.inner.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        self.emit(Event::Start {
            id,
            name: name.clone(),
            parent: self.parent,
            step: self.steps,
        });
        Task {
            progress: self.clone(),
            id,
            name,
            started: Instant::now(),
            finished: false,
            tail: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

/// A running task. Dropping it without [`Task::finish`] reports `failed`.
pub struct Task {
    progress: Progress,
    id: u64,
    name: String,
    started: Instant,
    finished: bool,
    tail: Mutex<std::collections::VecDeque<String>>,
}

impl Task {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A line of output (a build step's stdout/stderr).
    pub fn log(&self, line: &str) {
        let line = &self.progress.redact(line);
        {
            let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        }
        self.progress.emit(Event::Log {
            id: self.id,
            line: line.to_string(),
        });
    }

    /// Bytes done so far (of `total` when known).
    pub fn bytes(&self, done: u64, total: Option<u64>) {
        if self.progress.listened() {
            self.progress.emit(Event::Bytes {
                id: self.id,
                done,
                total,
            });
        }
    }

    /// Ends the task with a status word (`done`, `cached`, `skipped`,
    /// `failed`; `fetched` for an index download).
    pub fn finish(mut self, status: &str) {
        self.end(status);
    }

    fn end(&mut self, status: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        let tail: Vec<String> = self
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        self.progress
            .inner
            .tails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name.clone(), tail);
        self.progress.emit(Event::Finish {
            id: self.id,
            status: status.to_string(),
            seconds: self.started.elapsed().as_secs_f64(),
        });
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.end("failed");
    }
}

/// A reader that reports the bytes read through it as a task's progress
/// (an upload or a transfer), at most every 100 ms.
pub struct Reading<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    task: &'a Task,
    last: std::time::Instant,
}

impl<'a, R> Reading<'a, R> {
    pub fn new(inner: R, total: u64, task: &'a Task) -> Reading<'a, R> {
        Reading {
            inner,
            done: 0,
            total,
            task,
            last: std::time::Instant::now(),
        }
    }

    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

impl<R: std::io::Read> std::io::Read for Reading<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last.elapsed().as_millis() >= 100 {
            self.last = std::time::Instant::now();
            self.task.bytes(self.done, Some(self.total));
        }
        Ok(n)
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_entry_point_masks_the_secrets() {
        let p = Progress::recording();
        p.add_secret(b"file-secret\n");
        p.add_secret(b"-----BEGIN KEY-----\nAAAAB3NzaC1yc2E\n-----END KEY-----\n");
        let clone = p.clone();
        clone.add_secret(b"env-secret");
        let task = p.task("RUN echo env-secret");
        task.log("file-secret");
        task.log("AAAAB3NzaC1yc2E");
        task.log("before env-secret after");
        task.log("an ordinary line");
        task.finish("failed");
        p.info("value: file-secret");
        p.warn("warned about env-secret");
        let shown = format!("{:?}", p.events());
        for secret in ["file-secret", "env-secret", "AAAAB3NzaC1yc2E"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(
            p.tail("RUN echo env-secret"),
            vec!["****", "****", "before **** after", "an ordinary line"]
        );
        let texts: Vec<String> = p
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Start { name, .. } => Some(name),
                Event::Message { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            vec!["RUN echo ****", "value: ****", "warned about ****"]
        );
        // The JSON a machine reads is made from the masked event.
        let json: Vec<String> = p
            .events()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert!(
            json.iter().any(|l| l.contains(r#""line":"****""#)),
            "{json:?}"
        );
        assert_eq!(p.redact("a file-secret b"), "a **** b");
    }
}
