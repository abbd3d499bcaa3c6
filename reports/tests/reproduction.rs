//! docs/reproduction.md's generator on synthetic results: the claim
//! sentences for a reproducing and a non-reproducing case, the ± formatting
//! and the table.

use std::collections::BTreeMap;

use shufflekit_reports::reproduction::{
    claims, format_pm, render, utc_date, variant_table, variants, Difference, ReproductionOptions,
    Variant, Verdict,
};
use shufflekit_search::stats::MeanInterval;
use shufflekit_search::{ParamValue, Record, Results, Status};

fn record(groups: i64, shuffle: bool, test: &[f64]) -> Record {
    let mut metrics = BTreeMap::new();
    let mean = test.iter().sum::<f64>() / test.len() as f64;
    metrics.insert("mflops".into(), 12.5 + groups as f64 * 0.01);
    metrics.insert("params".into(), 100_000.0 + groups as f64);
    metrics.insert("train_accuracy".into(), mean);
    metrics.insert("train_val_accuracy".into(), mean - 1.0);
    metrics.insert("train_seeds".into(), test.len() as f64);
    metrics.insert("train_seconds".into(), 60.0);
    for (k, v) in test.iter().enumerate() {
        metrics.insert(format!("train_accuracy_seed{}", k + 1), *v);
        metrics.insert(format!("train_val_accuracy_seed{}", k + 1), *v - 1.0);
    }
    let mut info = BTreeMap::new();
    info.insert(
        "train_overrides".into(),
        format!("groups={groups},stage2=100,shuffle={shuffle}"),
    );
    Record {
        index: groups as u64,
        id: format!("groups={groups}"),
        params: [("groups".to_string(), ParamValue::Int(groups))].into(),
        status: Status::Ok,
        metrics,
        info,
        violations: vec![],
        error: None,
        matched: None,
        seconds: 61.0,
    }
}

fn variant(groups: i64, shuffle: bool, budget: f64, test: &[f64]) -> Variant {
    Variant {
        groups,
        shuffle,
        budget: Some(budget),
        record: record(groups, shuffle, test),
    }
}

/// The paper's trends with clear margins: every g > 1 above g = 1, the
/// no-shuffle variants below their shuffled counterparts.
fn reproducing() -> Vec<Variant> {
    vec![
        variant(1, true, 13.0, &[80.0, 80.2, 79.8]),
        variant(3, true, 13.0, &[82.0, 82.2, 81.8]),
        variant(8, true, 13.0, &[83.0, 83.1, 82.9]),
        variant(3, false, 13.0, &[81.0, 81.1, 80.9]),
        variant(8, false, 13.0, &[80.0, 80.2, 79.8]),
    ]
}

#[test]
fn a_reproducing_case_says_so_with_the_differences() {
    let c = claims(&reproducing());
    assert_eq!(c.len(), 3);
    assert_eq!(c[0].verdict, Verdict::Reproduces, "{}", c[0].sentence);
    assert!(
        c[0].sentence
            .starts_with("Reproduces here: 2 of 2 group counts beat g=1"),
        "{}",
        c[0].sentence
    );
    // g=3 minus g=1: 2.00, Welch interval t(0.975, 4) * sqrt(0.04/3 * 2).
    let half = 2.776_445_105 * (0.04f64 / 3.0 * 2.0).sqrt();
    assert!(
        c[0].sentence
            .contains(&format!("g=3 +2.00 ± {half:.2} points, intervals separate")),
        "{}",
        c[0].sentence
    );
    assert_eq!(c[1].verdict, Verdict::NotTested);
    assert!(c[1].sentence.contains("these results have 1 (13 MFLOPs)"));
    assert_eq!(c[2].verdict, Verdict::Reproduces, "{}", c[2].sentence);
    assert!(
        c[2].sentence.contains("g=8 at 13 MFLOPs +3.00 ±"),
        "{}",
        c[2].sentence
    );
}

#[test]
fn a_non_reproducing_case_says_so() {
    // g=1 best by a clear margin; shuffle makes no difference beyond noise.
    let vs = vec![
        variant(1, true, 13.0, &[84.0, 84.1, 83.9]),
        variant(3, true, 13.0, &[82.0, 82.2, 81.8]),
        variant(8, true, 13.0, &[81.0, 81.5, 80.5]),
        variant(3, false, 13.0, &[82.0, 83.0, 81.0]),
        variant(8, false, 13.0, &[81.0, 82.0, 80.0]),
    ];
    let c = claims(&vs);
    assert_eq!(c[0].verdict, Verdict::Contradicted, "{}", c[0].sentence);
    assert!(
        c[0].sentence
            .starts_with("Does not reproduce (the opposite is measured) here: 0 of 2"),
        "{}",
        c[0].sentence
    );
    assert_eq!(c[2].verdict, Verdict::NotResolved, "{}", c[2].sentence);
    assert!(
        c[2].sentence.contains("g=3 at 13 MFLOPs +0.00 ±"),
        "{}",
        c[2].sentence
    );
    assert!(
        c[2].sentence.contains("points, intervals overlap"),
        "{}",
        c[2].sentence
    );
    // One of two group counts above g = 1: partly.
    let mut mixed = vs.clone();
    mixed[1] = variant(3, true, 13.0, &[86.0, 86.1, 85.9]);
    assert_eq!(claims(&mixed)[0].verdict, Verdict::Partly);
}

#[test]
fn smaller_models_gaining_more_needs_two_budgets_and_is_computed() {
    let mut vs = reproducing();
    vs.push(variant(1, true, 40.0, &[88.0, 88.2, 87.8]));
    vs.push(variant(8, true, 40.0, &[88.5, 88.6, 88.4]));
    let c = claims(&vs);
    assert_eq!(c[1].verdict, Verdict::Reproduces, "{}", c[1].sentence);
    assert!(
        c[1].sentence.contains("g=8 gains +3.00 ±")
            && c[1].sentence.contains("+0.50 ±")
            && c[1].sentence.contains("the smaller model gains +2.50 ±"),
        "{}",
        c[1].sentence
    );
}

#[test]
fn one_seed_gives_no_interval_and_no_verdict() {
    let vs = vec![
        variant(1, true, 13.0, &[80.0]),
        variant(3, true, 13.0, &[90.0]),
    ];
    let c = claims(&vs);
    assert_eq!(c[0].verdict, Verdict::NotResolved);
    assert!(
        c[0].sentence.contains("+10.00 (no interval: one seed)"),
        "{}",
        c[0].sentence
    );
}

#[test]
fn plus_minus_formatting_and_welch_difference() {
    let iv = MeanInterval::of(&[1.0, 2.0, 3.0]).unwrap();
    // t(0.975, 2) = 4.302653, sd = 1, n = 3.
    assert_eq!(format_pm(&iv), "2.00 ± 2.48");
    assert_eq!(format_pm(&MeanInterval::of(&[97.125]).unwrap()), "97.12");
    let d = Difference::of(&[3.0, 4.0, 5.0], &[1.0, 2.0, 3.0]).unwrap();
    // Equal variances and sizes: df = 4, half = t(0.975, 4) * sqrt(2/3).
    assert!((d.mean - 2.0).abs() < 1e-12);
    assert!((d.half_width.unwrap() - 2.776_445_105 * (2.0f64 / 3.0).sqrt()).abs() < 1e-6);
    assert_eq!(d.display(), "+2.00 ± 2.27");
    assert_eq!(d.sign(), None);
    assert_eq!(
        Difference::of(&[1.0, 1.0], &[1.0, 1.0]).unwrap().display(),
        "+0.00 ± 0.00"
    );
}

#[test]
fn the_table_has_one_row_per_variant_with_intervals() {
    let t = variant_table(&reproducing());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2 + 5, "{t}");
    assert!(lines[0].starts_with("| variant | budget (MFLOPs) |"));
    assert_eq!(
        lines[2],
        "| g=1 | 13 | - | 12.51 | 100001 | 3 | 79.00 ± 0.50 | 80.00 ± 0.50 | 60 |"
    );
    assert!(lines[5].starts_with("| g=3, no shuffle | 13 |"), "{t}");
}

#[test]
fn variants_read_shuffle_from_the_overrides_and_keep_the_first_duplicate() {
    let table2 = Results {
        records: vec![
            record(1, true, &[80.0, 81.0]),
            record(3, true, &[82.0, 83.0]),
        ],
        ..Default::default()
    };
    let table3 = Results {
        records: vec![
            record(3, false, &[79.0, 80.0]),
            record(3, true, &[1.0, 2.0]),
        ],
        ..Default::default()
    };
    let vs = variants(&[table2, table3]);
    let labels: Vec<String> = vs.iter().map(Variant::label).collect();
    assert_eq!(labels, ["g=1", "g=3", "g=3, no shuffle"]);
    assert_eq!(vs[1].seed_values("train_accuracy"), [82.0, 83.0]);
}

#[test]
fn render_writes_the_chart_and_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let mut records: Vec<Record> = reproducing().into_iter().map(|v| v.record).collect();
    let table3 = Results {
        records: records.split_off(3),
        ..Default::default()
    };
    let table2 = Results {
        records,
        ..Default::default()
    };
    let md = render(
        &[table2, table3],
        &dir.path().join("reproduction"),
        "reproduction",
        &ReproductionOptions {
            command: Some("shufflekit report-reproduction a b".into()),
            banner: Some("Smoke run".into()),
            inputs: vec![],
        },
    )
    .unwrap();
    assert!(md.contains("> **Smoke run**"), "{md}");
    assert!(md.contains("shufflekit report-reproduction a b"));
    assert!(md.contains("![Test accuracy against groups"));
    assert!(md.contains("- **Table 3: channel shuffle on beats shuffle off.** Reproduces here"));
    for ext in ["png", "svg"] {
        let f = dir.path().join(format!("reproduction/reproduction.{ext}"));
        assert!(
            std::fs::metadata(&f).unwrap().len() > 1000,
            "{}",
            f.display()
        );
    }
}

#[test]
fn utc_dates() {
    assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
    // 2026-12-02 13:45:07 UTC.
    assert_eq!(utc_date(1_796_219_107), "2026-12-02 13:45 UTC");
    assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
}
