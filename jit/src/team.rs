//! Layer-by-layer execution on several threads, for small batches: every
//! layer's work items are shared out between the threads, and no thread
//! starts a layer before all have finished the one before.
//!
//! A fork-join per layer through a work-stealing pool costs a wake-up and
//! a join per layer (about 60 of them per ShuffleNet image), and threads
//! started per run land on a busy core first; here a [`Team`] of threads
//! lives as long as the model, each thread runs the whole layer loop
//! itself, claims chunks of each layer from an atomic counter (so a thread
//! the machine slows down takes fewer) and waits at a per-layer counter of
//! finished items.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Spins of a thread waiting for the others inside a run, before it
/// starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 20_000;

/// How long an idle worker watches for the next run before it sleeps
/// (runs in a loop then start without a wake-up).
const IDLE_SPIN: Duration = Duration::from_millis(2);

/// A job: called once on every thread with the thread's index.
type Job = dyn Fn(usize) + Sync;

/// Threads that run jobs together with the caller.
pub(crate) struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    /// Bumped for every job (and to stop).
    epoch: AtomicU64,
    /// The current job, valid from its epoch's bump until every worker
    /// has counted itself in `finished`.
    job: UnsafeCell<Option<*const Job>>,
    finished: AtomicUsize,
    stop: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread that owns the `Team` (in
// `run`, while no worker reads it: all have finished the previous job) and
// read by workers only after they see the new epoch (Release/Acquire).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Team {
    /// A team of `threads` threads in all: the caller and `threads - 1`
    /// workers.
    pub(crate) fn new(threads: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            finished: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::new();
        for index in 1..threads.max(1) {
            let mine = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("shufflekit-jit-{index}"))
                .spawn(move || worker(&mine, index));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    let team = Team { shared, workers };
                    drop(team);
                    return Err(e);
                }
            }
        }
        Ok(Team { shared, workers })
    }

    /// Threads in the team, the caller's included.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `job(i)` on every thread `i` of the team (0 is the caller)
    /// and returns when all have returned.
    pub(crate) fn run(&mut self, job: &(dyn Fn(usize) + Sync)) {
        let shared = &*self.shared;
        shared.finished.store(0, Ordering::Relaxed);
        let ptr: *const (dyn Fn(usize) + Sync + '_) = job;
        // SAFETY: no worker reads `job` now (all counted themselves in
        // `finished` for the previous job, or there was none), and the
        // pointer (its lifetime erased) is used only until they count
        // themselves again below, while `job` is borrowed by this call.
        unsafe {
            *shared.job.get() = Some(std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const Job,
            >(ptr));
        }
        {
            let _guard = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.epoch.fetch_add(1, Ordering::Release);
        }
        shared.wake.notify_all();
        job(0);
        let mut spins = 0u32;
        while shared.finished.load(Ordering::Acquire) < self.workers.len() {
            wait_a_little(&mut spins);
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _guard = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.epoch.fetch_add(1, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Watch for the next job, then sleep until it comes.
        let idle = Instant::now();
        let mut epoch = shared.epoch.load(Ordering::Acquire);
        while epoch == seen && idle.elapsed() < IDLE_SPIN {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            epoch = shared.epoch.load(Ordering::Acquire);
        }
        if epoch == seen {
            let mut guard = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            while shared.epoch.load(Ordering::Acquire) == seen {
                guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            epoch = shared.epoch.load(Ordering::Acquire);
        }
        seen = epoch;
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the epoch was bumped after the job was stored, and the
        // job stays valid until this thread counts itself in `finished`.
        if let Some(job) = unsafe { *shared.job.get() } {
            unsafe { (*job)(index) };
        }
        shared.finished.fetch_add(1, Ordering::Release);
    }
}

fn wait_a_little(spins: &mut u32) {
    if *spins < SPINS_BEFORE_YIELD {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Runs `run(layer, lo, hi)` over items `0..items[layer]` of every layer in
/// order, on the team's threads (or on the caller alone without a team).
/// Items of one layer must be independent. With `times`, the calling
/// thread records each layer's wall time (its share plus the wait for the
/// others).
pub(crate) fn run_layers(
    team: Option<&mut Team>,
    items: &[usize],
    run: &(dyn Fn(usize, usize, usize) + Sync),
    times: Option<&mut Vec<Duration>>,
) {
    let threads = team.as_ref().map_or(1, |t| t.threads());
    let claimed: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
    let done: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
    let times = Mutex::new(times);
    let work = |me: usize| {
        let mut times = if me == 0 { times.try_lock().ok() } else { None };
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
                wait_a_little(&mut spins);
            }
            if let Some(Some(t)) = times.as_deref_mut() {
                t.push(start.elapsed());
            }
        }
    };
    match team {
        Some(team) => team.run(&work),
        None => work(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_and_layers_run_in_order() {
        let items = [5, 1, 0, 17, 3];
        for threads in 1..4 {
            let mut team = Team::new(threads).unwrap();
            // Several runs on the same team.
            for _ in 0..3 {
                let log = Mutex::new(Vec::new());
                let mut times = Vec::new();
                run_layers(
                    (threads > 1).then_some(&mut team),
                    &items,
                    &|layer, lo, hi| {
                        log.lock().unwrap().extend((lo..hi).map(|i| (layer, i)));
                    },
                    Some(&mut times),
                );
                assert_eq!(times.len(), items.len());
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

    #[test]
    fn a_sleeping_team_wakes_up() {
        let mut team = Team::new(2).unwrap();
        std::thread::sleep(IDLE_SPIN * 3);
        let count = AtomicUsize::new(0);
        run_layers(
            Some(&mut team),
            &[64],
            &|_, lo, hi| {
                count.fetch_add(hi - lo, Ordering::Relaxed);
            },
            None,
        );
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
