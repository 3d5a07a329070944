//! What the package sets of one build share.
//!
//! - **Reads.** A `.deb` in two sets (an auto build's runtime set is
//!   mostly packages of its build set: libc6, python3.13, openssl…) is
//!   downloaded and decompressed once: the first set to want it claims it,
//!   and the other takes its entries (their contents stay in the first
//!   set's spool files, which live as long as an entry refers to them).
//!   A read is the same whoever does it, so each set's layers are the
//!   bytes they would be alone.
//! - **Turns.** The sets write their layers in the order the build needs
//!   them (rank 0 first): a later set reads and downloads beside the
//!   first, but compresses its layers once the earlier sets are composed,
//!   at a lower CPU priority (nice +10, its threads only): on a small
//!   machine the first stage's base and then its steps (pip, npm) are not
//!   slowed by a base needed only later, which takes the idle CPU.
//!
//! Everything is held until the last set is composed, then dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::deb::Deb;

/// How much a later set lowers the CPU priority of its layer writers
/// (nice increment): on a small machine they then use what the running
/// stage's steps leave idle (pip waiting on the network) instead of
/// slowing them.
const LATER_NICE: i32 = 10;

/// A package's read as the sets share it: its sha256, and whether the
/// docs were kept (a filtered read is another read).
type Key = (String, bool);

enum Slot {
    /// A set claimed it and is downloading or reading it.
    Reading,
    Read(Deb),
    /// Handed to the other set: not held twice (a third set reads it again).
    Taken,
    /// The set that claimed it stopped first (an error elsewhere).
    Abandoned,
}

/// The reads and turns of one build's package sets.
pub struct SharedReads {
    slots: Mutex<HashMap<Key, Slot>>,
    read: Condvar,
    /// The ranks still composing.
    composing: Mutex<BTreeSet<usize>>,
    turn: Condvar,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads")
            .field("composing", &*lock(&self.composing))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a set reads a package itself or waits for another's read.
pub enum Claim<'a> {
    /// This set reads it, and hands the read over with [`Claimed::done`].
    Mine(Claimed<'a>),
    /// Another set reads (or read) it: [`SharedReads::wait`].
    Theirs,
}

/// A claimed read; dropped without [`Claimed::done`], it is abandoned and
/// a waiting set reads the package itself.
pub struct Claimed<'a> {
    shared: &'a SharedReads,
    key: Option<Key>,
}

impl Claimed<'_> {
    pub fn done(mut self, deb: &Deb) {
        if let Some(k) = self.key.take() {
            lock(&self.shared.slots).insert(k, Slot::Read(deb.clone()));
            self.shared.read.notify_all();
        }
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            lock(&self.shared.slots).insert(k, Slot::Abandoned);
            self.shared.read.notify_all();
        }
    }
}

/// A set's turn: composing until dropped.
pub struct Turn<'a> {
    shared: &'a SharedReads,
    rank: usize,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut c = lock(&self.shared.composing);
        c.remove(&self.rank);
        if c.is_empty() {
            // No set will ask for a read any more.
            lock(&self.shared.slots).clear();
        }
        self.shared.turn.notify_all();
    }
}

impl SharedReads {
    /// For `sets` package sets, ranked `0..sets` in the order the build
    /// needs them.
    pub fn new(sets: usize) -> SharedReads {
        SharedReads {
            slots: Mutex::new(HashMap::new()),
            read: Condvar::new(),
            composing: Mutex::new((0..sets).collect()),
            turn: Condvar::new(),
        }
    }

    /// Set `rank` composes until the turn is dropped (whether it composed,
    /// found its layers cached or failed): the later ranks wait for it.
    pub fn turn(&self, rank: usize) -> Turn<'_> {
        Turn { shared: self, rank }
    }

    /// Waits until every set ranked before `rank` is composed; then a
    /// later set lowers its thread's CPU priority (inherited by the layer
    /// writers it starts): it is needed only after the first stage's
    /// steps, which run meanwhile and go first.
    pub fn wait_turn(&self, rank: usize) {
        let c = lock(&self.composing);
        let _c = self
            .turn
            .wait_while(c, |c| c.range(..rank).next().is_some())
            .unwrap_or_else(|e| e.into_inner());
        if rank > 0 {
            // SAFETY: nice takes no pointers; glibc's nice is setpriority
            // on the calling thread (Linux threads are tasks), which ends
            // with the compose. A failure leaves the priority as it was.
            unsafe {
                libc::nice(LATER_NICE);
            }
        }
    }

    /// Claims the read of the package with this sha256, unless another set
    /// has (an abandoned read is claimed again).
    pub fn claim(&self, sha256: &str, keep_docs: bool) -> Claim<'_> {
        let key = (sha256.to_string(), keep_docs);
        let mut slots = lock(&self.slots);
        match slots.get(&key) {
            Some(Slot::Reading | Slot::Read(_)) => Claim::Theirs,
            Some(Slot::Taken | Slot::Abandoned) | None => {
                slots.insert(key.clone(), Slot::Reading);
                Claim::Mine(Claimed {
                    shared: self,
                    key: Some(key),
                })
            }
        }
    }

    /// Another set's read of a package it claimed, once done, handed over
    /// (the entries are not kept here as well); `None` when it abandoned
    /// the read or handed it to a third set (the caller reads the package
    /// itself).
    pub fn wait(&self, sha256: &str, keep_docs: bool) -> Option<Deb> {
        let key = (sha256.to_string(), keep_docs);
        let slots = lock(&self.slots);
        let mut slots = self
            .read
            .wait_while(slots, |s| matches!(s.get(&key), Some(Slot::Reading)))
            .unwrap_or_else(|e| e.into_inner());
        if !matches!(slots.get(&key), Some(Slot::Read(_))) {
            return None;
        }
        match slots.insert(key, Slot::Taken) {
            Some(Slot::Read(d)) => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn deb(name: &str) -> Deb {
        let bytes = super::super::deb::tests::make_deb(
            &format!("Package: {name}\nVersion: 1\nArchitecture: amd64\n"),
            &[("./usr/bin/x", b"x")],
        );
        super::super::deb::read(&bytes, name).unwrap()
    }

    #[test]
    fn a_read_is_claimed_once_and_shared() {
        let s = SharedReads::new(2);
        let Claim::Mine(c) = s.claim("aa", false) else {
            panic!("the first claim is the claimer's")
        };
        assert!(matches!(s.claim("aa", false), Claim::Theirs));
        // Kept docs make another read.
        assert!(matches!(s.claim("aa", true), Claim::Mine(_)));
        c.done(&deb("libc6"));
        let d = s.wait("aa", false).unwrap();
        assert_eq!(d.control.get("Package").as_deref(), Some("libc6"));
        // Handed over, not kept: a third set reads it itself.
        assert!(s.wait("aa", false).is_none());
        assert!(matches!(s.claim("aa", false), Claim::Mine(_)));
    }

    #[test]
    fn an_abandoned_read_is_claimed_again() {
        let s = Arc::new(SharedReads::new(2));
        let Claim::Mine(c) = s.claim("bb", false) else {
            panic!()
        };
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait("bb", false).is_none())
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        assert!(waiter.join().unwrap(), "the waiter learns it was abandoned");
        assert!(matches!(s.claim("bb", false), Claim::Mine(_)));
    }

    #[test]
    fn a_later_set_waits_for_the_earlier_ones_and_the_reads_go_with_the_last() {
        let s = Arc::new(SharedReads::new(2));
        let first = s.turn(0);
        let Claim::Mine(c) = s.claim("cc", false) else {
            panic!()
        };
        c.done(&deb("gcc"));
        let (tx, rx) = std::sync::mpsc::channel();
        let later = {
            let s = s.clone();
            std::thread::spawn(move || {
                let _t = s.turn(1);
                s.wait_turn(1);
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        later.join().unwrap();
        // Every set composed: the reads are dropped.
        assert!(lock(&s.slots).is_empty());
        // Rank 0 never waits.
        s.wait_turn(0);
    }
}
