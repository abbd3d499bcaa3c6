//! Limits on the sizes users give on the command line, checked by the
//! argument parser before anything is allocated or started. Sizes that
//! scale memory (batches) are checked where they are allocated, with the
//! bytes they would need in the error.

/// The most threads one command starts (`--threads`, `--jobs`): far above
/// any machine's cores, far below what exhausts the process's thread and
/// stack limits.
pub(crate) const MAX_THREADS: i64 = 1024;

/// The most timed runs one measurement makes (`--iters`, `--latency-runs`):
/// their times are kept for percentiles.
pub(crate) const MAX_ITERS: i64 = 1_000_000;

/// A count between `min` and `max`, for a `usize` option.
fn count(text: &str, min: i64, max: i64) -> Result<usize, String> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is not in {min}..={max}"));
    }
    usize::try_from(n).map_err(|_| format!("{n} is not in {min}..={max}"))
}

/// Parses a thread or job count: 1 to [`MAX_THREADS`].
pub(crate) fn threads(text: &str) -> Result<usize, String> {
    count(text, 1, MAX_THREADS)
}

/// Parses a number of timed runs: 1 to [`MAX_ITERS`].
pub(crate) fn runs(text: &str) -> Result<usize, String> {
    count(text, 1, MAX_ITERS)
}

/// Parses a number of warm-up runs: 0 to [`MAX_ITERS`].
pub(crate) fn warmup(text: &str) -> Result<usize, String> {
    count(text, 0, MAX_ITERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outside_their_range_are_refused() {
        assert_eq!(threads("4"), Ok(4));
        assert_eq!(threads("0"), Err("0 is not in 1..=1024".into()));
        assert_eq!(threads("1025"), Err("1025 is not in 1..=1024".into()));
        assert_eq!(
            threads("99999999999999999999"),
            Err("`99999999999999999999` is not a whole number".into())
        );
        assert_eq!(warmup("0"), Ok(0));
        assert_eq!(runs("1000001"), Err("1000001 is not in 1..=1000000".into()));
    }
}
