//! `shufflekit search` and `shufflekit report` end to end: the paper
//! replay, Ctrl-C (a real SIGINT) then --resume, and error messages.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn shufflekit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shufflekit"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> Output {
    shufflekit().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn search_replays_the_papers_budget_matching() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("replay");
    let o = run(&[
        "search",
        "specs/shufflenet_v1.yaml",
        "--sweep",
        "groups=1,2,3,4,8",
        "--match-budget",
        "stage2",
        "--budget",
        "143",
        "--count",
        "conv",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}{}", stdout, text(&o.stderr));
    for (g, w) in [(1, 144), (2, 200), (3, 240), (4, 272), (8, 384)] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("groups={g} ")))
            .unwrap_or_else(|| panic!("no line for groups={g} in {stdout}"));
        assert!(
            line.contains(&format!("stage2={w} ")) && line.contains(&format!("channels {w} ")),
            "{line}"
        );
    }
    assert!(out.join("index.html").is_file());
    assert!(out.join("plots/cost_by_layer_kind.png").is_file());
}

fn candidate_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"type\":\"candidate\""))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn ctrl_c_then_resume_gives_the_results_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "search",
            "specs/shufflenet_v1.yaml",
            "--sweep",
            "groups=1,2,3,4,8",
            "--sweep",
            "width=0.25:1.0:0.125",
            "--budget",
            "100",
            "--evaluate",
            "flops,proxy,paper",
            "--proxy-batch",
            "16",
            "--proxy-resolution",
            "64",
            "--seed",
            "3",
            "--jobs",
            "1",
            "--no-progress",
            "--no-report",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = dir.path().join("whole");
    let o = shufflekit().args(args(&whole)).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(candidate_lines(&whole.join("results.jsonl")), 35);

    let cut = dir.path().join("cut");
    let results = cut.join("results.jsonl");
    let child = shufflekit()
        .args(args(&cut))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while candidate_lines(&results) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", text(&o.stderr));
    assert!(stdout.contains("stopped: interrupted"), "{stdout}");
    let kept = candidate_lines(&results);
    assert!(kept < 35, "the run ended before the interrupt");

    let o = shufflekit()
        .args(args(&cut))
        .arg("--resume")
        .output()
        .unwrap();
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(stdout.contains("space exhausted"), "{stdout}");
    assert!(stdout.contains(&format!("{kept} already done")), "{stdout}");

    for (name, dir_in) in [("whole-report", &whole), ("cut-report", &cut)] {
        let o = run(&[
            "report",
            dir_in.join("results.jsonl").to_str().unwrap(),
            "--out",
            dir.path().join(name).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let a = std::fs::read_to_string(dir.path().join("whole-report/results.csv")).unwrap();
    let b = std::fs::read_to_string(dir.path().join("cut-report/results.csv")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_input_gives_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--sweep", "groups=1,,2"],
            "bad sweep `groups=1,,2`: empty value",
        ),
        (&["--sweep", "width=2:1:0.1"], "below its start"),
        (&["--sweep", "grops=1,2"], "unknown parameter `grops`"),
        (
            &["--match-budget", "stage2"],
            "--match-budget needs --budget",
        ),
        (&["--shard", "3/2"], "bad shard `3/2`"),
        (&["--evaluate", "flops,magic"], "unknown evaluator `magic`"),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "search",
            "specs/shufflenet_v1.yaml",
            "--no-progress",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        let stderr = text(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // An output directory that cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(&[
        "search",
        "specs/shufflenet_v1.yaml",
        "--out",
        file.join("sub").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("file"), "{}", text(&o.stderr));
    // A corrupt results file names the file and line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"stop\"}\n").unwrap();
    let o = run(&["report", bad.to_str().unwrap(), "--out", out]);
    let stderr = text(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("bad.jsonl:1:"), "{stderr}");
}

#[test]
fn shard_slurm_reads_the_array_task_and_failed_candidates_do_not_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let search = |env: &[(&str, &str)]| {
        let mut c = shufflekit();
        c.args([
            "search",
            "specs/shufflenet_v1.yaml",
            "--sweep",
            "groups=1,2,5,8",
            "--shard",
            "slurm",
            "--force",
            "--out",
            out.to_str().unwrap(),
        ]);
        for name in [
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_COUNT",
            "SLURM_ARRAY_TASK_MIN",
            "SLURM_ARRAY_TASK_MAX",
            "SLURM_ARRAY_TASK_STEP",
            "SLURM_CPUS_PER_TASK",
            "SLURM_JOB_ID",
        ] {
            c.env_remove(name);
        }
        c.envs(env.iter().copied());
        c.output().unwrap()
    };
    // --array=1-2: task 2 is shard 1 of 2 (indices 1 and 3: groups=2, 8).
    let o = search(&[
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "2"),
        ("SLURM_CPUS_PER_TASK", "1"),
    ]);
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // stderr is a pipe here: no progress bar, not even its last frame.
    assert!(
        !stderr.contains("eta") && !stderr.contains('\u{1b}'),
        "{stderr}"
    );
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert!(
        results.contains("\"shard\":{\"index\":1,\"count\":2}"),
        "{results}"
    );
    let ids: Vec<&str> = results
        .lines()
        .filter(|l| l.contains("\"type\":\"candidate\""))
        .filter_map(|l| l.split("\"id\":\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(ids, ["groups=2", "groups=8"]);

    // Shard 0 has groups=5, which does not build: recorded, exit status 0.
    let o = search(&[
        ("SLURM_ARRAY_TASK_ID", "0"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", text(&o.stderr));
    assert!(stdout.contains("1 candidate(s) failed"), "{stdout}");
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert!(results.contains("no entry for 5 in table"), "{results}");

    for (env, expected) in [
        (&[][..], "SLURM_ARRAY_TASK_ID is not set"),
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ][..],
            "task 3 is past the 2 tasks",
        ),
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("SLURM_CPUS_PER_TASK", "lots"),
            ][..],
            "SLURM_CPUS_PER_TASK=`lots` is not a positive number",
        ),
    ] {
        let o = search(env);
        let stderr = text(&o.stderr);
        assert!(!o.status.success(), "{env:?} succeeded");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn space_files_are_read_and_their_errors_show_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let space = dir.path().join("space.yaml");
    std::fs::write(
        &space,
        "sweep:\n  groups: [1, 2]\nset: {width: 0.5}\nconvention: macs\n",
    )
    .unwrap();
    let o = run(&[
        "search",
        "specs/shufflenet_v1.yaml",
        "--space",
        space.to_str().unwrap(),
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", text(&o.stderr));
    // Both groups are evaluated, at the file's width 0.5 (ShuffleNet 0.5x
    // g=1 has 38.5M MACs; 1x has 143M).
    assert!(stdout.contains("(2 evaluated now"), "{stdout}");
    assert!(stdout.contains("groups=1@mflops=38.5"), "{stdout}");
    assert!(stdout.contains("groups=2@"), "{stdout}");
    // Each located error: the message, file:line:col and the line itself.
    let cases = [
        (
            "sweep: {groups: [1, 2]}\nbudgett: 140\n",
            "unknown key `budgett`",
            "2:1",
            "budgett: 140",
        ),
        (
            "sweep:\n  width: \"2:1:0.1\"\n",
            "below its start",
            "2:10",
            "width: \"2:1:0.1\"",
        ),
        (
            "budget: lots\n",
            "`budget` must be a number",
            "1:9",
            "budget: lots",
        ),
        ("sweep: [1, 2\n", "invalid YAML", "2:1", ""),
    ];
    for (yaml, message, line_col, line) in cases {
        std::fs::write(&space, yaml).unwrap();
        let o = run(&[
            "search",
            "specs/shufflenet_v1.yaml",
            "--space",
            space.to_str().unwrap(),
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = text(&o.stderr);
        assert!(!o.status.success(), "{yaml:?} succeeded");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(message), "{yaml:?}: {stderr}");
        assert!(
            stderr.contains(&format!("space.yaml:{line_col}")),
            "{yaml:?}: {stderr}"
        );
        assert!(stderr.contains(line), "{yaml:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_spec_error_met_by_a_search_shows_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "name: x\nparams: {groups: 3}\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, kernel: 3, groups: groups}\n",
    )
    .unwrap();
    let out = dir.path().join("o");
    let o = run(&[
        "search",
        spec.to_str().unwrap(),
        "--sweep",
        "groups=1,3",
        "--evaluate",
        "flops",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not divisible by groups 3"), "{stderr}");
    assert!(stderr.contains("bad.yaml:5:5"), "{stderr}");
    assert!(stderr.contains("- conv: {out: 4"), "{stderr}");
}
