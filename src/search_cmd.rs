//! `shufflekit search` and `shufflekit report`: the command-line face of
//! the search driver and the reports.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use shufflekit_ir::cost::Convention;
use shufflekit_reports::training::write_training_report;
use shufflekit_search::evaluator::metric;
use shufflekit_search::space::{parse_bytes, parse_duration, SpaceFile};
use shufflekit_search::train::{TrainEvalOptions, TrainEvaluator};
use shufflekit_search::{
    Constraints, CountScope, Counting, ExistingResults, LatencyEvaluator, LatencyOptions,
    Objective, PaperEvaluator, ProxyEvaluator, ProxyOptions, Results, Search, Shard, Status, Sweep,
};
use shufflekit_spec::Spec;

/// Options of `shufflekit search`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// The spec file (YAML).
    spec: PathBuf,
    /// A search space file (YAML: sweep, set, match_budget, budget,
    /// max_params, max_memory, max_latency, convention, count, evaluate);
    /// command-line flags add sweeps and override its settings.
    #[arg(long, value_name = "FILE")]
    space: Option<PathBuf>,
    /// Sweep a parameter: `groups=1,2,3,4,8` (a list) or
    /// `width=0.25:2.0:0.05` (an inclusive range). Repeatable.
    #[arg(long = "sweep", value_name = "NAME=VALUES")]
    sweep: Vec<String>,
    /// Fix a parameter for every candidate: `--set resolution=160`. Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// For every combination of the other parameters, find the largest
    /// value of PARAM within the budget (bisection; integer parameters step
    /// by 1, real ones by --match-resolution, or by the step of a range
    /// given for PARAM with --sweep, which then bounds the search).
    #[arg(long, value_name = "PARAM")]
    match_budget: Option<String>,
    /// Lattice step of a real parameter matched to the budget.
    #[arg(long, value_name = "STEP", default_value_t = 0.001)]
    match_resolution: f64,
    /// Budget in millions of counted operations (see --convention, --count).
    #[arg(long, value_name = "M")]
    budget: Option<f64>,
    /// Maximum trainable parameters.
    #[arg(long, value_name = "N")]
    max_params: Option<u64>,
    /// Maximum peak activation memory (bytes, or with kB/MB/GB/KiB/MiB/GiB).
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Maximum median latency in milliseconds (needs the latency evaluator).
    #[arg(long, value_name = "MS")]
    max_latency: Option<f64>,
    /// FLOP convention: macs (the paper's), flops (2 per MAC) or macs-all.
    #[arg(long, value_parser = ["macs", "flops", "macs-all"])]
    convention: Option<String>,
    /// Which layers the budget counts: all, or conv (conv layers only, the
    /// figures the ShuffleNet paper's Table 1 rounds).
    #[arg(long, value_parser = ["all", "conv"])]
    count: Option<String>,
    /// Evaluators, comma-separated: flops, latency, proxy, paper (flops
    /// always runs).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    evaluate: Vec<String>,
    /// Pareto objectives, e.g. `mflops:min,naswot:max` (default: cost,
    /// the score and latency when measured).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    objectives: Vec<String>,
    /// Output directory: results.jsonl and the report.
    #[arg(long, value_name = "DIR", default_value = "search-out")]
    out: PathBuf,
    /// Continue the search in --out, skipping finished candidates.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Start over even if --out has results.
    #[arg(long)]
    force: bool,
    /// Seed of the weights and inputs of latency and proxy.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Candidates evaluated at the same time (default: SLURM_CPUS_PER_TASK
    /// in a Slurm job that set it, else one per core).
    #[arg(long, value_name = "N", value_parser = crate::limits::threads)]
    jobs: Option<usize>,
    /// Evaluate only slice I of N (candidates with index % N == I), e.g.
    /// 0/4; `slurm` takes I and N from a Slurm array task
    /// (SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN, and
    /// SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "I/N|slurm")]
    shard: Option<String>,
    /// Stop starting candidates after this long (`90s`, `15m`, `2h`).
    #[arg(long, value_name = "TIME")]
    time_limit: Option<String>,
    /// Write only results.jsonl, no report (shards do this by default).
    #[arg(long)]
    no_report: bool,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Latency: threads of the engine.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = crate::limits::threads)]
    latency_threads: usize,
    /// Latency: untimed warm-up runs.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = crate::limits::warmup)]
    latency_warmup: usize,
    /// Latency: timed runs (the median is reported).
    #[arg(long, default_value_t = 7, value_name = "N", value_parser = crate::limits::runs)]
    latency_runs: usize,
    /// Latency: batch size.
    #[arg(long, default_value_t = 1, value_name = "N")]
    latency_batch: usize,
    /// Proxy: minibatch size.
    #[arg(long, default_value_t = 32, value_name = "N")]
    proxy_batch: usize,
    /// Proxy: input resolution (set through the spec's `resolution` parameter).
    #[arg(long, default_value_t = 64, value_name = "PIXELS")]
    proxy_resolution: usize,
    /// Train: the dataset (`mnist-sample`, `fashion-sample`, `fashion-mnist`
    /// or a dataset directory; see `shufflekit train --help`).
    #[arg(long, default_value = "mnist-sample", value_name = "DATA")]
    data: String,
    /// Train: trainings per candidate, with seeds --seed, --seed + 1, ...
    /// (the report shows mean ± 95% interval).
    #[arg(long, default_value_t = 1, value_name = "N")]
    seeds: usize,
    /// Train: fraction of the training set held out (per class, chosen by
    /// --seed) as the validation set the choice is made on.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    validation: f64,
    /// Train: epochs per candidate.
    #[arg(long, default_value_t = 3, value_name = "N")]
    epochs: usize,
    /// Train: minibatch size.
    #[arg(long, default_value_t = 64, value_name = "N")]
    train_batch: usize,
    /// Train: peak learning rate.
    #[arg(long, default_value_t = 0.1, value_name = "LR")]
    train_lr: f64,
    /// Train: do not also train a shuffle=false candidate with shuffle=true
    /// (when another run trains the shuffled variants with the same seeds).
    #[arg(long)]
    no_shuffle_counterpart: bool,
}

/// Options of `shufflekit report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Results files (results.jsonl of one run or of several shards).
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// The report directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Pareto objectives, e.g. `mflops:min,naswot:max`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    objectives: Vec<String>,
}

/// Options of `shufflekit report-reproduction`.
#[derive(clap::Args)]
pub struct ReproductionArgs {
    /// Results files: the Table 2 search(es) and the Table 3
    /// (`--set shuffle=false`) search, each read on its own.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// The Markdown file to write; the chart goes into a directory named
    /// after it (`docs/reproduction/`).
    #[arg(long, value_name = "FILE", default_value = "docs/reproduction.md")]
    out: PathBuf,
    /// A line shown in bold at the top (e.g. that this is a smoke run).
    #[arg(long, value_name = "TEXT")]
    banner: Option<String>,
}

/// The command line as typed, quoted for a POSIX shell.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_objectives(list: &[String]) -> anyhow::Result<Vec<Objective>> {
    list.iter()
        .map(|o| {
            Objective::parse(o)
                .with_context(|| format!("bad objective `{o}`: expected METRIC:min or METRIC:max"))
        })
        .collect()
}

/// Runs `shufflekit search`.
pub fn search(args: &SearchArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let parsed = Spec::parse_file(&args.spec)?;
    let file = match &args.space {
        Some(p) => SpaceFile::read(p)?,
        None => SpaceFile::default(),
    };
    let mut sweeps = file.sweeps.clone();
    for s in &args.sweep {
        let sweep = Sweep::parse(s)?;
        sweeps.retain(|f| f.param != sweep.param);
        sweeps.push(sweep);
    }
    let mut sets = file.sets.clone();
    for s in &args.set {
        let (k, v) = shufflekit_spec::parse_override(s)?;
        sets.retain(|(f, _)| *f != k);
        sets.push((k, v));
    }
    let convention_name = args
        .convention
        .clone()
        .or(file.convention.clone())
        .unwrap_or_else(|| "macs".into());
    let convention = Convention::from_name(&convention_name).with_context(|| {
        format!("unknown convention `{convention_name}` (macs, flops, macs-all)")
    })?;
    let scope_name = args
        .count
        .clone()
        .or(file.count.clone())
        .unwrap_or_else(|| "all".into());
    let scope = CountScope::from_name(&scope_name)
        .with_context(|| format!("unknown --count `{scope_name}` (all, conv)"))?;
    let max_memory = match &args.max_memory {
        Some(m) => Some(parse_bytes(m)?),
        None => file.max_memory,
    };
    let constraints = Constraints {
        budget_m: args.budget.or(file.budget),
        max_params: args.max_params.or(file.max_params),
        max_memory_bytes: max_memory,
        max_latency_ms: args.max_latency.or(file.max_latency),
    };
    let evaluators: Vec<String> = if !args.evaluate.is_empty() {
        args.evaluate.clone()
    } else {
        file.evaluate
            .clone()
            .unwrap_or_else(|| vec!["flops".into()])
    };
    let env = |name: &str| std::env::var(name).ok();
    let shard = match args.shard.as_deref() {
        None => None,
        Some("slurm") => Some(crate::slurm::shard_from_env(env)?),
        Some(text) => Some(Shard::parse(text)?),
    };
    let jobs = match args.jobs {
        Some(j) => Some(j),
        None => crate::slurm::cpus_per_task(env)?,
    };
    let time_limit = args.time_limit.as_deref().map(parse_duration).transpose()?;
    let objectives = parse_objectives(&args.objectives)?;
    let results_path = args.out.join("results.jsonl");

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C, or SIGTERM from a scheduler cancelling or preempting the
        // job (Slurm sends SIGKILL KillWait seconds later): stop scheduling,
        // keep what finishes. A second signal aborts at once; the results
        // file keeps whole lines and the next --resume drops a cut one.
        let installed = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again (Ctrl-C or SIGTERM): aborting");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted (Ctrl-C or SIGTERM): finishing the running candidates (again to abort)"
            );
        });
        if let Err(e) = installed {
            eprintln!("warning: cannot install the Ctrl-C handler: {e}");
        }
    }

    let mut search = Search::new(parsed, args.spec.display().to_string())
        .with_counting(Counting { convention, scope })
        .with_constraints(constraints)
        .with_seed(args.seed)
        .with_shard(shard)
        .with_time_limit(time_limit)
        .with_results(&results_path)
        .with_existing(if args.resume {
            ExistingResults::Resume
        } else if args.force {
            ExistingResults::Overwrite
        } else {
            ExistingResults::Refuse
        })
        .with_progress(!args.no_progress)
        .with_stop_flag(stop)
        .with_command(command_line())
        .with_match_resolution(args.match_resolution);
    if let Some(j) = jobs {
        search = search.with_jobs(j);
    }
    for s in sweeps {
        search = search.with_sweep(s);
    }
    for (k, v) in sets {
        search = search.with_set(k, v);
    }
    if let Some(p) = args.match_budget.clone().or(file.match_budget.clone()) {
        search = search.with_match_budget(p);
    }
    for name in &evaluators {
        search = match name.trim() {
            "flops" => search.with_evaluator(Box::new(shufflekit_search::FlopsEvaluator)),
            "latency" => search.with_evaluator(Box::new(LatencyEvaluator::new(LatencyOptions {
                threads: args.latency_threads,
                warmup: args.latency_warmup,
                runs: args.latency_runs,
                batch: args.latency_batch,
            })?)),
            "proxy" => search.with_evaluator(Box::new(ProxyEvaluator::new(ProxyOptions {
                batch: args.proxy_batch,
                resolution: args.proxy_resolution,
                resolution_param: Some("resolution".into()),
            })?)),
            "paper" => search.with_evaluator(Box::new(PaperEvaluator)),
            "train" => search.with_evaluator(Box::new(TrainEvaluator::new(
                TrainEvalOptions {
                    data: shufflekit_train::data::DataSource::parse(&args.data),
                    epochs: args.epochs,
                    batch: args.train_batch,
                    lr: args.train_lr,
                    seeds: args.seeds,
                    validation: args.validation,
                    shuffle_counterpart: !args.no_shuffle_counterpart,
                },
                args.seed,
            )?)),
            other => {
                bail!(
                    "unknown evaluator `{other}`: choose among flops, latency, proxy, paper, train"
                )
            }
        };
    }
    let report = search.run()?;
    if let Some(note) = &report.lock_note {
        eprintln!("warning: {note}");
    }
    let results = &report.results;
    for w in &results.warnings {
        eprintln!("warning: {w}");
    }
    writeln!(
        out,
        "stopped: {} ({} evaluated now, {} already done, {} left, {:.1} s)",
        report.stop_reason.describe(),
        report.evaluated,
        report.already_done,
        report.remaining,
        report.seconds
    )?;
    print_summary(results, &objectives, out)?;
    writeln!(out, "results: {}", report.results_path.display())?;
    if shard.is_none() && !args.no_report {
        let r = shufflekit_reports::render(
            results,
            &args.out,
            &shufflekit_reports::ReportOptions {
                objectives,
                render_command: None,
                inputs: vec![report.results_path.clone()],
            },
        )?;
        writeln!(out, "report: {}", r.dir.join("index.html").display())?;
        for path in write_training_report(&r.dir, &results.records)? {
            writeln!(out, "training report: {}", path.display())?;
        }
    } else if shard.is_some() {
        writeln!(
            out,
            "shard done: merge the shards with `shufflekit report DIR*/results.jsonl --out REPORT`"
        )?;
    }
    Ok(())
}

fn print_summary(
    results: &Results,
    objectives: &[Objective],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use shufflekit_search::pareto::{choose, default_objectives, pareto_front};
    let records = &results.records;
    let matched: Vec<_> = records.iter().filter(|r| r.matched.is_some()).collect();
    if !matched.is_empty() {
        writeln!(out, "budget matching:")?;
        for r in matched {
            if let Some(m) = &r.matched {
                writeln!(
                    out,
                    "  {:<28} {}={:<8} channels {:<6} cost {:>10.3} M{}",
                    r.id,
                    m.param,
                    m.value.to_string(),
                    m.rounded_channels
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    m.cost as f64 / 1e6,
                    if m.monotone {
                        ""
                    } else {
                        "  (cost not monotone!)"
                    }
                )?;
            }
        }
    }
    for r in records
        .iter()
        .filter(|r| r.matched.is_none() && r.status == Status::Infeasible && r.params.len() == 1)
    {
        writeln!(out, "  {:<28} {}", r.id, r.violations.join("; "))?;
    }
    let objectives = if objectives.is_empty() {
        default_objectives(records)
    } else {
        objectives.to_vec()
    };
    let front = pareto_front(records, &objectives);
    let headline = [
        metric::MFLOPS,
        shufflekit_search::train::train_metric::VAL_ACCURACY,
        shufflekit_search::train::train_metric::ACCURACY,
        metric::NASWOT,
        metric::PAPER_ERROR,
        metric::LATENCY_MS,
    ];
    writeln!(out, "pareto front ({} candidates):", front.len())?;
    for &i in front.iter().take(20) {
        writeln!(out, "  {}", records[i].headline(&headline))?;
    }
    if front.len() > 20 {
        writeln!(out, "  ... {} more in the report", front.len() - 20)?;
    }
    match choose(records) {
        Some(i) => writeln!(out, "chosen: {}", records[i].headline(&headline))?,
        None => writeln!(out, "chosen: no feasible candidate")?,
    }
    let errors = records.iter().filter(|r| r.status == Status::Error).count();
    if errors > 0 {
        writeln!(
            out,
            "{errors} candidate(s) failed; see the error column of results.csv"
        )?;
    }
    Ok(())
}

/// Runs `shufflekit report`.
pub fn report(args: &ReportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let results = Results::read_all(&args.results)?;
    for w in &results.warnings {
        eprintln!("warning: {w}");
    }
    let objectives = parse_objectives(&args.objectives)?;
    print_summary(&results, &objectives, out)?;
    let r = shufflekit_reports::render(
        &results,
        &args.out,
        &shufflekit_reports::ReportOptions {
            objectives,
            render_command: Some(command_line()),
            inputs: args.results.clone(),
        },
    )?;
    for path in write_training_report(&r.dir, &results.records)? {
        writeln!(out, "training report: {}", path.display())?;
    }
    writeln!(
        out,
        "report: {} ({} candidates from {} file(s))",
        r.dir.join("index.html").display(),
        results.records.len(),
        args.results.len()
    )?;
    Ok(())
}

/// `shufflekit report-reproduction`: renders the replay of the paper's
/// Tables 2 and 3 from results files.
pub fn report_reproduction(args: &ReproductionArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let inputs = args
        .results
        .iter()
        .map(|p| Results::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let stem = args
        .out
        .file_stem()
        .context("--out needs a file name")?
        .to_string_lossy()
        .into_owned();
    let chart_dir = args.out.with_file_name(&stem);
    let md = shufflekit_reports::reproduction::render(
        &inputs,
        &chart_dir,
        &stem,
        &shufflekit_reports::reproduction::ReproductionOptions {
            command: Some(command_line()),
            banner: args.banner.clone(),
            inputs: args.results.clone(),
        },
    )?;
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(
        out,
        "reproduction: {} (chart in {})",
        args.out.display(),
        chart_dir.display()
    )?;
    Ok(())
}
