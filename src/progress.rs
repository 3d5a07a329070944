//! Progress reporting shared by every long-running operation.
//!
//! Library code reports through a [`Progress`] handle and never prints
//! itself. The handle renders in one of four modes, chosen like BuildKit's
//! `--progress`: `tty` (live bars), `plain` (one line per event, for logs),
//! `json` (one JSON object per line on stderr, for machines) and `quiet`
//! (library default: nothing). `auto` picks `tty` on a terminal, else `plain`.
//! `NO_COLOR` turns colours off in every mode.
//!
//! Every piece of text a handle is given (task names, log lines, messages,
//! warnings) is passed through its [`Redactor`] first, so the secrets
//! registered with [`Progress::add_secret`] are shown as `****` in every
//! mode, in recorded events and in the tails kept for failure reports. The
//! CLI passes error messages through [`Progress::redact`] too.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::redact::Redactor;

/// How progress is shown. `Auto` is resolved by [`ProgressMode::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
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
    /// A task (a build step, a blob transfer…) started.
    Start { id: u64, name: String },
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
}

struct Inner {
    mode: ProgressMode,
    color: bool,
    next_id: Mutex<u64>,
    bars: Option<indicatif::MultiProgress>,
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
    pub fn new(mode: ProgressMode) -> Progress {
        let mode = mode.resolve();
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stderr().is_terminal();
        let bars = (mode == ProgressMode::Tty).then(indicatif::MultiProgress::new);
        Progress {
            inner: Arc::new(Inner {
                mode,
                color,
                next_id: Mutex::new(0),
                bars,
                recorded: None,
                tails: Mutex::new(std::collections::HashMap::new()),
                redactor: std::sync::RwLock::new(Redactor::new()),
                ended: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// A handle that shows nothing: the library default.
    pub fn quiet() -> Progress {
        Progress::new(ProgressMode::Quiet)
    }

    /// A quiet handle that records every event, readable with [`Progress::events`].
    pub fn recording() -> Progress {
        let mut p = Progress::new(ProgressMode::Quiet);
        Arc::get_mut(&mut p.inner).expect("fresh handle").recorded = Some(Mutex::new(Vec::new()));
        p
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

    fn emit(&self, ev: Event) {
        if let Some(r) = &self.inner.recorded {
            r.lock().unwrap_or_else(|e| e.into_inner()).push(ev.clone());
        }
        if self.inner.mode == ProgressMode::Json
            && let Ok(mut v) = serde_json::to_value(&ev)
        {
            // Every line carries its wall-clock time (RFC 3339, UTC, ms).
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "time".into(),
                    chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        .into(),
                );
            }
            let _ = writeln!(std::io::stderr().lock(), "{v}");
        }
    }

    fn print(&self, line: &str) {
        match (&self.inner.bars, self.inner.mode) {
            (Some(bars), _) => {
                let _ = bars.println(line);
            }
            (None, ProgressMode::Plain) => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            _ => {}
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

    /// Records how a build ended (`--progress json` prints it last).
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

    pub fn info(&self, text: impl Into<String>) {
        let text = self.redact(&text.into());
        self.print(&text);
        self.emit(Event::Message {
            level: Level::Info,
            text,
        });
    }

    pub fn warn(&self, text: impl Into<String>) {
        let text = self.redact(&text.into());
        let shown = if self.inner.color {
            format!("\x1b[33mwarning\x1b[0m: {text}")
        } else {
            format!("warning: {text}")
        };
        // Warnings are shown even in quiet mode: losing them hides problems.
        if matches!(self.inner.mode, ProgressMode::Quiet) && self.inner.recorded.is_none() {
            let _ = writeln!(std::io::stderr().lock(), "{shown}");
        } else {
            self.print(&shown);
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
        let bar = self.inner.bars.as_ref().map(|bars| {
            let bar = bars.add(indicatif::ProgressBar::new_spinner());
            bar.set_message(name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if self.inner.mode == ProgressMode::Plain {
            self.print(&format!("#{id} {name}"));
        }
        self.emit(Event::Start {
            id,
            name: name.clone(),
        });
        Task {
            progress: self.clone(),
            id,
            name,
            started: Instant::now(),
            bar,
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
    bar: Option<indicatif::ProgressBar>,
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
        match &self.bar {
            Some(bar) => bar.set_message(format!("{}  {}", self.name, truncate(line, 60))),
            None if self.progress.inner.mode == ProgressMode::Plain => {
                self.progress.print(&format!("#{} {line}", self.id))
            }
            None => {}
        }
        self.progress.emit(Event::Log {
            id: self.id,
            line: line.to_string(),
        });
    }

    /// Bytes done so far (of `total` when known).
    pub fn bytes(&self, done: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let of = total
                .map(|t| format!(" / {}", human_bytes(t)))
                .unwrap_or_default();
            bar.set_message(format!(
                "{}  {}{of}  {}/s",
                self.name,
                human_bytes(done),
                human_bytes(rate as u64)
            ));
        }
        if self.progress.inner.mode == ProgressMode::Json || self.progress.inner.recorded.is_some()
        {
            self.progress.emit(Event::Bytes {
                id: self.id,
                done,
                total,
            });
        }
    }

    /// Ends the task with a status word (`done`, `cached`, `skipped`, `failed`).
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
        let seconds = self.started.elapsed().as_secs_f64();
        let shown = match status {
            "done" => format!("{}  {seconds:.1}s", self.name),
            other => format!("{}  {}", self.name, other.to_uppercase()),
        };
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            self.progress.print(&shown);
        } else if self.progress.inner.mode == ProgressMode::Plain {
            self.progress.print(&format!("#{} {shown}", self.id));
        }
        self.progress.emit(Event::Finish {
            id: self.id,
            status: status.to_string(),
            seconds,
        });
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.end("failed");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `1536` → `1.5 KiB`.
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
