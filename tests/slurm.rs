//! The Slurm recipe (`examples/slurm/sweep.sbatch`, shown in docs/search.md)
//! run verbatim against a real one-node Slurm that `scripts/slurm-cluster`
//! starts as root: job arrays of a FLOPs + latency sweep and of a training
//! sweep, merged with `shufflekit report` and compared candidate by
//! candidate with unsharded runs; a task cancelled (SIGTERM) and one killed
//! (SIGKILL) mid-way, then resumed; a broken spec failing its tasks; and the
//! lock that refuses a second run on the same `--out`.
//!
//! If Slurm cannot start, the test fails with the daemons' log tails. It
//! prints `sinfo`, every array task's end state (from the job-completion
//! log) and the equality checks: scripts/test runs it on its own with
//! `--nocapture` so that they are in the CI log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shufflekit_search::{Record, Results};

/// Generous bounds for a loaded 2-core CI machine; reaching one is a hang.
const WAIT: Duration = Duration::from_secs(300);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A running one-node cluster; stopped (jobs cancelled, daemons ended, its
/// directory removed) when dropped, with the logs printed on a failure.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: PathBuf) -> Cluster {
        let o = output(
            Command::new(root().join("scripts/slurm-cluster"))
                .arg("start")
                .arg(&dir),
        );
        let log = text(&o.stderr);
        assert!(
            o.status.success(),
            "scripts/slurm-cluster start failed ({}):\n{log}",
            o.status
        );
        eprintln!("{log}");
        Cluster { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// A Slurm client command talking to this cluster.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf()).current_dir(root());
        c
    }

    /// Runs a client command that must succeed; its stdout.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let o = output(self.cmd(program).args(args));
        assert!(
            o.status.success(),
            "{program} {args:?} failed: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Submits examples/slurm/sweep.sbatch as it is, with the array and
    /// CPUs on the command line and the search's arguments after it.
    fn submit(&self, array: &str, runs: &Path, logs: &Path, search: &[String]) -> String {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--array={array}"),
            "--cpus-per-task=1".into(),
            format!("--output={}/%x-%A_%a.out", logs.display()),
            "examples/slurm/sweep.sbatch".into(),
        ];
        args.extend_from_slice(search);
        let o = output(
            self.cmd("sbatch")
                .args(&args)
                .env("SHUFFLEKIT", env!("CARGO_BIN_EXE_shufflekit"))
                .env("RUNS", runs),
        );
        assert!(o.status.success(), "sbatch failed: {}", text(&o.stderr));
        let id = text(&o.stdout);
        let id = id.trim().split(';').next().unwrap_or_default().to_string();
        assert!(
            !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
            "{id}"
        );
        eprintln!("submitted array job {id} (--array={array})");
        id
    }

    /// Waits until none of the jobs is queued or running.
    fn wait_gone(&self, jobs: &[&str]) {
        let start = Instant::now();
        loop {
            let left = self.run("squeue", &["-h", "-j", &jobs.join(","), "-o", "%i %T"]);
            if left.trim().is_empty() {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "jobs still in the queue after {WAIT:?}:\n{left}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end state and exit code of each task of an array job, from the
    /// job-completion log (JobCompType=jobcomp/filetxt), printed.
    fn end_states(&self, job: &str, tasks: usize) -> BTreeMap<u64, (String, String)> {
        let path = self.dir.join("log/jobcomp.txt");
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let mut states = BTreeMap::new();
            for line in log.lines() {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .map(str::to_string)
                };
                if field("ArrayJobId=").as_deref() != Some(job) {
                    continue;
                }
                let (Some(task), Some(state), Some(exit)) = (
                    field("ArrayTaskId=").and_then(|t| t.parse().ok()),
                    field("JobState="),
                    field("ExitCode="),
                ) else {
                    continue;
                };
                states.insert(task, (state, exit));
            }
            if states.len() == tasks {
                for (task, (state, exit)) in &states {
                    eprintln!("  array task {job}_{task}: {state} (exit code {exit})");
                }
                return states;
            }
            assert!(
                start.elapsed() < WAIT,
                "{}: {} of the {tasks} tasks of job {job} after {WAIT:?}:\n{log}",
                path.display(),
                states.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stop = |what: &str| {
            Command::new(root().join("scripts/slurm-cluster"))
                .arg(what)
                .arg(&self.dir)
                .status()
        };
        if std::thread::panicking() {
            let _ = stop("logs");
        }
        match stop("stop") {
            Ok(s) if s.success() => {}
            other => eprintln!("scripts/slurm-cluster stop: {other:?}"),
        }
    }
}

/// The ids of the candidate lines of a results file; every line must be
/// whole JSON (no interleaving, no cut line left behind).
fn candidate_ids(path: &Path) -> Vec<String> {
    let body = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    body.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}: {line}", path.display(), n + 1));
            (v["type"] == "candidate").then(|| v["id"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn candidates_so_far(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"type\":\"candidate\""))
                .count()
        })
        .unwrap_or(0)
}

fn wait_for_candidates(path: &Path, n: usize) {
    let start = Instant::now();
    while candidates_so_far(path) < n {
        assert!(
            start.elapsed() < WAIT,
            "{}: fewer than {n} candidates after {WAIT:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A record without what depends on the machine's speed: timings and
/// latencies.
fn deterministic(r: &Record) -> Record {
    let mut r = r.clone();
    r.seconds = 0.0;
    r.metrics
        .retain(|k, _| !k.starts_with("latency") && k != "jit_compile_ms" && k != "train_seconds");
    r
}

/// Checks that the merged report's results equal an unsharded run's,
/// candidate by candidate; prints the check.
fn assert_same_candidates(what: &str, merged: &Path, whole: &Path, expected: usize) {
    let merged = Results::read(merged).unwrap();
    let whole = Results::read(whole).unwrap();
    assert_eq!(whole.records.len(), expected, "{what}: the unsharded run");
    assert_eq!(
        merged.records.len(),
        whole.records.len(),
        "{what}: merged vs unsharded"
    );
    let mut fields = 0;
    for (m, w) in merged.records.iter().zip(&whole.records) {
        assert_eq!(deterministic(m), deterministic(w), "{what}: {}", w.id);
        fields += deterministic(w).metrics.len();
    }
    eprintln!(
        "equality check passed ({what}): the merged shards and the unsharded run agree on all {} \
         candidates (index, parameters, status, errors and {fields} metric values: MACs, params, \
         memory{}; latency and timings excluded)",
        whole.records.len(),
        if what.contains("train") {
            ", test accuracy and losses"
        } else {
            ""
        }
    );
}

fn shufflekit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shufflekit"));
    c.current_dir(root());
    c
}

/// An unsharded run of the same search, outside Slurm, with another
/// worker count (results do not depend on it).
fn whole_run(search: &[String], out: &Path) {
    let o = output(
        shufflekit()
            .args(search)
            .args(["--jobs", "2", "--no-report", "--out"])
            .arg(out)
            .env_remove("SLURM_CPUS_PER_TASK"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn merge(shards: &Path, out: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shards)
        .unwrap()
        .map(|e| e.unwrap().path().join("results.jsonl"))
        .collect();
    files.sort();
    let o = output(
        shufflekit()
            .arg("report")
            .args(&files)
            .arg("--out")
            .arg(out),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    eprintln!(
        "merged {} shard(s) with shufflekit report: {}",
        files.len(),
        stdout.lines().last().unwrap_or_default()
    );
}

fn task_log(logs: &Path, job: &str, task: u64) -> String {
    let path = logs.join(format!("shufflekit-search-{job}_{task}.out"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A tiny network that trains in seconds on the MNIST sample.
const TINY_SPEC: &str = "
name: tiny
params: {resolution: 28, channels: 1, classes: 10, width: 4}
input: [channels, resolution, resolution]
layers:
  - conv: {out: width, kernel: 3, stride: 2, padding: 1}
  - batch_norm
  - relu
  - global_avg_pool
  - flatten
  - linear: {out: classes}
";

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn slurm_cluster_job_arrays_match_an_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let logs = tmp.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let cluster = Cluster::start(tmp.join("cluster"));

    // The recipe in the docs is the checked-in file, word for word.
    let sbatch = std::fs::read_to_string(root().join("examples/slurm/sweep.sbatch")).unwrap();
    let docs = std::fs::read_to_string(root().join("docs/search.md")).unwrap();
    assert!(
        docs.contains(&format!("```bash\n{sbatch}```")),
        "docs/search.md does not show examples/slurm/sweep.sbatch as it is"
    );

    // 30 candidates: FLOPs and latency; groups=5 does not build (6 error
    // records, which must not fail the tasks).
    let sweep = strings(&[
        "search",
        "specs/shufflenet_v1.yaml",
        "--sweep",
        "groups=1,2,3,5,8",
        "--sweep",
        "width=0.25:1.5:0.25",
        "--set",
        "resolution=64",
        "--evaluate",
        "flops,latency",
        "--latency-warmup",
        "1",
        "--latency-runs",
        "3",
    ]);
    let sweep_runs = tmp.join("sweep");
    let first = cluster.submit("0-2", &sweep_runs, &logs, &sweep[1..]);
    // Task 1 is cancelled (scancel: SIGTERM, it stops after the running
    // candidate), task 2 killed outright (SIGKILL: a stale lock is left,
    // perhaps a cut line).
    let shard = |i: u64| sweep_runs.join(format!("shard-{i}/results.jsonl"));
    let lock = |i: u64| sweep_runs.join(format!("shard-{i}/results.jsonl.lock"));
    // Each is paused first (SIGSTOP, by the pid in the lock it holds), so
    // that however fast this machine is, neither finishes its shard before
    // the signal lands. Slurm's cancel sends SIGCONT, then SIGTERM.
    let pause = |i: u64| -> String {
        wait_for_candidates(&shard(i), 1);
        let owner = std::fs::read_to_string(lock(i)).unwrap();
        let pid = owner
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .unwrap_or_else(|| panic!("no pid in the lock file: {owner}"))
            .to_string();
        let o = output(Command::new("kill").args(["-STOP", &pid]));
        assert!(o.status.success(), "kill -STOP {pid}: {}", text(&o.stderr));
        pid
    };
    pause(1);
    cluster.run("scancel", &[&format!("{first}_1")]);
    // SIGKILL straight to the search, as the OOM killer, a node crash or
    // KillWait running out would.
    let pid = pause(2);
    let o = output(Command::new("kill").args(["-KILL", &pid]));
    assert!(o.status.success(), "kill -KILL {pid}: {}", text(&o.stderr));
    cluster.wait_gone(&[&first]);
    eprintln!("first submission of the sweep (task 1 cancelled, task 2 killed):");
    let states = cluster.end_states(&first, 3);
    assert_eq!(states[&0].0, "COMPLETED", "{states:?}");
    assert_eq!(states[&1].0, "CANCELLED", "{states:?}");
    assert_ne!(states[&2].0, "COMPLETED", "{states:?}");
    for i in [1, 2] {
        let n = candidate_ids(&shard(i)).len();
        assert!(
            n < 10,
            "shard {i} finished ({n} candidates) before it was stopped"
        );
        eprintln!("  shard {i} stopped with {n} of its 10 candidates");
    }
    let cancelled = std::fs::read_to_string(shard(1)).unwrap();
    assert!(
        cancelled
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"type\":\"stop\"") && l.contains("interrupted")),
        "the cancelled shard did not stop cleanly on SIGTERM:\n{}",
        task_log(&logs, &first, 1)
    );
    assert!(!lock(1).exists(), "the cancelled shard left its lock");
    assert!(lock(2).exists(), "the killed shard's lock is gone");

    // The same submission again: the finished shard has nothing to do, the
    // others resume. With it: the training array and a broken spec.
    let again = cluster.submit("0-2", &sweep_runs, &logs, &sweep[1..]);
    let tiny = tmp.join("tiny.yaml");
    std::fs::write(&tiny, TINY_SPEC).unwrap();
    let train = strings(&[
        "search",
        tiny.to_str().unwrap(),
        "--sweep",
        "width=2,4,6,8",
        "--evaluate",
        "flops,train",
        "--data",
        "mnist-sample",
        "--epochs",
        "1",
        "--seed",
        "2",
    ]);
    let train_runs = tmp.join("train");
    let trained = cluster.submit("0-1", &train_runs, &logs, &train[1..]);
    let broken = tmp.join("broken.yaml");
    std::fs::write(
        &broken,
        "name: broken\nlayers:\n  - conv: {out: 8, kernel: [\n",
    )
    .unwrap();
    let broken_args = vec![
        broken.to_str().unwrap().to_string(),
        "--sweep".into(),
        "width=1,2".into(),
    ];
    let failing = cluster.submit("0-1", &tmp.join("broken"), &logs, &broken_args);
    cluster.wait_gone(&[&again, &trained, &failing]);
    eprintln!("the sweep resubmitted (--resume):");
    let states = cluster.end_states(&again, 3);
    assert!(
        states.values().all(|(s, e)| s == "COMPLETED" && e == "0:0"),
        "{states:?}"
    );
    eprintln!("the training sweep:");
    let states = cluster.end_states(&trained, 2);
    assert!(
        states.values().all(|(s, e)| s == "COMPLETED" && e == "0:0"),
        "{states:?}"
    );
    eprintln!("the broken spec:");
    let states = cluster.end_states(&failing, 2);
    assert!(states.values().all(|(s, _)| s == "FAILED"), "{states:?}");
    let log = task_log(&logs, &failing, 0);
    assert!(log.contains("broken.yaml"), "{log}");

    let log = task_log(&logs, &again, 0);
    assert!(log.contains("0 evaluated now, 10 already done"), "{log}");
    let log = task_log(&logs, &again, 2);
    assert!(
        log.contains("took over the stale lock") && log.contains("no longer running"),
        "{log}"
    );
    eprintln!(
        "  the killed shard's rerun: {}",
        log.lines()
            .find(|l| l.contains("took over"))
            .unwrap_or_default()
    );
    for (job, task) in [(&again, 1), (&again, 2), (&trained, 0)] {
        let log = task_log(&logs, job, task);
        assert!(log.contains("shard done"), "{log}");
        assert!(
            !log.contains("eta ") && !log.contains('\u{1b}'),
            "a progress bar in a batch log:\n{log}"
        );
    }

    // Every candidate once: complete, no duplicate, whole lines only.
    let mut all = BTreeSet::new();
    for i in 0..3 {
        let ids = candidate_ids(&shard(i));
        let unique: BTreeSet<_> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "shard {i} has duplicates: {ids:?}");
        assert_eq!(ids.len(), 10, "shard {i}");
        all.extend(unique);
        assert!(!lock(i).exists(), "shard {i} kept its lock");
    }
    assert_eq!(all.len(), 30);
    eprintln!("no duplicates: 3 shards x 10 candidates, 30 distinct, every line whole JSON");

    let whole = tmp.join("whole-sweep");
    whole_run(&sweep, &whole);
    merge(&sweep_runs, &tmp.join("sweep-report"));
    assert!(tmp.join("sweep-report/index.html").is_file());
    let merged = Results::read(&tmp.join("sweep-report/results.jsonl")).unwrap();
    let errors = merged
        .records
        .iter()
        .filter(|r| r.status == shufflekit_search::Status::Error)
        .count();
    assert_eq!(errors, 6, "the groups=5 candidates");
    eprintln!("the 6 candidates that do not build (groups=5) are error records; their tasks COMPLETED with exit code 0");
    assert_same_candidates(
        "FLOPs + latency sweep",
        &tmp.join("sweep-report/results.jsonl"),
        &whole.join("results.jsonl"),
        30,
    );
    let whole_train = tmp.join("whole-train");
    whole_run(&train, &whole_train);
    merge(&train_runs, &tmp.join("train-report"));
    assert!(tmp.join("train-report/training.md").is_file());
    assert_same_candidates(
        "train sweep",
        &tmp.join("train-report/results.jsonl"),
        &whole_train.join("results.jsonl"),
        4,
    );

    // Two runs on one --out: the second is refused while the first is
    // alive, and takes over once the first has been killed.
    let shared = tmp.join("shared");
    let locked_run = || {
        let mut c = shufflekit();
        c.args(&sweep)
            .args(["--jobs", "1", "--no-report", "--resume", "--out"])
            .arg(&shared);
        c
    };
    let mut first_run = locked_run()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_candidates(&shared.join("results.jsonl"), 1);
    // Paused, so that it is still there however fast it would finish.
    let o = output(Command::new("kill").args(["-STOP", &first_run.id().to_string()]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = output(&mut locked_run());
    let stderr = text(&o.stderr);
    assert!(!o.status.success(), "a second run on the same --out ran");
    assert!(
        stderr.contains(&format!("is locked by pid {} on host", first_run.id()))
            && stderr.contains("still running"),
        "{stderr}"
    );
    eprintln!("lock refusal: {}", stderr.trim());
    first_run.kill().unwrap();
    first_run.wait().unwrap();
    let o = output(&mut locked_run());
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("took over the stale lock"), "{stderr}");
    let ids = candidate_ids(&shared.join("results.jsonl"));
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (30, 30), "{ids:?}");
    eprintln!("after the owner was killed: {}", stderr.trim());
    drop(cluster);
}
