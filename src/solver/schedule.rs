//! When each part of a solve starts: a stage as soon as its own base is
//! ready and the stages it stands on and reads are built, not when every
//! base of the graph is.
//!
//! Composing a Debian package base takes seconds cold (an auto build's
//! build set: index, ~150 packages unpacked, their layers), and the
//! runtime stage's set composes beside it; with the solver waiting for
//! every set, the build stage's steps (pip, npm, go build) waited for the
//! runtime set too. Here each [`Job`] runs in its own thread as soon as
//! the jobs it needs succeeded, so the build stage runs while the runtime
//! set still composes, and the runtime stage starts when its set and the
//! stages it copies from are done.
//!
//! The schedule is bookkeeping only: the solver says what a job does
//! (compose a base, key and build a stage) and keeps their results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;

use anyhow::bail;

use crate::Result;
use crate::graph::{Base, Graph, deps};

/// One unit of a solve's work.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Job {
    /// Composing the package base with this reference
    /// ([`crate::graph::PackageSet::reference`]).
    Base(String),
    /// Keying and building the stage with this index.
    Stage(usize),
}

/// The jobs of a solve and what each needs first.
#[derive(Debug)]
pub(super) struct Schedule {
    needs: BTreeMap<Job, BTreeSet<Job>>,
}

impl Schedule {
    /// The jobs building the stages of `order` (dependencies first, as
    /// [`deps::build_order`] gives them): each stage needs its package
    /// base, if it has one, and the stages [`deps::direct_deps`] names.
    pub fn new(g: &Graph, order: &[usize]) -> Schedule {
        let mut needs: BTreeMap<Job, BTreeSet<Job>> = BTreeMap::new();
        for &i in order {
            let mut n: BTreeSet<Job> = deps::direct_deps(g, i)
                .into_iter()
                .map(Job::Stage)
                .collect();
            if let Some(Base::Packages(p)) = g.stages.get(i).map(|s| &s.base) {
                let base = Job::Base(p.reference());
                needs.entry(base.clone()).or_default();
                n.insert(base);
            }
            needs.insert(Job::Stage(i), n);
        }
        Schedule { needs }
    }

    /// The schedule without the stages `skipped` (not built: their readers
    /// are cached, [`super::lazy`]): no job builds them, none waits for
    /// them, and a base only they stand on is not composed.
    pub fn without(mut self, skipped: &BTreeSet<usize>) -> Schedule {
        for &i in skipped {
            self.needs.remove(&Job::Stage(i));
        }
        for needs in self.needs.values_mut() {
            needs.retain(|n| !matches!(n, Job::Stage(i) if skipped.contains(i)));
        }
        let wanted: BTreeSet<Job> = self.needs.values().flatten().cloned().collect();
        self.needs
            .retain(|j, _| matches!(j, Job::Stage(_)) || wanted.contains(j));
        self
    }

    /// Runs every job with `job`, each in its own thread once the jobs it
    /// needs succeeded. After a failure no job starts; the ones running
    /// finish, and the first error is returned.
    pub fn run(&self, job: impl Fn(&Job) -> Result<()> + Sync) -> Result<()> {
        let (tx, rx) = mpsc::channel::<(Job, Result<()>)>();
        let mut started: BTreeSet<&Job> = BTreeSet::new();
        let mut done: BTreeSet<Job> = BTreeSet::new();
        let mut running = 0usize;
        let mut failed: Option<anyhow::Error> = None;
        std::thread::scope(|s| {
            loop {
                if failed.is_none() {
                    for (j, needs) in &self.needs {
                        if started.contains(j) || !needs.iter().all(|n| done.contains(n)) {
                            continue;
                        }
                        started.insert(j);
                        running += 1;
                        let report = Report {
                            tx: tx.clone(),
                            job: Some(j.clone()),
                        };
                        let job = &job;
                        s.spawn(move || {
                            let mut report = report;
                            let r = job(j);
                            report.send(r);
                        });
                    }
                }
                if running == 0 {
                    break;
                }
                // Every job reports once, even when it panics (`Report`).
                let Ok((j, r)) = rx.recv() else { break };
                running -= 1;
                match r {
                    Ok(()) => {
                        done.insert(j);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if done.len() < self.needs.len() {
            // deps::build_order refuses cycles first; this is its backstop.
            bail!("the build graph has a cycle between stages");
        }
        Ok(())
    }
}

/// A job's result on its way to [`Schedule::run`]'s loop; a job that
/// panics reports a failure as it unwinds, so the loop never waits for it
/// (the scope then passes the panic on).
struct Report {
    tx: mpsc::Sender<(Job, Result<()>)>,
    job: Option<Job>,
}

impl Report {
    fn send(&mut self, r: Result<()>) {
        if let Some(j) = self.job.take() {
            let _ = self.tx.send((j, r));
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(j) = &self.job {
            let what = format!("{j:?} panicked");
            self.send(Err(anyhow::anyhow!(what)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Copy, CopyFrom, CopyItem, Op, PackageSet, Stage, Step};
    use crate::platform::Platform;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    fn packages(name: &str) -> Base {
        Base::Packages(PackageSet {
            suite: "trixie".into(),
            packages: vec![name.into()],
            base: Default::default(),
            lock: None,
            extra_ca: Vec::new(),
        })
    }

    fn copy_from(stage: usize) -> Step {
        Step {
            op: Op::Copy(Copy::new(
                CopyFrom::Stage(stage),
                vec![CopyItem::Path("/opt/venv".into())],
                "/opt/venv",
            )),
            origin: None,
        }
    }

    /// An auto build's shape: a build stage on one package set, a runtime
    /// stage on another that copies from the build stage.
    fn auto_graph() -> Graph {
        let stage = |base, steps| Stage {
            name: None,
            base,
            platform: Platform::linux("amd64", None),
            steps,
            origin: None,
        };
        Graph {
            stages: vec![
                stage(packages("gcc"), vec![]),
                stage(packages("tini"), vec![copy_from(0)]),
            ],
            target: 1,
        }
    }

    fn base_of(g: &Graph, i: usize) -> Job {
        match &g.stages[i].base {
            Base::Packages(p) => Job::Base(p.reference()),
            _ => unreachable!(),
        }
    }

    /// Waits (at most 20 s) until `log` holds `what`.
    fn wait_for(log: &(Mutex<Vec<String>>, Condvar), what: &str) -> bool {
        let (m, cv) = log;
        let guard = m.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, Duration::from_secs(20), |l| {
                !l.iter().any(|x| x == what)
            })
            .unwrap();
        guard.iter().any(|x| x == what)
    }

    fn note(log: &(Mutex<Vec<String>>, Condvar), what: String) {
        log.0.lock().unwrap().push(what);
        log.1.notify_all();
    }

    /// The build stage is built while the runtime set still composes: the
    /// runtime set's job only ends once it saw the build stage built (with
    /// every set composed before any stage, it would wait in vain).
    #[test]
    fn a_skipped_stage_is_neither_built_nor_waited_for() {
        // build (on gcc's base) <- runtime (on tini's) copies from build.
        let g = auto_graph();
        let sched = Schedule::new(&g, &[0, 1]).without(&BTreeSet::from([0]));
        let jobs: BTreeSet<Job> = sched.needs.keys().cloned().collect();
        assert!(!jobs.contains(&Job::Stage(0)), "{jobs:?}");
        // The build stage's base is composed only for it: left out too.
        assert!(!jobs.contains(&base_of(&g, 0)), "{jobs:?}");
        assert_eq!(jobs.len(), 2, "{jobs:?}");
        let ran = Mutex::new(Vec::new());
        sched
            .run(|j| {
                ran.lock().unwrap().push(j.clone());
                Ok(())
            })
            .unwrap();
        assert!(ran.lock().unwrap().contains(&Job::Stage(1)));
    }

    #[test]
    fn a_stage_starts_when_its_own_base_is_ready() {
        let g = auto_graph();
        let (build_set, runtime_set) = (base_of(&g, 0), base_of(&g, 1));
        let log = (Mutex::new(Vec::new()), Condvar::new());
        let order = deps::build_order(&g, 1).unwrap();
        Schedule::new(&g, &order)
            .run(|j| {
                note(&log, format!("start {j:?}"));
                if *j == runtime_set {
                    anyhow::ensure!(
                        wait_for(&log, "end Stage(0)"),
                        "the build stage did not run while the runtime set composed"
                    );
                }
                if *j == Job::Stage(1) {
                    // Its set and the stage it copies from are done.
                    let l = log.0.lock().unwrap();
                    for need in [format!("end {runtime_set:?}"), "end Stage(0)".into()] {
                        anyhow::ensure!(l.contains(&need), "stage 1 started before {need}");
                    }
                }
                note(&log, format!("end {j:?}"));
                Ok(())
            })
            .unwrap();
        let l = log.0.into_inner().unwrap();
        let at = |s: String| l.iter().position(|x| *x == s).unwrap();
        assert!(at(format!("end {build_set:?}")) < at("start Stage(0)".into()));
        assert!(at("end Stage(0)".into()) < at(format!("end {runtime_set:?}")));
        assert_eq!(l.last().unwrap(), "end Stage(1)");
    }

    /// A failed job stops what needs it; the jobs already running finish,
    /// and the error is the job's own.
    #[test]
    fn a_failure_stops_the_jobs_that_need_it() {
        let g = auto_graph();
        let runtime_set = base_of(&g, 1);
        let ran = Mutex::new(Vec::new());
        let order = deps::build_order(&g, 1).unwrap();
        let e = Schedule::new(&g, &order)
            .run(|j| {
                ran.lock().unwrap().push(j.clone());
                if *j == runtime_set {
                    bail!("no such package: tini");
                }
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "no such package: tini");
        assert!(!ran.lock().unwrap().contains(&Job::Stage(1)));
    }

    /// A job that panics does not leave the schedule waiting for it.
    #[test]
    fn a_panicking_job_ends_the_run() {
        let g = auto_graph();
        let order = deps::build_order(&g, 1).unwrap();
        let r = std::panic::catch_unwind(|| {
            Schedule::new(&g, &order).run(|j| {
                if *j == Job::Stage(0) {
                    panic!("boom");
                }
                Ok(())
            })
        });
        assert!(r.is_err());
    }
}
