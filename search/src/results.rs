//! The results file: one JSON object per line (JSONL), appended and flushed
//! as each candidate finishes, so an interrupted search loses nothing it
//! finished.
//!
//! Lines have a `type`: `run` (the configuration and the machine, written
//! when a run starts), `candidate` (one evaluated candidate) and `stop`
//! (why a run stopped). Resuming appends a new `run` line; merging shards
//! reads several files.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::budget::{Constraints, Counting};
use crate::error::SearchError;
use crate::machine::MachineInfo;
use crate::matching::MatchOutcome;
use crate::space::{ParamValue, Shard, Space};

/// What happened to a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Evaluated and within every constraint.
    Ok,
    /// Evaluated (at least its cost) but over a constraint.
    Infeasible,
    /// The spec did not build or an evaluator failed.
    Error,
}

/// One evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the full enumeration of the space.
    pub index: u64,
    /// A name that reads on its own (`groups=3,width=0.5`).
    pub id: String,
    /// The swept (and matched) parameters.
    pub params: BTreeMap<String, ParamValue>,
    /// The outcome.
    pub status: Status,
    /// Every evaluator's numbers.
    pub metrics: BTreeMap<String, f64>,
    /// Every evaluator's notes.
    #[serde(default)]
    pub info: BTreeMap<String, String>,
    /// The constraints it breaks.
    #[serde(default)]
    pub violations: Vec<String>,
    /// The error, for status `error`.
    #[serde(default)]
    pub error: Option<String>,
    /// What budget matching found, in `--match-budget` searches.
    #[serde(default)]
    pub matched: Option<MatchOutcome>,
    /// Wall time spent on it, in seconds.
    #[serde(default)]
    pub seconds: f64,
}

impl Record {
    /// A metric by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }

    /// A name with the headline numbers, Once-for-All style:
    /// `groups=3,width=0.5@mflops=38.2_naswot=812.4`.
    pub fn headline(&self, metrics: &[&str]) -> String {
        let parts: Vec<String> = metrics
            .iter()
            .filter_map(|m| self.metric(m).map(|v| format!("{m}={v:.1}")))
            .collect();
        if parts.is_empty() {
            self.id.clone()
        } else {
            format!("{}@{}", self.id, parts.join("_"))
        }
    }
}

/// The settings that define a search: resuming requires them to be equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// The spec file as given.
    pub spec_path: String,
    /// The spec's name.
    pub spec_name: String,
    /// The swept parameters.
    pub space: Space,
    /// Fixed overrides.
    pub fixed: Vec<(String, String)>,
    /// The matched parameter, in budget-matching searches.
    pub match_param: Option<String>,
    /// How costs are counted.
    pub counting: Counting,
    /// The limits.
    pub constraints: Constraints,
    /// Evaluator names, in order.
    pub evaluators: Vec<String>,
    /// The seed.
    pub seed: u64,
}

/// The `run` line: the configuration, how it was started and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The search's settings.
    pub config: SearchConfig,
    /// Each evaluator's description.
    pub evaluator_descriptions: BTreeMap<String, String>,
    /// The counting convention in words.
    pub counting_description: String,
    /// The unit of the `mflops` metric.
    pub cost_unit: String,
    /// The shard this run evaluated, if any.
    pub shard: Option<Shard>,
    /// Candidates in the whole space.
    pub space_size: u64,
    /// The exact command line.
    pub command: String,
    /// The machine.
    pub machine: MachineInfo,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The shufflekit version.
    pub version: String,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every candidate (of this shard) has a result.
    SpaceExhausted,
    /// The time limit was reached; unstarted candidates were left.
    TimeLimit,
    /// The run was interrupted (Ctrl-C); finished results are kept.
    Interrupted,
}

impl StopReason {
    /// Words for a report.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::SpaceExhausted => "space exhausted: every candidate was evaluated",
            StopReason::TimeLimit => {
                "time limit reached: candidates not started were left for --resume"
            }
            StopReason::Interrupted => {
                "interrupted: finished results were kept; --resume continues"
            }
        }
    }
}

/// The `stop` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopInfo {
    /// Why.
    pub reason: StopReason,
    /// Candidates evaluated by this run.
    pub evaluated: u64,
    /// Candidates of this run's slice with no result yet.
    pub remaining: u64,
    /// Wall time of this run in seconds.
    pub seconds: f64,
}

/// One line of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A run started.
    Run(Box<RunInfo>),
    /// A candidate finished.
    Candidate(Box<Record>),
    /// A run stopped.
    Stop(StopInfo),
}

/// The contents of one or more results files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// Every `run` line, in file order.
    pub runs: Vec<RunInfo>,
    /// Every `stop` line, in file order.
    pub stops: Vec<StopInfo>,
    /// The candidates, one per id, sorted by index.
    pub records: Vec<Record>,
    /// Notes about the reading (a dropped truncated last line, duplicates).
    pub warnings: Vec<String>,
}

impl Results {
    /// Reads one results file. A last line cut short (no newline, not
    /// JSON) is dropped with a warning; any other bad line is an error
    /// naming the file and line.
    pub fn read(path: &Path) -> Result<Results, SearchError> {
        let mut out = Results::default();
        out.add_file(path)?;
        out.finish();
        Ok(out)
    }

    /// Reads and merges several files (shards, resumed runs).
    pub fn read_all(paths: &[PathBuf]) -> Result<Results, SearchError> {
        let mut out = Results::default();
        for p in paths {
            out.add_file(p)?;
        }
        out.finish();
        Ok(out)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), SearchError> {
        let io = |source| SearchError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let complete = buf.last() == Some(&b'\n');
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim(),
                Err(_) => {
                    return Err(SearchError::CorruptResults {
                        path: path.to_path_buf(),
                        line: line_no,
                        message: "not UTF-8 text".into(),
                    })
                }
            };
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(text) {
                Ok(Line::Run(r)) => self.runs.push(*r),
                Ok(Line::Stop(s)) => self.stops.push(s),
                Ok(Line::Candidate(c)) => self.records.push(*c),
                Err(_) if !complete => {
                    self.warnings.push(format!(
                        "{}:{line_no}: dropped a truncated last line (the run was killed while writing it)",
                        path.display()
                    ));
                }
                Err(e) => {
                    return Err(SearchError::CorruptResults {
                        path: path.to_path_buf(),
                        line: line_no,
                        message: format!("not a results record: {e}"),
                    })
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(first) = self.runs.first() {
            for r in &self.runs[1..] {
                if let Some(d) = crate::driver::config_difference(&first.config, &r.config) {
                    self.warnings.push(format!(
                        "the results come from different searches ({d}); the report describes the last"
                    ));
                    break;
                }
            }
        }
        let mut by_id: BTreeMap<String, Record> = BTreeMap::new();
        for r in std::mem::take(&mut self.records) {
            match by_id.get(&r.id) {
                Some(existing) if existing.status != Status::Error || r.status == Status::Error => {
                    if !same_outcome(existing, &r) {
                        self.warnings.push(format!(
                            "candidate `{}` appears more than once with different results; the first is kept",
                            r.id
                        ));
                    }
                }
                _ => {
                    by_id.insert(r.id.clone(), r);
                }
            }
        }
        self.records = by_id.into_values().collect();
        self.records
            .sort_by(|a, b| a.index.cmp(&b.index).then(a.id.cmp(&b.id)));
    }

    /// The last run's settings, if any run line was read.
    pub fn last_run(&self) -> Option<&RunInfo> {
        self.runs.last()
    }
}

/// Whether two records of the same candidate agree (ignoring timing).
pub fn same_outcome(a: &Record, b: &Record) -> bool {
    let strip = |r: &Record| {
        let mut r = r.clone();
        r.seconds = 0.0;
        r.metrics.retain(|k, _| !k.starts_with("latency"));
        r
    };
    strip(a) == strip(b)
}

/// Appends lines to a results file, flushing each.
pub struct ResultsWriter {
    path: PathBuf,
    file: File,
}

impl ResultsWriter {
    /// Opens (creating or, with `truncate`, emptying) a results file.
    pub fn open(path: &Path, truncate: bool) -> Result<ResultsWriter, SearchError> {
        let mut options = OpenOptions::new();
        options.create(true);
        if truncate {
            options.write(true).truncate(true);
        } else {
            options.append(true);
        }
        let file = options.open(path).map_err(|source| SearchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ResultsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes one line and flushes it.
    pub fn write(&mut self, line: &Line) -> Result<(), SearchError> {
        let mut text = serde_json::to_string(line).map_err(|e| SearchError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|source| SearchError::Io {
                path: self.path.clone(),
                source,
            })
    }
}
