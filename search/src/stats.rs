//! The statistics of trained accuracy: mean and Student-t 95% interval over
//! seeds, Spearman's rank correlation, and a seeded percentile bootstrap of
//! it. The t quantile comes from `statrs`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The two-sided confidence level of every interval here.
pub const CONFIDENCE: f64 = 0.95;

/// Resamples of [`bootstrap_spearman`] in reports.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The `p` quantile of Student's t distribution with `df` degrees of
/// freedom (`None` for `df < 1` or `p` outside (0, 1)).
pub fn t_quantile(p: f64, df: usize) -> Option<f64> {
    if df == 0 || !(p > 0.0 && p < 1.0) {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, df as f64).ok()?;
    Some(t.inverse_cdf(p))
}

/// The mean of some measurements (one per seed) and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanInterval {
    /// How many values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (`n - 1` in the denominator); `None` for
    /// one value.
    pub sd: Option<f64>,
    /// Half the width of the interval, `t(0.975, n-1) * sd / sqrt(n)`;
    /// `None` for one value (no interval can be given).
    pub half_width: Option<f64>,
}

impl MeanInterval {
    /// The mean and Student-t interval of `values` (`None` when empty or
    /// not all finite).
    pub fn of(values: &[f64]) -> Option<MeanInterval> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Some(MeanInterval {
                n,
                mean,
                sd: None,
                half_width: None,
            });
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        let t = t_quantile(0.5 + CONFIDENCE / 2.0, n - 1)?;
        Some(MeanInterval {
            n,
            mean,
            sd: Some(sd),
            half_width: Some(t * sd / (n as f64).sqrt()),
        })
    }

    /// The interval's ends (the mean twice for one value).
    pub fn bounds(&self) -> (f64, f64) {
        let h = self.half_width.unwrap_or(0.0);
        (self.mean - h, self.mean + h)
    }

    /// Whether the two intervals share a point. Without intervals (one
    /// value each) only equal means overlap.
    pub fn overlaps(&self, other: &MeanInterval) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        a0 <= b1 && b0 <= a1
    }

    /// `97.12 ± 0.35` (or `97.12` with one value).
    pub fn display(&self, decimals: usize) -> String {
        match self.half_width {
            Some(h) => format!("{:.*} ± {:.*}", decimals, self.mean, decimals, h),
            None => format!("{:.*}", decimals, self.mean),
        }
    }
}

/// Average ranks (1-based; tied values share the mean of their ranks).
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut r = vec![0.0; values.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && values[idx[j + 1]] == values[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of paired values (the Pearson correlation
/// of average ranks); `None` with fewer than 3 pairs or a constant side.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let a = ranks(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let b = ranks(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// A percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInterval {
    /// The statistic on the data itself.
    pub estimate: f64,
    /// The 2.5th percentile of the resampled statistic.
    pub low: f64,
    /// The 97.5th percentile.
    pub high: f64,
    /// Resamples drawn.
    pub resamples: usize,
    /// Resamples where the statistic was defined (a resample of tied or
    /// repeated pairs can have a constant side); the percentiles are over
    /// these.
    pub defined: usize,
    /// The seed of the resampling.
    pub seed: u64,
}

/// The `q` quantile of sorted values, interpolated linearly between order
/// statistics (numpy's default).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Spearman's correlation with a percentile bootstrap 95% interval: the
/// pairs are resampled with replacement `resamples` times from a ChaCha8
/// stream of `seed`. `None` when the correlation itself is undefined or no
/// resample gives a defined one.
pub fn bootstrap_spearman(
    pairs: &[(f64, f64)],
    resamples: usize,
    seed: u64,
) -> Option<BootstrapInterval> {
    let estimate = spearman(pairs)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples);
    let mut sample = Vec::with_capacity(pairs.len());
    for _ in 0..resamples {
        sample.clear();
        sample.extend((0..pairs.len()).map(|_| pairs[rng.random_range(0..pairs.len())]));
        if let Some(r) = spearman(&sample) {
            stats.push(r);
        }
    }
    if stats.is_empty() {
        return None;
    }
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(BootstrapInterval {
        estimate,
        low: quantile_sorted(&stats, tail),
        high: quantile_sorted(&stats, 1.0 - tail),
        resamples,
        defined: stats.len(),
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        // scipy.stats.t.ppf(0.975, df)
        for (df, want) in [
            (1, 12.706204736174698),
            (2, 4.302652729749464),
            (9, 2.2621571628540993),
            (30, 2.0422724563012373),
        ] {
            let got = t_quantile(0.975, df).unwrap();
            assert!((got - want).abs() < 1e-6, "df {df}: {got} vs {want}");
        }
        assert!(t_quantile(0.975, 0).is_none());
        assert!(t_quantile(1.0, 3).is_none());
    }

    #[test]
    fn mean_interval_of_known_values() {
        // mean 2, sd 1, n 3: 4.302653 / sqrt(3) = 2.484138
        let m = MeanInterval::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m.n, 3);
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.sd.unwrap() - 1.0).abs() < 1e-12);
        assert!((m.half_width.unwrap() - 2.484138).abs() < 1e-5, "{m:?}");
        assert_eq!(m.display(2), "2.00 ± 2.48");
        let one = MeanInterval::of(&[97.5]).unwrap();
        assert_eq!((one.half_width, one.sd), (None, None));
        assert_eq!(one.display(1), "97.5");
        assert!(MeanInterval::of(&[]).is_none());
        assert!(MeanInterval::of(&[1.0, f64::NAN]).is_none());
        // Overlap: [1, 3] ± 2.48 reaches 4.48; a single 4.4 is inside.
        assert!(m.overlaps(&MeanInterval::of(&[4.4]).unwrap()));
        assert!(!m.overlaps(&MeanInterval::of(&[4.5]).unwrap()));
        assert!(one.overlaps(&MeanInterval::of(&[97.5]).unwrap()));
        assert!(!one.overlaps(&MeanInterval::of(&[97.6]).unwrap()));
    }

    #[test]
    fn spearman_of_known_rankings() {
        let up = [(1.0, 10.0), (2.0, 20.0), (3.0, 25.0), (4.0, 40.0)];
        assert!((spearman(&up).unwrap() - 1.0).abs() < 1e-12);
        let down = [(1.0, 4.0), (2.0, 3.0), (3.0, 2.0), (4.0, 1.0)];
        assert!((spearman(&down).unwrap() + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) = 0.8
        let mixed = [(1.0, 2.0), (2.0, 1.0), (3.0, 4.0), (4.0, 3.0), (5.0, 5.0)];
        assert!((spearman(&mixed).unwrap() - 0.8).abs() < 1e-12);
        // Ties: spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9486832980505138
        let ties = [(1.0, 1.0), (2.0, 2.0), (2.0, 3.0), (3.0, 4.0)];
        assert!((spearman(&ties).unwrap() - 0.9486832980505138).abs() < 1e-12);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!(spearman(&up[..2]).is_none());
        assert!(spearman(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
    }

    /// 40 pairs whose true rank correlation is high but not perfect: y is
    /// x plus a deterministic zig-zag.
    fn noisy_pairs() -> Vec<(f64, f64)> {
        (0..40)
            .map(|i| {
                let x = i as f64;
                (x, x + 12.0 * ((i * 7 % 11) as f64 - 5.0))
            })
            .collect()
    }

    #[test]
    fn the_bootstrap_interval_is_stable_and_holds_the_estimate() {
        let pairs = noisy_pairs();
        let rho = spearman(&pairs).unwrap();
        let a = bootstrap_spearman(&pairs, BOOTSTRAP_RESAMPLES, 7).unwrap();
        assert_eq!(a.estimate, rho);
        assert!(a.low < rho && rho < a.high, "{a:?}");
        assert!(a.low > 0.0 && a.high <= 1.0, "{a:?}");
        assert_eq!(a.defined, BOOTSTRAP_RESAMPLES);
        // The same seed gives the same interval; another seed a close one.
        assert_eq!(bootstrap_spearman(&pairs, BOOTSTRAP_RESAMPLES, 7), Some(a));
        let b = bootstrap_spearman(&pairs, BOOTSTRAP_RESAMPLES, 8).unwrap();
        assert!(
            (a.low - b.low).abs() < 0.05 && (a.high - b.high).abs() < 0.05,
            "{a:?} {b:?}"
        );
        // Perfectly ordered data: every defined resample is 1.
        let up: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64)).collect();
        let p = bootstrap_spearman(&up, 500, 1).unwrap();
        assert_eq!((p.low, p.high), (1.0, 1.0));
        assert!(bootstrap_spearman(&up[..2], 100, 1).is_none());
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) = [1.075, 3.925]
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile_sorted(&s, 0.025) - 1.075).abs() < 1e-12);
        assert!((quantile_sorted(&s, 0.975) - 3.925).abs() < 1e-12);
    }
}
