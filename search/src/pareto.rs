//! Pareto fronts over named objectives, and the choice of one variant.

use serde::{Deserialize, Serialize};

use crate::evaluator::metric;
use crate::results::{Record, Status};
use crate::stats::MeanInterval;

/// Whether an objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// One objective: a metric and its direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objective {
    /// The metric name.
    pub metric: String,
    /// Its direction.
    pub direction: Direction,
}

impl Objective {
    /// An objective.
    pub fn new(metric: &str, direction: Direction) -> Self {
        Objective {
            metric: metric.to_string(),
            direction,
        }
    }

    /// Parses `metric:min` or `metric:max`.
    pub fn parse(text: &str) -> Option<Objective> {
        let (m, d) = text.split_once(':')?;
        let direction = match d.trim() {
            "min" => Direction::Min,
            "max" => Direction::Max,
            _ => return None,
        };
        (!m.trim().is_empty()).then(|| Objective::new(m.trim(), direction))
    }

    fn better_or_equal(&self, a: f64, b: f64) -> bool {
        match self.direction {
            Direction::Min => a <= b,
            Direction::Max => a >= b,
        }
    }
}

/// The default objectives for the metrics present in some records: cost
/// (min), the score (NASWOT max, else published error min) and latency
/// (min) when measured.
pub fn default_objectives(records: &[Record]) -> Vec<Objective> {
    let has = |m: &str| records.iter().any(|r| r.metric(m).is_some());
    let mut out = vec![Objective::new(metric::MFLOPS, Direction::Min)];
    if let Some(s) = primary_score(records) {
        out.push(s);
    }
    if has(metric::LATENCY_MS) {
        out.push(Objective::new(metric::LATENCY_MS, Direction::Min));
    }
    out
}

/// The score a variant is chosen by: the trained validation accuracy if
/// training ran (the test accuracy for results without a validation set),
/// else NASWOT, else the published error, else none.
pub fn primary_score(records: &[Record]) -> Option<Objective> {
    let has = |m: &str| records.iter().any(|r| r.metric(m).is_some());
    // A measured accuracy outranks a training-free guess, which outranks nothing.
    if has(crate::train::train_metric::VAL_ACCURACY) {
        Some(Objective::new(
            crate::train::train_metric::VAL_ACCURACY,
            Direction::Max,
        ))
    } else if has(crate::train::train_metric::ACCURACY) {
        Some(Objective::new(
            crate::train::train_metric::ACCURACY,
            Direction::Max,
        ))
    } else if has(metric::NASWOT) {
        Some(Objective::new(metric::NASWOT, Direction::Max))
    } else if has(metric::PAPER_ERROR) {
        Some(Objective::new(metric::PAPER_ERROR, Direction::Min))
    } else {
        None
    }
}

/// Indices (into `records`) of the feasible records no other feasible
/// record dominates on `objectives`. Records lacking an objective's metric
/// are left out. Sorted by the first objective.
pub fn pareto_front(records: &[Record], objectives: &[Objective]) -> Vec<usize> {
    let points: Vec<(usize, Vec<f64>)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Ok)
        .filter_map(|(i, r)| {
            let v: Option<Vec<f64>> = objectives.iter().map(|o| r.metric(&o.metric)).collect();
            v.map(|v| (i, v))
        })
        .collect();
    let dominates = |a: &[f64], b: &[f64]| {
        objectives
            .iter()
            .zip(a.iter().zip(b))
            .all(|(o, (x, y))| o.better_or_equal(*x, *y))
            && a != b
    };
    let mut front: Vec<usize> = points
        .iter()
        .filter(|(_, p)| !points.iter().any(|(_, q)| dominates(q, p)))
        .map(|(i, _)| *i)
        .collect();
    if let Some(first) = objectives.first() {
        front.sort_by(|&a, &b| {
            let x = records[a].metric(&first.metric).unwrap_or(0.0);
            let y = records[b].metric(&first.metric).unwrap_or(0.0);
            x.total_cmp(&y)
                .then(records[a].index.cmp(&records[b].index))
        });
    }
    front
}

/// The chosen variant: see [`choice`].
pub fn choose(records: &[Record]) -> Option<usize> {
    choice(records).map(|c| c.chosen)
}

/// The rule [`choice`] follows for trained accuracy, in words for reports.
pub const TRAINED_RULE: &str = "the feasible candidate with the best mean validation accuracy, unless a cheaper one (fewer multiply-adds) is tied with it: a candidate is tied when its 95% interval overlaps the best one's, or, without intervals (one seed), when its mean is equal; the cheapest tied candidate is chosen (then the lower index)";

/// How the chosen variant was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The chosen record's index.
    pub chosen: usize,
    /// The score it was chosen by (none: the costliest feasible one).
    pub score: Option<Objective>,
    /// With a trained accuracy: the comparison with the runner-up.
    pub trained: Option<TrainedChoice>,
}

/// The statistics behind a choice by trained accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedChoice {
    /// The record with the best mean (ties: cheaper, then lower index).
    pub best: usize,
    /// The second best by mean, if any.
    pub runner_up: Option<usize>,
    /// Whether the best one's interval and the runner-up's are disjoint
    /// (its lead is outside the intervals); `None` without a runner-up or
    /// without intervals.
    pub separated: Option<bool>,
    /// The records tied with the best (itself included), best first.
    pub tied: Vec<usize>,
    /// Whether the records carry intervals (more than one seed).
    pub intervals: bool,
}

/// The mean and interval of a metric of a record: the metric itself and
/// `<metric>_ci95` (its half-width, written with two or more seeds).
pub fn interval_of(r: &Record, metric: &str) -> Option<MeanInterval> {
    let mean = r.metric(metric)?;
    let half_width = r.metric(&format!("{metric}_ci95"));
    let n = r
        .metric(crate::train::train_metric::SEEDS)
        .map_or(1, |n| n as usize);
    Some(MeanInterval {
        n,
        mean,
        sd: None,
        half_width,
    })
}

/// The chosen variant. With a trained accuracy ([`primary_score`]): the
/// rule of [`TRAINED_RULE`]. With another score: the feasible record with
/// the best score (ties: lower cost, then lower index). Without a score:
/// the feasible record with the highest cost (the most capacity the budget
/// affords).
pub fn choice(records: &[Record]) -> Option<Choice> {
    let feasible = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Ok);
    let cost = |r: &Record| r.metric(metric::MFLOPS).unwrap_or(f64::INFINITY);
    // Trained candidates are compared on multiply-adds, the cost the tie rule names.
    let macs = |r: &Record| r.metric(metric::MACS).unwrap_or_else(|| cost(r));
    let Some(score) = primary_score(records) else {
        return feasible
            .max_by(|(i, a), (j, b)| {
                cost(a)
                    .total_cmp(&cost(b))
                    .then(records[*j].index.cmp(&records[*i].index))
            })
            .map(|(i, _)| Choice {
                chosen: i,
                score: None,
                trained: None,
            });
    };
    let trained = score.metric == crate::train::train_metric::VAL_ACCURACY
        || score.metric == crate::train::train_metric::ACCURACY;
    let mut ranked: Vec<(usize, f64)> = feasible
        .filter_map(|(i, r)| r.metric(&score.metric).map(|s| (i, s)))
        .collect();
    let tie_cost = |i: usize| {
        if trained {
            macs(&records[i])
        } else {
            cost(&records[i])
        }
    };
    ranked.sort_by(|(i, s), (j, t)| {
        let by_score = match score.direction {
            Direction::Max => t.total_cmp(s),
            Direction::Min => s.total_cmp(t),
        };
        by_score
            .then(tie_cost(*i).total_cmp(&tie_cost(*j)))
            .then(records[*i].index.cmp(&records[*j].index))
    });
    let &(best, _) = ranked.first()?;
    if !trained {
        return Some(Choice {
            chosen: best,
            score: Some(score),
            trained: None,
        });
    }
    let iv = |i: usize| interval_of(&records[i], &score.metric);
    let best_iv = iv(best)?;
    let intervals = ranked
        .iter()
        .any(|&(i, _)| iv(i).is_some_and(|m| m.half_width.is_some()));
    let tied: Vec<usize> = ranked
        .iter()
        .map(|&(i, _)| i)
        .filter(|&i| iv(i).is_some_and(|m| m.overlaps(&best_iv)))
        .collect();
    let runner_up = ranked.get(1).map(|&(i, _)| i);
    let separated = runner_up.and_then(|j| {
        let other = iv(j)?;
        (best_iv.half_width.is_some() && other.half_width.is_some())
            .then(|| !best_iv.overlaps(&other))
    });
    let chosen = tied
        .iter()
        .copied()
        .min_by(|&i, &j| {
            tie_cost(i)
                .total_cmp(&tie_cost(j))
                .then(records[i].index.cmp(&records[j].index))
        })
        .unwrap_or(best);
    Some(Choice {
        chosen,
        score: Some(score),
        trained: Some(TrainedChoice {
            best,
            runner_up,
            separated,
            tied,
            intervals,
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn record(index: u64, mflops: f64, naswot: f64, status: Status) -> Record {
        Record {
            index,
            id: format!("c{index}"),
            params: BTreeMap::new(),
            status,
            metrics: [
                ("mflops".to_string(), mflops),
                ("naswot".to_string(), naswot),
            ]
            .into_iter()
            .collect(),
            info: BTreeMap::new(),
            violations: Vec::new(),
            error: None,
            matched: None,
            seconds: 0.0,
        }
    }

    #[test]
    fn front_and_choice() {
        let records = vec![
            record(0, 10.0, 1.0, Status::Ok),
            record(1, 20.0, 3.0, Status::Ok),
            record(2, 30.0, 2.0, Status::Ok), // dominated by 1
            record(3, 40.0, 5.0, Status::Infeasible), // not feasible
            record(4, 20.0, 3.0, Status::Ok), // ties 1: both stay
        ];
        let objectives = default_objectives(&records);
        assert_eq!(objectives.len(), 2);
        assert_eq!(pareto_front(&records, &objectives), vec![0, 1, 4]);
        // Best score, ties to the cheaper, then the lower index.
        assert_eq!(choose(&records), Some(1));
        assert_eq!(
            Objective::parse("latency_ms:min"),
            Some(Objective::new("latency_ms", Direction::Min))
        );
        assert_eq!(Objective::parse("latency_ms"), None);
    }

    /// A trained record: cost in MACs (and MFLOPs), mean validation
    /// accuracy with its interval, NASWOT.
    fn trained(index: u64, macs: f64, val: f64, ci: Option<f64>, naswot: f64) -> Record {
        let mut r = record(index, macs / 1e6, naswot, Status::Ok);
        r.metrics.insert(metric::MACS.into(), macs);
        r.metrics.insert(VAL.into(), val);
        r.metrics.insert(train_metric::ACCURACY.into(), val - 1.0);
        if let Some(h) = ci {
            r.metrics.insert(train_metric::VAL_ACCURACY_CI.into(), h);
            r.metrics.insert(train_metric::SEEDS.into(), 3.0);
        }
        r
    }

    use crate::train::train_metric;
    const VAL: &str = train_metric::VAL_ACCURACY;

    #[test]
    fn the_chooser_prefers_trained_accuracy_over_the_proxy() {
        // NASWOT would pick 1; validation accuracy picks 0.
        let records = vec![
            trained(0, 20e6, 91.0, Some(0.2), 1.0),
            trained(1, 30e6, 88.0, Some(0.2), 9.0),
        ];
        assert_eq!(primary_score(&records).unwrap().metric, VAL);
        let c = choice(&records).unwrap();
        assert_eq!(c.chosen, 0);
        let t = c.trained.unwrap();
        assert_eq!((t.best, t.runner_up, t.separated), (0, Some(1), Some(true)));
        assert!(t.intervals);
        // Without any training the proxy chooses.
        let proxy_only = vec![
            record(0, 20.0, 1.0, Status::Ok),
            record(1, 30.0, 9.0, Status::Ok),
        ];
        assert_eq!(choose(&proxy_only), Some(1));
    }

    #[test]
    fn a_tie_goes_to_the_cheaper() {
        // 1 has the best mean but its interval overlaps 0's, which is cheaper.
        let records = vec![
            trained(0, 20e6, 90.5, Some(0.6), 0.0),
            trained(1, 40e6, 91.0, Some(0.6), 0.0),
            trained(2, 10e6, 80.0, Some(0.6), 0.0),
        ];
        let c = choice(&records).unwrap();
        let t = c.trained.unwrap();
        assert_eq!((c.chosen, t.best, t.runner_up), (0, 1, Some(0)));
        assert_eq!(t.separated, Some(false));
        assert_eq!(t.tied, vec![1, 0]);
        // One seed: no intervals, only equal means tie.
        let one = vec![
            trained(0, 40e6, 91.0, None, 0.0),
            trained(1, 20e6, 91.0, None, 0.0),
            trained(2, 10e6, 90.9, None, 0.0),
        ];
        let c = choice(&one).unwrap();
        let t = c.trained.unwrap();
        assert_eq!(
            (c.chosen, t.best, t.separated, t.intervals),
            (1, 1, None, false)
        );
        assert_eq!(t.tied, vec![1, 0]);
    }
}
