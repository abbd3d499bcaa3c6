//! Layer-by-layer execution on several threads, for small batches: every
//! layer's work items are shared out between the threads, and no thread
//! starts a layer before all have finished the one before.
//!
//! A fork-join per layer through a work-stealing pool costs a wake-up and
//! a join per layer (about 60 of them per ShuffleNet image); here each
//! thread runs the whole layer loop itself, claims chunks of each layer
//! from an atomic counter (so a thread the machine slows down takes fewer)
//! and waits at a per-layer counter of finished items, spinning briefly
//! and then yielding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Spins before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 20_000;

/// Runs `run(layer, lo, hi)` over items `0..items[layer]` of every layer in
/// order, on `threads` threads (the caller's included). Items of one layer
/// must be independent. With `times`, the calling thread records each
/// layer's wall time (its share plus the wait for the others).
pub(crate) fn run_layers(
    threads: usize,
    items: &[usize],
    run: &(dyn Fn(usize, usize, usize) + Sync),
    times: Option<&mut Vec<Duration>>,
) {
    let claimed: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
    let done: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
    let work = |mut times: Option<&mut Vec<Duration>>| {
        for (layer, &n) in items.iter().enumerate() {
            let start = Instant::now();
            // A few chunks per thread, so that a slowed-down thread's share
            // is picked up by the others.
            let chunk = n.div_ceil(4 * threads).max(1);
            let mut mine = 0;
            loop {
                let lo = claimed[layer].fetch_add(chunk, Ordering::Relaxed);
                if lo >= n {
                    break;
                }
                let hi = (lo + chunk).min(n);
                run(layer, lo, hi);
                mine += hi - lo;
            }
            // Release: this thread's outputs are visible to whoever sees
            // the count; Acquire below: and to this thread before it reads
            // them in the next layer.
            if mine > 0 {
                done[layer].fetch_add(mine, Ordering::Release);
            }
            let mut spins = 0u32;
            while done[layer].load(Ordering::Acquire) < n {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if let Some(t) = times.as_deref_mut() {
                t.push(start.elapsed());
            }
        }
    };
    if threads <= 1 {
        work(times);
        return;
    }
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| work(None));
        }
        work(times);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_item_runs_once_and_layers_run_in_order() {
        let items = [5, 1, 0, 17, 3];
        for threads in 1..4 {
            let log = Mutex::new(Vec::new());
            run_layers(
                threads,
                &items,
                &|layer, lo, hi| {
                    log.lock().unwrap().extend((lo..hi).map(|i| (layer, i)));
                },
                None,
            );
            let log = log.into_inner().unwrap();
            // Layers never interleave: the log is sorted by layer.
            assert!(log.windows(2).all(|w| w[0].0 <= w[1].0), "{log:?}");
            let mut sorted = log.clone();
            sorted.sort();
            let expected: Vec<(usize, usize)> = items
                .iter()
                .enumerate()
                .flat_map(|(l, &n)| (0..n).map(move |i| (l, i)))
                .collect();
            assert_eq!(sorted, expected);
        }
    }
}
