//! Per-op wall-clock timers of the training step, for finding where the
//! time goes (`perf` does not run on every host here). Off unless the
//! environment variable `SHUFFLEKIT_TRAIN_PROFILE` is set, so a normal run
//! pays one cached flag check per op. Times are summed per label (op kind,
//! forward or backward) until [`report`] takes them.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that turns the timers on.
pub const ENV: &str = "SHUFFLEKIT_TRAIN_PROFILE";

static ON: OnceLock<bool> = OnceLock::new();
static TOTALS: Mutex<BTreeMap<String, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Whether the timers are on (read once from the environment).
pub fn enabled() -> bool {
    *ON.get_or_init(|| std::env::var_os(ENV).is_some())
}

/// Adds `elapsed` to `label`'s total.
pub fn record(label: &str, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let entry = totals.entry(label.to_string()).or_default();
    entry.0 += elapsed;
    entry.1 += 1;
}

/// A started timer, when the timers are on.
pub(crate) fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records the time since `started` (from [`start`]) under `label`.
pub(crate) fn stop(started: Option<Instant>, label: impl FnOnce() -> String) {
    if let Some(t) = started {
        record(&label(), t.elapsed());
    }
}

/// The totals so far as a table (largest first, with each label's share
/// of the sum), and resets them.
pub fn report() -> String {
    let totals = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()));
    let sum: f64 = totals.values().map(|v| v.0.as_secs_f64()).sum();
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let mut out = format!("{:<40} {:>10} {:>6} {:>8}\n", "op", "ms", "%", "calls");
    for (label, (time, calls)) in rows {
        let ms = time.as_secs_f64() * 1e3;
        let share = if sum > 0.0 {
            100.0 * time.as_secs_f64() / sum
        } else {
            0.0
        };
        out.push_str(&format!("{label:<40} {ms:>10.1} {share:>6.1} {calls:>8}\n"));
    }
    out
}
