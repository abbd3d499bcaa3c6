//! A search that trains on the embedded Fashion-MNIST sample with two
//! seeds per candidate, end to end: every seed's accuracies in
//! results.jsonl, mean ± interval in the report, error bars in the charts,
//! the choice by validation accuracy and the proxy's rank correlation with
//! a bootstrap interval.

use std::process::Command;

/// A tiny network that trains in seconds.
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

#[test]
fn a_seeded_search_on_the_fashion_sample_reports_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("tiny.yaml");
    std::fs::write(&spec, TINY_SPEC).unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args([
            "search",
            spec.to_str().unwrap(),
            "--sweep",
            "width=2,4,8",
            "--evaluate",
            "flops,latency,proxy,train",
            "--data",
            "fashion-sample",
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--seed",
            "5",
            "--latency-runs",
            "1",
            "--proxy-resolution",
            "28",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}\n{stderr}");

    // Every seed's accuracies are kept.
    let jsonl = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let candidates: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "candidate")
        .collect();
    assert_eq!(candidates.len(), 3, "{jsonl}");
    for c in &candidates {
        let m = &c["metrics"];
        for k in [
            "train_accuracy_seed1",
            "train_accuracy_seed2",
            "train_val_accuracy_seed1",
            "train_val_accuracy_seed2",
            "train_val_accuracy",
            "train_accuracy",
            "latency_ms",
            "naswot",
        ] {
            assert!(m[k].is_number(), "{k} missing in {c}");
        }
        assert_eq!(m["train_seeds"], 2.0);
        assert_eq!(c["info"]["train_seed_list"], "5,6");
        // The mean is the mean of the seeds.
        let mean = (m["train_val_accuracy_seed1"].as_f64().unwrap()
            + m["train_val_accuracy_seed2"].as_f64().unwrap())
            / 2.0;
        assert!((m["train_val_accuracy"].as_f64().unwrap() - mean).abs() < 1e-9);
        // Two different seeds train differently, so the interval is wider than 0.
        assert!(m["train_val_accuracy_ci95"].as_f64().unwrap() > 0.0, "{c}");
    }

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for want in [
        "## Accuracy and its uncertainty",
        "Selection uses the validation set",
        "trained with 2 seeds",
        " ± ",
        "Rule: the feasible candidate with the best mean validation accuracy",
        "Spearman rank correlation of the NASWOT proxy score with the trained validation accuracy",
        "bootstrap 95% interval [",
        "validation accuracy %",
        "test accuracy % (reported only)",
    ] {
        assert!(md.contains(want), "report.md lacks `{want}`:\n{md}");
    }
    assert!(
        md.contains("is outside the intervals") || md.contains("is NOT outside the intervals"),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<h2>Accuracy and its uncertainty</h2>"));
    assert!(html.contains(" ± "));
    // The trade-off chart's y axis is the trained accuracy, with error bars.
    let svg = std::fs::read_to_string(out.join("plots/score_train_val_accuracy.svg")).unwrap();
    assert!(
        svg.contains("95% interval over seeds"),
        "no error bars in the chart"
    );
    assert!(out.join("plots/score_train_accuracy.svg").is_file());
    let training = std::fs::read_to_string(out.join("training.md")).unwrap();
    assert!(training.contains("| 2 | "), "{training}");
    assert!(out.join("accuracy_vs_mflops.svg").is_file());
    assert!(stdout.contains("chosen: "), "{stdout}");
    // The same numbers as JSON.
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("statistics.json")).unwrap())
            .unwrap();
    assert_eq!(stats["selection_metric"], "train_val_accuracy");
    assert_eq!(stats["candidates"].as_array().unwrap().len(), 3);
    let first = &stats["candidates"][0]["validation_accuracy"];
    assert_eq!(first["seeds"].as_array().unwrap().len(), 2);
    assert!(first["ci95_half_width"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["choice"]["lead_outside_intervals"].is_boolean(),
        "{stats}"
    );
    let rho = &stats["naswot_vs_trained_spearman"];
    assert_eq!(rho["resamples"], 2000);
    assert!(
        rho["bootstrap_ci95"].as_array().unwrap().len() == 2,
        "{stats}"
    );
}

/// A tiny network with the two parameters the paper replay reads: `groups`
/// (here a width multiplier) and `shuffle` (an extra layer, so the two
/// settings build different graphs).
const TINY_GROUPS_SPEC: &str = "
name: tiny_groups
params: {resolution: 28, channels: 1, classes: 10, groups: 1, shuffle: true}
input: [channels, resolution, resolution]
layers:
  - conv: {out: 2 * groups, kernel: 3, stride: 2, padding: 1}
  - batch_norm
  - relu
  - if: shuffle
    relu: {}
  - global_avg_pool
  - flatten
  - linear: {out: classes}
";

fn run_search(spec: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(["search", spec.to_str().unwrap()])
        .args(extra)
        .args([
            "--evaluate",
            "flops,train",
            "--data",
            "fashion-sample",
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let jsonl = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let last = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|v| v["type"] == "candidate")
        .unwrap();
    last
}

#[test]
fn the_paper_replay_renders_from_a_table_2_and_a_table_3_search() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("tiny.yaml");
    std::fs::write(&spec, TINY_GROUPS_SPEC).unwrap();
    let (t2, t3, t3_again) = (
        tmp.path().join("t2"),
        tmp.path().join("t3"),
        tmp.path().join("t3-again"),
    );
    run_search(&spec, &t2, &["--sweep", "groups=1,2"]);
    // Table 3 without retraining the shuffled counterpart (Table 2 has it).
    let off = run_search(
        &spec,
        &t3,
        &[
            "--sweep",
            "groups=2",
            "--set",
            "shuffle=false",
            "--no-shuffle-counterpart",
        ],
    );
    assert!(
        off["metrics"]["train_accuracy_with_shuffle"].is_null(),
        "{off}"
    );
    // By default the counterpart is trained too, and seeded training repeats
    // Table 2's run exactly.
    let again = run_search(
        &spec,
        &t3_again,
        &["--sweep", "groups=2", "--set", "shuffle=false"],
    );
    assert!(
        again["metrics"]["train_accuracy_with_shuffle"].is_number(),
        "{again}"
    );

    let doc = tmp.path().join("docs/reproduction.md");
    std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(["report-reproduction"])
        .arg(t2.join("results.jsonl"))
        .arg(t3_again.join("results.jsonl"))
        .args(["--out", doc.to_str().unwrap(), "--banner", "Smoke run"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(&doc).unwrap();
    for want in [
        "> **Smoke run**",
        "## Commands",
        "--set shuffle=false",
        "report-reproduction",
        "## Machine and setup",
        "| g=1 | ",
        "| g=2, no shuffle | ",
        " ± ",
        "- **Table 2: g > 1 beats g = 1 at a matched budget.** ",
        "- **Table 3: channel shuffle on beats shuffle off.** ",
        " here: ",
        "identical, as seeded training must be",
        "](reproduction/reproduction.png)",
    ] {
        assert!(md.contains(want), "reproduction.md lacks `{want}`:\n{md}");
    }
    assert!(tmp
        .path()
        .join("docs/reproduction/reproduction.svg")
        .is_file());
}
