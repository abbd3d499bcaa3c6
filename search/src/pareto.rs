//! Pareto fronts over named objectives, and the choice of one variant.

use serde::{Deserialize, Serialize};

use crate::evaluator::metric;
use crate::results::{Record, Status};

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

/// The score a variant is chosen by: NASWOT if measured, else the
/// published error, else none.
pub fn primary_score(records: &[Record]) -> Option<Objective> {
    let has = |m: &str| records.iter().any(|r| r.metric(m).is_some());
    // A measured accuracy outranks a training-free guess, which outranks nothing.
    if has(crate::train::train_metric::ACCURACY) {
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

/// The chosen variant: the feasible record with the best primary score
/// (ties: lower cost, then lower index); without a score, the feasible
/// record with the highest cost (the most capacity the budget affords).
pub fn choose(records: &[Record]) -> Option<usize> {
    let feasible = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Ok);
    let cost = |r: &Record| r.metric(metric::MFLOPS).unwrap_or(f64::INFINITY);
    match primary_score(records) {
        Some(score) => feasible
            .filter_map(|(i, r)| r.metric(&score.metric).map(|s| (i, s)))
            .min_by(|(i, s), (j, t)| {
                let by_score = match score.direction {
                    Direction::Max => t.total_cmp(s),
                    Direction::Min => s.total_cmp(t),
                };
                by_score
                    .then(cost(&records[*i]).total_cmp(&cost(&records[*j])))
                    .then(records[*i].index.cmp(&records[*j].index))
            })
            .map(|(i, _)| i),
        None => feasible
            .max_by(|(i, a), (j, b)| {
                cost(a)
                    .total_cmp(&cost(b))
                    .then(records[*j].index.cmp(&records[*i].index))
            })
            .map(|(i, _)| i),
    }
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
}
