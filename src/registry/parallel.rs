//! Running blob transfers a few at a time on scoped threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::Result;

/// Runs `f` on every item with up to `workers` threads; results keep the
/// items' order. Stops handing out work after the first error and returns it.
pub fn for_each<I: Sync, T: Send>(
    workers: usize,
    items: &[I],
    f: impl Fn(&I) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(items.len()) {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    match f(item) {
                        Ok(v) => results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(v),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_err
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_reports_errors() {
        let items: Vec<u32> = (0..50).collect();
        let out = for_each(4, &items, |x| Ok(x * 2)).unwrap();
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        let err = for_each(4, &items, |x| {
            if *x == 7 {
                anyhow::bail!("seven")
            }
            Ok(*x)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "seven");
        assert!(
            for_each(4, &Vec::<u32>::new(), |x| Ok(*x))
                .unwrap()
                .is_empty()
        );
    }
}
