//! `--progress tty`: live bars on a terminal (indicatif). A header with the
//! build's elapsed time and step counts, one spinner per running task with
//! its own elapsed time, the parts of a task (a package set's downloads and
//! layers) shown on that task's line instead of their own, a line per
//! finished task above the bars, and the closing line.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use super::render::{Board, closing_line, warning};
use super::{Event, Level, ProgressSink, human_bytes};

pub struct Tty {
    bars: MultiProgress,
    color: bool,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    board: Board,
    /// The spinners of the running top-level tasks.
    running: HashMap<u64, ProgressBar>,
    header: Option<ProgressBar>,
}

/// `{secs}`: the bar's elapsed time as `12.3s`.
fn secs(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

impl Tty {
    pub fn new(color: bool) -> Tty {
        Tty {
            bars: MultiProgress::new(),
            color,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn task_style(&self) -> ProgressStyle {
        let t = if self.color {
            "{spinner:.cyan} {wide_msg}  {secs:.dim}"
        } else {
            "{spinner} {wide_msg}  {secs}"
        };
        ProgressStyle::with_template(t)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("secs", secs)
    }

    fn header_style(&self) -> ProgressStyle {
        // The header counts from the start of the command, not of the bar.
        let started = self.started;
        let t = if self.color {
            "{spinner:.green} {msg:.bold} {prefix}  {total}"
        } else {
            "{spinner} {msg} {prefix}  {total}"
        };
        ProgressStyle::with_template(t)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "total",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}s", started.elapsed().as_secs_f64());
                },
            )
    }

    fn println(&self, line: &str) {
        let _ = self.bars.println(line);
    }
}

impl ProgressSink for Tty {
    fn event(&self, event: &Event) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        match event {
            Event::Steps { total } => {
                st.board.steps(*total);
                let header = st.header.get_or_insert_with(|| {
                    let bar = self.bars.insert(0, ProgressBar::new_spinner());
                    bar.set_style(self.header_style());
                    bar.set_message("building");
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                header.set_prefix(st.board.counts());
            }
            Event::Start {
                id,
                name,
                parent,
                step,
            } => {
                st.board.start(*id, name, *parent, *step);
                let root = st.board.root(*id);
                if root == *id {
                    let bar = self.bars.add(ProgressBar::new_spinner());
                    bar.set_style(self.task_style());
                    bar.set_message(name.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    st.running.insert(*id, bar);
                } else if let Some(bar) = st.running.get(&root) {
                    bar.set_message(format!("{}  · {name}", st.board.name(root)));
                }
            }
            Event::Log { id, line } => {
                let root = st.board.root(*id);
                if let Some(bar) = st.running.get(&root) {
                    bar.set_message(format!("{}  {}", st.board.name(root), truncate(line, 60)));
                }
            }
            Event::Bytes { id, done, total } => {
                st.board.bytes(*id, *done);
                let root = st.board.root(*id);
                if let Some(bar) = st.running.get(&root) {
                    let of = total
                        .map(|t| format!(" / {}", human_bytes(t)))
                        .unwrap_or_default();
                    let msg = if root == *id {
                        let rate = *done as f64 / bar.elapsed().as_secs_f64().max(0.001);
                        format!(
                            "{}  {}{of}  {}/s",
                            st.board.name(root),
                            human_bytes(*done),
                            human_bytes(rate as u64)
                        )
                    } else {
                        format!(
                            "{}  · {} {}{of}",
                            st.board.name(root),
                            st.board.name(*id),
                            human_bytes(*done)
                        )
                    };
                    bar.set_message(msg);
                }
            }
            Event::Finish {
                id,
                status,
                seconds,
            } => {
                if let Some(line) = st.board.finish(*id, status, *seconds) {
                    if let Some(bar) = st.running.remove(id) {
                        bar.finish_and_clear();
                    }
                    self.println(&line);
                    if let Some(h) = &st.header {
                        h.set_prefix(st.board.counts());
                    }
                }
            }
            Event::Message {
                level: Level::Info,
                text,
            } => self.println(text),
            Event::Message {
                level: Level::Warn,
                text,
            } => self.println(&warning(text, self.color)),
            // The CLI prints the error itself.
            Event::Message {
                level: Level::Error,
                ..
            } => {}
            Event::Result(o) => {
                if let Some(h) = st.header.take() {
                    h.finish_and_clear();
                }
                self.println(&closing_line(o));
            }
        }
    }
}

/// `s` cut to `max` characters, `…` marking the cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
