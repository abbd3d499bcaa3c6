//! End-to-end tests of the search driver on the project's ShuffleNet v1
//! spec: the paper's budget matching, interrupt + resume, shards, and the
//! errors users see.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use shufflekit_search::{
    Constraints, CountScope, Counting, EvalContext, Evaluator, EvaluatorError, ExistingResults,
    Metrics, PaperEvaluator, ParamValue, ProxyEvaluator, ProxyOptions, Record, Results, Search,
    SearchError, Shard, Status, StopReason, Sweep,
};
use shufflekit_spec::Spec;

fn spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml")
}

fn spec() -> Spec {
    Spec::parse_file(&spec_path()).unwrap()
}

fn proxy() -> ProxyEvaluator {
    ProxyEvaluator::new(ProxyOptions {
        batch: 4,
        resolution: 32,
        resolution_param: Some("resolution".into()),
    })
    .unwrap()
}

/// A small space with a deterministic score: 5 groups x 4 widths.
fn small_search(results: &Path) -> Search {
    Search::new(spec(), "specs/shufflenet_v1.yaml")
        .with_sweep(Sweep::parse("groups=1,2,3,4,8").unwrap())
        .with_sweep(Sweep::parse("width=0.25:1.0:0.25").unwrap())
        .with_constraints(Constraints {
            budget_m: Some(100.0),
            ..Default::default()
        })
        .with_evaluator(Box::new(proxy()))
        .with_evaluator(Box::new(PaperEvaluator))
        .with_seed(7)
        .with_jobs(2)
        .with_results(results)
}

/// Records without their timing, for comparing runs.
fn outcomes(results: &Results) -> Vec<Record> {
    results
        .records
        .iter()
        .map(|r| Record {
            seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

/// Table 1 of the ShuffleNet paper: matching the stage-2 width to a 143
/// MFLOPs budget (conv layers only, which Table 1 rounds) for each group
/// count gives back the paper's widths.
#[test]
fn paper_replay_finds_table1_stage2_widths() {
    let dir = tempfile::tempdir().unwrap();
    let report = Search::new(spec(), "specs/shufflenet_v1.yaml")
        .with_sweep(Sweep::parse("groups=1,2,3,4,8").unwrap())
        .with_match_budget("stage2")
        .with_counting(Counting {
            scope: CountScope::Conv,
            ..Default::default()
        })
        .with_constraints(Constraints {
            budget_m: Some(143.0),
            ..Default::default()
        })
        .with_results(dir.path().join("results.jsonl"))
        .run()
        .unwrap();
    assert_eq!(report.stop_reason, StopReason::SpaceExhausted);
    let found: Vec<(i64, i64, usize, bool)> = report
        .results
        .records
        .iter()
        .map(|r| {
            let m = r.matched.as_ref().expect("a match outcome");
            let ParamValue::Int(g) = r.params["groups"] else {
                panic!("groups is an integer")
            };
            let ParamValue::Int(v) = m.value else {
                panic!("stage2 is an integer")
            };
            (g, v, m.rounded_channels.unwrap(), m.monotone)
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (1, 144, 144, true),
            (2, 200, 200, true),
            (3, 240, 240, true),
            (4, 272, 272, true),
            (8, 384, 384, true),
        ]
    );
    // The conv-only costs are the reference figures of the exact table in
    // shared/reference/shufflenet-v1.md.
    let costs: Vec<u64> = report
        .results
        .records
        .iter()
        .map(|r| r.matched.as_ref().unwrap().cost)
        .collect();
    assert_eq!(
        costs,
        vec![
            142_502_976,
            140_036_512,
            136_500_672,
            133_251_776,
            136_829_952
        ]
    );
}

/// Delegates to an evaluator and sets the stop flag (as Ctrl-C does) after
/// a number of evaluations. It keeps the inner evaluator's name, so the
/// resumed run has the same configuration.
struct InterruptAfter<E> {
    inner: E,
    after: usize,
    seen: AtomicUsize,
    stop: Arc<AtomicBool>,
}

impl<E: Evaluator> Evaluator for InterruptAfter<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn description(&self) -> String {
        self.inner.description()
    }
    fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Metrics, EvaluatorError> {
        let m = self.inner.evaluate(ctx);
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.after {
            self.stop.store(true, Ordering::SeqCst);
        }
        m
    }
}

#[test]
fn interrupt_then_resume_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let full = small_search(&dir.path().join("full.jsonl")).run().unwrap();
    assert_eq!(full.stop_reason, StopReason::SpaceExhausted);
    assert_eq!(full.results.records.len(), 20);

    let path = dir.path().join("interrupted.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Search::new(spec(), "specs/shufflenet_v1.yaml")
        .with_sweep(Sweep::parse("groups=1,2,3,4,8").unwrap())
        .with_sweep(Sweep::parse("width=0.25:1.0:0.25").unwrap())
        .with_constraints(Constraints {
            budget_m: Some(100.0),
            ..Default::default()
        })
        .with_evaluator(Box::new(InterruptAfter {
            inner: proxy(),
            after: 4,
            seen: AtomicUsize::new(0),
            stop: stop.clone(),
        }))
        .with_evaluator(Box::new(PaperEvaluator))
        .with_seed(7)
        .with_jobs(2)
        .with_results(&path)
        .with_stop_flag(stop)
        .run()
        .unwrap();
    assert_eq!(interrupted.stop_reason, StopReason::Interrupted);
    assert!(interrupted.remaining > 0, "the interrupt came too late");
    let kept = interrupted.results.records.len();
    assert!((4..20).contains(&kept), "kept {kept} records");

    // Resuming without --resume is refused.
    let refused = small_search(&path).run();
    assert!(matches!(refused, Err(SearchError::ResultsExist { .. })));

    let resumed = small_search(&path)
        .with_existing(ExistingResults::Resume)
        .run()
        .unwrap();
    assert_eq!(resumed.stop_reason, StopReason::SpaceExhausted);
    assert_eq!(resumed.already_done, kept as u64);
    assert_eq!(resumed.evaluated, 20 - kept as u64);
    assert_eq!(outcomes(&resumed.results), outcomes(&full.results));
    // Two runs, two stops in the file.
    assert_eq!(resumed.results.runs.len(), 2);
    assert_eq!(resumed.results.stops.len(), 2);
}

/// Resuming with other evaluator settings (here the proxy's batch; for
/// training its epochs, data or seeds) would mix results: refused, naming
/// the evaluator.
#[test]
fn resume_with_other_evaluator_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let limited = Search::new(spec(), "specs/shufflenet_v1.yaml")
        .with_sweep(Sweep::parse("groups=1,2").unwrap())
        .with_evaluator(Box::new(proxy()))
        .with_seed(7)
        .with_results(&path);
    limited.run().unwrap();
    let other_batch = ProxyEvaluator::new(ProxyOptions {
        batch: 8,
        resolution: 32,
        resolution_param: Some("resolution".into()),
    })
    .unwrap();
    let resumed = Search::new(spec(), "specs/shufflenet_v1.yaml")
        .with_sweep(Sweep::parse("groups=1,2").unwrap())
        .with_evaluator(Box::new(other_batch))
        .with_seed(7)
        .with_results(&path)
        .with_existing(ExistingResults::Resume)
        .run();
    match resumed {
        Err(SearchError::ResumeMismatch { difference, .. }) => {
            assert!(difference.contains("`proxy` evaluator"), "{difference}");
            assert!(difference.contains("8 images"), "{difference}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn two_shards_merged_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let full = small_search(&dir.path().join("full.jsonl")).run().unwrap();
    let mut paths = Vec::new();
    for i in 0..2 {
        let p = dir.path().join(format!("shard{i}/results.jsonl"));
        let r = small_search(&p)
            .with_shard(Some(Shard { index: i, count: 2 }))
            .run()
            .unwrap();
        assert_eq!(r.stop_reason, StopReason::SpaceExhausted);
        assert_eq!(r.results.records.len(), 10);
        paths.push(p);
    }
    let merged = Results::read_all(&paths).unwrap();
    assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
    assert_eq!(outcomes(&merged), outcomes(&full.results));
}

#[test]
fn the_same_seed_gives_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let a = small_search(&dir.path().join("a.jsonl")).run().unwrap();
    let b = small_search(&dir.path().join("b.jsonl"))
        .with_jobs(1)
        .run()
        .unwrap();
    assert_eq!(outcomes(&a.results), outcomes(&b.results));
    // The budget leaves some candidates out, and those skip the proxy.
    let over: Vec<&Record> = a
        .results
        .records
        .iter()
        .filter(|r| r.status == Status::Infeasible)
        .collect();
    assert!(!over.is_empty());
    assert!(over.iter().all(|r| r.metric("naswot").is_none()));
    let ok = a.results.records.iter().filter(|r| r.status == Status::Ok);
    assert!(ok.clone().all(|r| r.metric("naswot").is_some()));
    // The paper evaluator knows 1x, 0.5x and 0.25x, not 0.75x.
    let paper = |id: &str| {
        a.results
            .records
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .metric("paper_top1_error")
    };
    assert_eq!(paper("groups=3,width=0.5"), Some(43.2));
    assert_eq!(paper("groups=8,width=0.25"), Some(52.7));
    assert_eq!(paper("groups=3,width=0.75"), None);
}

#[test]
fn corrupt_results_lines_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let report = Search::new(spec(), "s")
        .with_sweep(Sweep::parse("groups=1,2").unwrap())
        .with_results(&path)
        .run()
        .unwrap();
    assert_eq!(report.results.records.len(), 2);
    let text = std::fs::read_to_string(&path).unwrap();

    // A half-written last line (a killed run) is dropped with a warning,
    // and resuming writes on a fresh line.
    std::fs::write(&path, format!("{text}{{\"type\":\"candid")).unwrap();
    let r = Results::read(&path).unwrap();
    assert_eq!(r.records.len(), 2);
    assert_eq!(r.warnings.len(), 1);
    let resumed = Search::new(spec(), "s")
        .with_sweep(Sweep::parse("groups=1,2").unwrap())
        .with_results(&path)
        .with_existing(ExistingResults::Resume)
        .run()
        .unwrap();
    assert_eq!(resumed.evaluated, 0);
    assert!(resumed.results.warnings.is_empty());

    // A bad line in the middle is an error with file and line.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "{not json");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = Results::read(&path).unwrap_err();
    assert!(matches!(err, SearchError::CorruptResults { line: 3, .. }));
    let msg = err.to_string();
    assert!(msg.contains("results.jsonl:3:"), "{msg}");
}

#[test]
fn bad_configurations_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    let unknown = Search::new(spec(), "s")
        .with_sweep(Sweep::parse("grups=1,2").unwrap())
        .with_results(&results)
        .run()
        .unwrap_err();
    let msg = unknown.to_string();
    assert!(
        msg.contains("unknown parameter `grups`") && msg.contains("groups"),
        "{msg}"
    );

    let no_budget = Search::new(spec(), "s")
        .with_match_budget("stage2")
        .with_results(&results)
        .run()
        .unwrap_err();
    assert!(no_budget.to_string().contains("--budget"), "{no_budget}");

    let twice = Search::new(spec(), "s")
        .with_sweep(Sweep::parse("groups=1,2").unwrap())
        .with_sweep(Sweep::parse("groups=3").unwrap())
        .with_results(&results)
        .run()
        .unwrap_err();
    assert!(twice.to_string().contains("swept twice"), "{twice}");

    let latency = Search::new(spec(), "s")
        .with_constraints(Constraints {
            max_latency_ms: Some(5.0),
            ..Default::default()
        })
        .with_results(&results)
        .run()
        .unwrap_err();
    assert!(
        latency.to_string().contains("latency evaluator"),
        "{latency}"
    );

    // An output directory under a file cannot be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let unwritable = Search::new(spec(), "s")
        .with_results(file.join("out/results.jsonl"))
        .run()
        .unwrap_err();
    assert!(matches!(unwritable, SearchError::Io { .. }), "{unwritable}");
    assert!(unwritable.to_string().contains("a-file"), "{unwritable}");

    // Bad values for a parameter become error records, not a failed search.
    let report = Search::new(spec(), "s")
        .with_sweep(Sweep::parse("groups=3,0").unwrap())
        .with_results(dir.path().join("bad.jsonl"))
        .run()
        .unwrap();
    let statuses: Vec<Status> = report.results.records.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Status::Ok, Status::Error]);
    assert!(report.results.records[1].error.is_some());
}

#[test]
fn budget_matching_a_real_parameter_and_a_range() {
    let dir = tempfile::tempdir().unwrap();
    // Width matched to 38 M (the paper's 0.5x budget) on a 0.01 lattice.
    let report = Search::new(spec(), "s")
        .with_sweep(Sweep::parse("groups=3,8").unwrap())
        .with_sweep(Sweep::parse("width=0.1:2.0:0.01").unwrap())
        .with_match_budget("width")
        .with_constraints(Constraints {
            budget_m: Some(38.0),
            ..Default::default()
        })
        .with_results(dir.path().join("w.jsonl"))
        .run()
        .unwrap();
    for r in &report.results.records {
        let m = r.matched.as_ref().unwrap();
        assert!(m.monotone, "{:?}", m);
        assert!(m.cost <= 38_000_000);
        let w = m.value.as_f64().unwrap();
        assert!((0.4..0.6).contains(&w), "{} -> width {w}", r.id);
    }
}

/// A spec whose cost is not monotone in `p` (odd values are cheap): the
/// bisection's answer is flagged, not silently trusted.
#[test]
fn budget_matching_flags_a_non_monotone_cost() {
    let src = "
name: zigzag
params: {p: 8}
input: [3, 8, 8]
layers:
  - conv: {name: stem, out: \"p % 2 == 0 ? p : 1\", kernel: 1}
  - global_avg_pool
  - flatten
  - linear: {out: 2}
";
    let spec = Spec::parse(src, "zigzag.yaml", Path::new(".")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = Search::new(spec, "zigzag.yaml")
        .with_match_budget("p")
        .with_constraints(Constraints {
            budget_m: Some(0.002),
            ..Default::default()
        })
        .with_results(dir.path().join("r.jsonl"))
        .run()
        .unwrap();
    let record = &report.results.records[0];
    let m = record.matched.as_ref().unwrap();
    assert!(!m.monotone, "{m:?}");
    assert!(m.monotonicity_note.as_ref().unwrap().contains("decreases"));
    assert!(record.info["monotonicity"].starts_with("violated"));
    assert!(m.cost <= 2000);
}
