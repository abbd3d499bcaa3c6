//! Reports rendered from real searches: every file is there, shards
//! render like one run, and the HTML loads in headless Chromium with no
//! console errors.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shufflekit_reports::{render, ReportOptions};
use shufflekit_search::{
    Constraints, LatencyEvaluator, LatencyOptions, PaperEvaluator, ProxyEvaluator, ProxyOptions,
    Results, Search, Shard, Sweep,
};
use shufflekit_spec::Spec;

fn spec() -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/shufflenet_v1.yaml");
    Spec::parse_file(&path).unwrap()
}

fn search(results: &Path, latency: bool) -> Search {
    let mut s = Search::new(spec(), "specs/shufflenet_v1.yaml")
        .with_sweep(Sweep::parse("groups=3,8").unwrap())
        .with_sweep(Sweep::parse("width=0.25,0.5,1.0,1.5").unwrap())
        .with_constraints(Constraints {
            budget_m: Some(140.0),
            ..Default::default()
        })
        .with_evaluator(Box::new(
            ProxyEvaluator::new(ProxyOptions {
                batch: 4,
                resolution: 32,
                resolution_param: Some("resolution".into()),
            })
            .unwrap(),
        ))
        .with_evaluator(Box::new(PaperEvaluator))
        .with_command("shufflekit search specs/shufflenet_v1.yaml (test)")
        .with_results(results);
    if latency {
        s = s.with_evaluator(Box::new(
            LatencyEvaluator::new(LatencyOptions {
                threads: 1,
                warmup: 0,
                runs: 1,
                batch: 1,
            })
            .unwrap(),
        ));
    }
    s
}

const PLOTS: [&str; 4] = [
    "score_naswot",
    "score_paper_top1_error",
    "latency_vs_cost",
    "cost_by_layer_kind",
];

fn full_report(dir: &Path) -> PathBuf {
    let results = dir.join("results.jsonl");
    let report = search(&results, true).run().unwrap();
    render(
        &report.results,
        dir,
        &ReportOptions {
            inputs: vec![results],
            ..Default::default()
        },
    )
    .unwrap();
    dir.join("index.html")
}

#[test]
fn a_report_has_every_file_and_states_its_setup() {
    let dir = tempfile::tempdir().unwrap();
    full_report(dir.path());
    for f in ["report.md", "index.html", "results.csv", "results.jsonl"] {
        assert!(dir.path().join(f).is_file(), "missing {f}");
    }
    for p in PLOTS {
        let png = std::fs::read(dir.path().join(format!("plots/{p}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{p}.png is not a PNG");
        let svg = std::fs::read_to_string(dir.path().join(format!("plots/{p}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("<text"),
            "{p}.svg has no text"
        );
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for needle in [
        "FLOP convention",
        "multiply-adds of conv and linear layers only",
        "evaluator `proxy`",
        "NASWOT",
        "evaluator `latency`",
        "evaluator `paper`",
        "machine",
        "CPU flags",
        "shufflekit search specs/shufflenet_v1.yaml (test)",
        "Pareto front",
        "space exhausted",
    ] {
        assert!(md.contains(needle), "report.md lacks `{needle}`");
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), PLOTS.len());
    // Self-contained: nothing is loaded from elsewhere.
    for attr in ["src=\"", "href=\"", "url("] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            assert!(
                rest.starts_with("data:"),
                "external reference at {}",
                &html[i..i + 60]
            );
        }
    }
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8);
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .starts_with("index,id,groups,width,status,on_front,chosen,mflops"));
}

#[test]
fn merged_shards_render_the_same_csv_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    let whole = search(&one.join("results.jsonl"), false).run().unwrap();
    render(&whole.results, &one, &ReportOptions::default()).unwrap();
    let mut shards = Vec::new();
    for i in 0..2 {
        let p = dir.path().join(format!("shard{i}/results.jsonl"));
        search(&p, false)
            .with_shard(Some(Shard { index: i, count: 2 }))
            .run()
            .unwrap();
        shards.push(p);
    }
    let merged_dir = dir.path().join("merged");
    let merged = Results::read_all(&shards).unwrap();
    render(&merged, &merged_dir, &ReportOptions::default()).unwrap();
    let a = std::fs::read_to_string(one.join("results.csv")).unwrap();
    let b = std::fs::read_to_string(merged_dir.join("results.csv")).unwrap();
    assert_eq!(a, b);
}

/// The Chromium binary: `$CHROMIUM`, `chromium` or `chromium-browser`.
fn chromium() -> PathBuf {
    let candidates = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["chromium", "chromium-browser"].map(PathBuf::from));
    for c in candidates {
        let found = Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return c;
        }
    }
    panic!("headless Chromium is needed for this test: install Debian's `chromium` package (scripts/test does)");
}

/// Loads a page in headless Chromium; returns the DOM it printed and the
/// console messages Chromium logged (console calls, uncaught exceptions).
fn load_in_chromium(page: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish loading {url} in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = out_reader.join().unwrap();
    let log = err_reader.join().unwrap();
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    (dom, console)
}

#[test]
fn html_report_loads_in_headless_chromium_without_console_errors() {
    // First make sure console errors are seen at all.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><head><link rel=\"icon\" href=\"data:,\"></head><body><script>console.error('detected-error')</script></body></html>",
    )
    .unwrap();
    let (_, console) = load_in_chromium(&bad);
    assert!(
        console.iter().any(|l| l.contains("detected-error")),
        "console errors are not captured: {console:?}"
    );

    let report_dir = dir.path().join("report");
    let page = full_report(&report_dir);
    let (dom, console) = load_in_chromium(&page);
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(
        dom.contains("Search report: shufflenet_v1"),
        "page not loaded: {dom:.200}"
    );
    assert_eq!(dom.matches("<svg").count(), PLOTS.len());
}
