//! The driver: enumerates the space (or matches the budget), evaluates
//! candidates on worker threads, appends each result to the results file
//! as it finishes, and reports why it stopped.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shufflekit_ir::cost;
use shufflekit_spec::Spec;

use crate::budget::{Constraints, Counting};
use crate::error::SearchError;
use crate::evaluator::{metric, EvalContext, Evaluator, FlopsEvaluator};
use crate::lock::ResultsLock;
use crate::machine::MachineInfo;
use crate::matching::{match_budget, Lattice, MatchFailure, DEFAULT_RESOLUTION};
use crate::results::{
    Line, Record, Results, ResultsWriter, RunInfo, SearchConfig, Status, StopInfo, StopReason,
};
use crate::space::{Candidate, ParamValue, Shard, Space, Sweep, Values};

/// What to do with an existing results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingResults {
    /// Refuse to run if it exists and is not empty.
    #[default]
    Refuse,
    /// Skip the candidates it already has and append.
    Resume,
    /// Empty it and start over.
    Overwrite,
}

/// A search, configured with `with_*` calls and started with [`Search::run`].
///
/// ```no_run
/// use shufflekit_search::{Search, Sweep, Constraints};
/// use shufflekit_spec::Spec;
/// let spec = Spec::parse_file("specs/shufflenet_v1.yaml".as_ref()).unwrap();
/// let report = Search::new(spec, "specs/shufflenet_v1.yaml")
///     .with_sweep(Sweep::parse("groups=1,2,3,4,8").unwrap())
///     .with_match_budget("stage2")
///     .with_constraints(Constraints { budget_m: Some(143.0), ..Default::default() })
///     .with_results("out/results.jsonl")
///     .run()
///     .unwrap();
/// println!("stopped: {}", report.stop_reason.describe());
/// ```
pub struct Search {
    spec: Spec,
    spec_path: String,
    sweeps: Vec<Sweep>,
    fixed: Vec<(String, String)>,
    match_param: Option<String>,
    match_resolution: f64,
    counting: Counting,
    constraints: Constraints,
    evaluators: Vec<Box<dyn Evaluator>>,
    seed: u64,
    jobs: usize,
    shard: Option<Shard>,
    time_limit: Option<Duration>,
    results_path: PathBuf,
    existing: ExistingResults,
    progress: bool,
    stop: Arc<AtomicBool>,
    command: String,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct SearchReport {
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Candidates evaluated by this run.
    pub evaluated: u64,
    /// Candidates skipped because the results file had them (`--resume`).
    pub already_done: u64,
    /// Candidates of this run's slice still without a result.
    pub remaining: u64,
    /// Everything in the results file after the run (earlier runs included).
    pub results: Results,
    /// The results file.
    pub results_path: PathBuf,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Set when the run took over a stale lock (of a killed run) of its
    /// output directory.
    pub lock_note: Option<String>,
}

impl Search {
    /// A search over `spec` (read from `spec_path`, recorded in results)
    /// with default settings: no sweeps, the flops evaluator, seed 0, one
    /// worker per core, results in `results.jsonl`.
    pub fn new(spec: Spec, spec_path: impl Into<String>) -> Search {
        Search {
            spec,
            spec_path: spec_path.into(),
            sweeps: Vec::new(),
            fixed: Vec::new(),
            match_param: None,
            match_resolution: DEFAULT_RESOLUTION,
            counting: Counting::default(),
            constraints: Constraints::default(),
            evaluators: Vec::new(),
            seed: 0,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            shard: None,
            time_limit: None,
            results_path: PathBuf::from("results.jsonl"),
            existing: ExistingResults::Refuse,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            command: String::new(),
        }
    }

    /// Adds a swept parameter.
    pub fn with_sweep(mut self, sweep: Sweep) -> Self {
        self.sweeps.push(sweep);
        self
    }

    /// Fixes a parameter for every candidate (`--set`).
    pub fn with_set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fixed.push((name.into(), value.into()));
        self
    }

    /// Fits `param` to the budget for every combination of the other
    /// parameters (needs a budget).
    pub fn with_match_budget(mut self, param: impl Into<String>) -> Self {
        self.match_param = Some(param.into());
        self
    }

    /// The lattice step of a real matched parameter without a range.
    pub fn with_match_resolution(mut self, resolution: f64) -> Self {
        self.match_resolution = resolution;
        self
    }

    /// How costs are counted.
    pub fn with_counting(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// The limits candidates must respect.
    pub fn with_constraints(mut self, constraints: Constraints) -> Self {
        self.constraints = constraints;
        self
    }

    /// Adds an evaluator (the flops evaluator is always run first).
    pub fn with_evaluator(mut self, evaluator: Box<dyn Evaluator>) -> Self {
        self.evaluators.push(evaluator);
        self
    }

    /// The seed of weights and inputs.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Candidates evaluated at the same time (at least 1).
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Evaluates only one slice of the space.
    pub fn with_shard(mut self, shard: Option<Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// Stops starting candidates after this long.
    pub fn with_time_limit(mut self, limit: Option<Duration>) -> Self {
        self.time_limit = limit;
        self
    }

    /// The results file (its directory is created).
    pub fn with_results(mut self, path: impl Into<PathBuf>) -> Self {
        self.results_path = path.into();
        self
    }

    /// What to do when the results file exists.
    pub fn with_existing(mut self, existing: ExistingResults) -> Self {
        self.existing = existing;
        self
    }

    /// Shows a progress bar on stderr; never drawn when stderr is not a
    /// terminal (a batch job's log).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// A flag that, once set (e.g. by a Ctrl-C handler), stops scheduling;
    /// candidates already running finish and are kept.
    pub fn with_stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// The command line recorded in the results.
    pub fn with_command(mut self, command: impl Into<String>) -> Self {
        self.command = command.into();
        self
    }

    fn check_param(&self, name: &str) -> Result<(), SearchError> {
        let names = self.spec.param_names();
        if names.contains(&name) {
            Ok(())
        } else {
            Err(SearchError::UnknownParam {
                name: name.to_string(),
                spec: self.spec.name.clone(),
                known: names.join(", "),
            })
        }
    }

    /// Checks the configuration and works out the space and the lattice.
    fn prepare(&mut self) -> Result<(Space, Option<(String, Lattice)>), SearchError> {
        let mut seen = HashSet::new();
        for s in &self.sweeps {
            self.check_param(&s.param)?;
            if !seen.insert(s.param.clone()) {
                return Err(SearchError::Config(format!(
                    "parameter `{}` is swept twice",
                    s.param
                )));
            }
        }
        for (k, _) in &self.fixed {
            self.check_param(k)?;
            if seen.contains(k) {
                return Err(SearchError::Config(format!(
                    "parameter `{k}` is both swept and set"
                )));
            }
        }
        // Flops first, once; names unique.
        let mut names = HashSet::new();
        for e in &self.evaluators {
            if !names.insert(e.name().to_string()) {
                return Err(SearchError::Config(format!(
                    "evaluator `{}` is listed twice",
                    e.name()
                )));
            }
        }
        if let Some(pos) = self.evaluators.iter().position(|e| e.name() == "flops") {
            let flops = self.evaluators.remove(pos);
            self.evaluators.insert(0, flops);
        } else {
            self.evaluators.insert(0, Box::new(FlopsEvaluator));
        }
        if self.constraints.max_latency_ms.is_some() && !names.contains("latency") {
            return Err(SearchError::Config(
                "--max-latency needs the latency evaluator (--evaluate ...,latency)".into(),
            ));
        }
        if let Some(b) = self.constraints.budget_m {
            if !(b.is_finite() && b > 0.0) {
                return Err(SearchError::Config(format!(
                    "the budget must be a positive number of millions, not {b}"
                )));
            }
        }
        // The defaults must build (with the fixed settings).
        self.spec.build(&self.fixed)?;
        let mut space = Space {
            sweeps: self.sweeps.clone(),
        };
        let lattice = match self.match_param.clone() {
            None => None,
            Some(p) => {
                self.check_param(&p)?;
                if self.fixed.iter().any(|(k, _)| *k == p) {
                    return Err(SearchError::Config(format!(
                        "parameter `{p}` is both matched to the budget and set"
                    )));
                }
                if self.constraints.budget_m.is_none() {
                    return Err(SearchError::Config("--match-budget needs --budget".into()));
                }
                if !(self.match_resolution.is_finite() && self.match_resolution > 0.0) {
                    return Err(SearchError::Config(
                        "the match resolution must be positive".into(),
                    ));
                }
                let lattice = match space.sweeps.iter().position(|s| s.param == p) {
                    Some(i) => match space.sweeps.remove(i).values {
                        Values::Range(range) => Lattice {
                            range,
                            bounded: true,
                        },
                        Values::List(_) => {
                            return Err(SearchError::Config(format!(
                                "`{p}` is matched to the budget: give it as a range START:END:STEP (the search bounds) or not at all"
                            )))
                        }
                    },
                    None => {
                        let default = self
                            .spec
                            .param_defaults()?
                            .get(&p)
                            .map(|v| ParamValue::parse(&v.to_string()))
                            .unwrap_or(ParamValue::Float(1.0));
                        if !matches!(default, ParamValue::Int(_) | ParamValue::Float(_)) {
                            return Err(SearchError::Config(format!(
                                "`{p}` is not numeric: only numeric parameters can be matched to a budget"
                            )));
                        }
                        Lattice::for_default(&default, self.match_resolution)
                    }
                };
                Some((p, lattice))
            }
        };
        space.len()?;
        Ok((space, lattice))
    }

    fn config(&self, space: &Space) -> SearchConfig {
        SearchConfig {
            spec_path: self.spec_path.clone(),
            spec_name: self.spec.name.clone(),
            space: space.clone(),
            fixed: self.fixed.clone(),
            match_param: self.match_param.clone(),
            counting: self.counting,
            constraints: self.constraints.clone(),
            evaluators: self
                .evaluators
                .iter()
                .map(|e| e.name().to_string())
                .collect(),
            seed: self.seed,
        }
    }

    /// Runs the search until the space (or shard) is exhausted, the time
    /// limit passes or the stop flag is set.
    pub fn run(mut self) -> Result<SearchReport, SearchError> {
        let started = Instant::now();
        let (space, lattice) = self.prepare()?;
        let config = self.config(&space);
        let path = self.results_path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SearchError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Before anything reads, truncates or appends: one writer per file.
        let lock = ResultsLock::acquire(&path)?;
        let evaluator_descriptions: BTreeMap<String, String> = self
            .evaluators
            .iter()
            .map(|e| (e.name().to_string(), e.description()))
            .collect();
        let done = self.open_existing(&path, &config, &evaluator_descriptions)?;
        let mut writer = ResultsWriter::open(&path, self.existing == ExistingResults::Overwrite)?;
        let run_info = RunInfo {
            evaluator_descriptions,
            counting_description: self.counting.describe(),
            cost_unit: self.counting.unit(),
            shard: self.shard,
            space_size: space.len()?,
            command: self.command.clone(),
            machine: MachineInfo::detect(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config,
        };
        writer.write(&Line::Run(Box::new(run_info)))?;

        let n = space.len()?;
        let mut already_done = 0u64;
        let todo: Vec<u64> = (0..n)
            .filter(|&k| self.shard.is_none_or(|s| s.contains(k)))
            .filter(|&k| {
                let skip = done.contains(&space.candidate(k).id());
                already_done += u64::from(skip);
                !skip
            })
            .collect();

        // Not on a terminal (a batch job's log): no bar, not even its last frame.
        let bar = if self.progress && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(
                Some(todo.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };

        let next = AtomicU64::new(0);
        let evaluated = AtomicU64::new(0);
        let timed_out = AtomicBool::new(false);
        let failure: Mutex<Option<SearchError>> = Mutex::new(None);
        let writer = Mutex::new(writer);
        let gate = RwLock::new(());
        let this = &self;
        let workers = self.jobs.min(todo.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if this.stop.load(Ordering::SeqCst) || failure_set(&failure) {
                        break;
                    }
                    if this.time_limit.is_some_and(|t| started.elapsed() >= t) {
                        timed_out.store(true, Ordering::SeqCst);
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(&k) = todo.get(i) else { break };
                    let candidate = space.candidate(k);
                    let record = this.evaluate(&candidate, lattice.as_ref(), &gate);
                    bar.set_message(record.id.clone());
                    let written = writer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .write(&Line::Candidate(Box::new(record)));
                    if let Err(e) = written {
                        failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                    evaluated.fetch_add(1, Ordering::SeqCst);
                    bar.inc(1);
                });
            }
        });
        bar.finish_and_clear();
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let evaluated = evaluated.load(Ordering::SeqCst);
        let remaining = todo.len() as u64 - evaluated;
        let stop_reason = if remaining == 0 {
            StopReason::SpaceExhausted
        } else if self.stop.load(Ordering::SeqCst) {
            StopReason::Interrupted
        } else if timed_out.load(Ordering::SeqCst) {
            StopReason::TimeLimit
        } else {
            StopReason::Interrupted
        };
        let seconds = started.elapsed().as_secs_f64();
        writer
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .write(&Line::Stop(StopInfo {
                reason: stop_reason,
                evaluated,
                remaining,
                seconds,
            }))?;
        let results = Results::read(&path)?;
        let lock_note = lock.took_over.clone();
        drop(lock);
        Ok(SearchReport {
            stop_reason,
            evaluated,
            already_done,
            remaining,
            results,
            results_path: path,
            seconds,
            lock_note,
        })
    }

    /// Checks an existing results file against the mode; returns the ids
    /// it already has when resuming. Resuming needs the same configuration
    /// and the same evaluator settings (their descriptions hold them: the
    /// train evaluator's epochs, data, seeds and validation split...).
    fn open_existing(
        &self,
        path: &Path,
        config: &SearchConfig,
        descriptions: &BTreeMap<String, String>,
    ) -> Result<HashSet<String>, SearchError> {
        let io = |p: &Path, source| SearchError::Io {
            path: p.to_path_buf(),
            source,
        };
        let exists = std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if !exists {
            return Ok(HashSet::new());
        }
        match self.existing {
            ExistingResults::Overwrite => Ok(HashSet::new()),
            ExistingResults::Refuse => Err(SearchError::ResultsExist {
                path: path.to_path_buf(),
            }),
            ExistingResults::Resume => {
                let previous = Results::read(path)?;
                if let Some(run) = previous.last_run() {
                    let difference = config_difference(&run.config, config).or_else(|| {
                        descriptions.iter().find_map(|(name, now)| {
                            let was = run.evaluator_descriptions.get(name)?;
                            (was != now).then(|| {
                                format!("the `{name}` evaluator's settings: was \"{was}\", now \"{now}\"")
                            })
                        })
                    });
                    if let Some(d) = difference {
                        return Err(SearchError::ResumeMismatch {
                            path: path.to_path_buf(),
                            difference: d,
                        });
                    }
                }
                truncate_partial_line(path).map_err(|e| io(path, e))?;
                Ok(previous.records.into_iter().map(|r| r.id).collect())
            }
        }
    }

    /// Evaluates one candidate; failures become records, never errors.
    fn evaluate(
        &self,
        candidate: &Candidate,
        lattice: Option<&(String, Lattice)>,
        gate: &RwLock<()>,
    ) -> Record {
        let started = Instant::now();
        let mut record = Record {
            index: candidate.index,
            id: candidate.id(),
            params: candidate.params.iter().cloned().collect(),
            status: Status::Ok,
            metrics: BTreeMap::new(),
            info: BTreeMap::new(),
            violations: Vec::new(),
            error: None,
            matched: None,
            seconds: 0.0,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.evaluate_into(candidate, lattice, gate, &mut record)
        }));
        if outcome.is_err() {
            record.status = Status::Error;
            record.error = Some("internal error: an evaluator panicked".into());
        }
        record.seconds = started.elapsed().as_secs_f64();
        record
    }

    fn evaluate_into(
        &self,
        candidate: &Candidate,
        lattice: Option<&(String, Lattice)>,
        gate: &RwLock<()>,
        record: &mut Record,
    ) {
        let mut overrides = self.fixed.clone();
        overrides.extend(
            candidate
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_expr())),
        );
        if let Some((param, lattice)) = lattice {
            let budget = self.constraints.budget_ops().unwrap_or(u64::MAX);
            let found = {
                let _shared = gate.read().unwrap_or_else(|e| e.into_inner());
                match_budget(
                    &self.spec,
                    &overrides,
                    param,
                    lattice,
                    self.counting,
                    budget,
                )
            };
            match found {
                Ok(outcome) => {
                    overrides.push((param.clone(), outcome.value.to_expr()));
                    record.params.insert(param.clone(), outcome.value.clone());
                    if let Some(note) = &outcome.monotonicity_note {
                        record
                            .info
                            .insert("monotonicity".into(), format!("violated: {note}"));
                    }
                    record.matched = Some(outcome);
                }
                Err(MatchFailure::NothingFits { value, cost }) => {
                    record.params.insert(param.clone(), value.clone());
                    record.status = Status::Infeasible;
                    record.violations.push(format!(
                        "even {param}={value} costs {:.3} M, over the budget",
                        cost as f64 / 1e6
                    ));
                    return;
                }
                Err(MatchFailure::Build(e)) => {
                    record.status = Status::Error;
                    record.error = Some(e);
                    return;
                }
            }
        }
        let graph = match self.spec.build(&overrides) {
            Ok(g) => g,
            Err(e) => {
                record.status = Status::Error;
                record.error = Some(e.to_string());
                return;
            }
        };
        let cost = cost::count(&graph, self.counting.convention);
        let ctx = EvalContext {
            spec: &self.spec,
            overrides: &overrides,
            params: &record.params.clone(),
            graph: &graph,
            cost: &cost,
            counting: self.counting,
            seed: self.seed,
        };
        for evaluator in &self.evaluators {
            let result = if evaluator.exclusive() {
                let _alone = gate.write().unwrap_or_else(|e| e.into_inner());
                evaluator.evaluate(&ctx)
            } else {
                let _shared = gate.read().unwrap_or_else(|e| e.into_inner());
                evaluator.evaluate(&ctx)
            };
            match result {
                Ok(m) => {
                    for (k, v) in m.values {
                        if v.is_finite() {
                            record.metrics.insert(k, v);
                        } else {
                            record.info.insert(k, format!("{v}"));
                        }
                    }
                    record.info.extend(m.info);
                }
                Err(e) => {
                    record.status = Status::Error;
                    record.error = Some(e.to_string());
                    return;
                }
            }
            if evaluator.name() == "flops" {
                let v = self.constraints.check_static(
                    self.counting.count(&cost),
                    cost.params,
                    record.metric(metric::PEAK_MEMORY).unwrap_or(0.0) as u64,
                );
                if !v.is_empty() {
                    // Over a static limit: the costly evaluators are skipped.
                    record.status = Status::Infeasible;
                    record.violations = v;
                    return;
                }
            }
        }
        let v = self
            .constraints
            .check_latency(record.metric(metric::LATENCY_MS));
        if !v.is_empty() {
            record.status = Status::Infeasible;
            record.violations = v;
        }
    }
}

fn failure_set(failure: &Mutex<Option<SearchError>>) -> bool {
    failure.lock().map(|f| f.is_some()).unwrap_or(true)
}

/// The first setting two configurations differ in, in words.
pub fn config_difference(old: &SearchConfig, new: &SearchConfig) -> Option<String> {
    let fields: [(&str, String, String); 9] = [
        ("spec", old.spec_name.clone(), new.spec_name.clone()),
        (
            "sweeps",
            format!(
                "{:?}",
                old.space.sweeps.iter().map(|s| &s.text).collect::<Vec<_>>()
            ),
            format!(
                "{:?}",
                new.space.sweeps.iter().map(|s| &s.text).collect::<Vec<_>>()
            ),
        ),
        (
            "fixed settings",
            format!("{:?}", old.fixed),
            format!("{:?}", new.fixed),
        ),
        (
            "matched parameter",
            format!("{:?}", old.match_param),
            format!("{:?}", new.match_param),
        ),
        (
            "counting",
            format!("{:?}", old.counting),
            format!("{:?}", new.counting),
        ),
        (
            "constraints",
            format!("{:?}", old.constraints),
            format!("{:?}", new.constraints),
        ),
        (
            "evaluators",
            old.evaluators.join(","),
            new.evaluators.join(","),
        ),
        ("seed", old.seed.to_string(), new.seed.to_string()),
        (
            "space",
            format!("{:?}", old.space),
            format!("{:?}", new.space),
        ),
    ];
    fields
        .into_iter()
        .find(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name}: was {a}, now {b}"))
}

/// Cuts a file back to its last newline (a line half-written when a run
/// was killed), so appending starts on a fresh line.
fn truncate_partial_line(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut text)?;
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    file.set_len(keep as u64)
}
