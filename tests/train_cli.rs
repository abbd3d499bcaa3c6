//! `shufflekit train` end to end on a small image-folder dataset: outputs,
//! checkpoint and `--resume`, and errors for bad data.

use std::path::Path;
use std::process::{Command, Output};

fn shufflekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A spec small enough to train in a test, with the proxy task's parameters.
const SPEC: &str = "
name: small
params: {resolution: 8, channels: 1, classes: 2}
input: [channels, resolution, resolution]
layers:
  - conv: {out: 4, kernel: 3, padding: 1}
  - batch_norm
  - relu
  - global_avg_pool
  - flatten
  - linear: {out: classes}
";

/// Two classes of 8x8 grey images: dark and bright, 10 each.
fn dataset(dir: &Path) {
    for (class, base) in [("dark", 20u8), ("bright", 200u8)] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..10u8 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([base + ((x + y) as u8 + i) % 30])
            });
            img.save(dir.join(class).join(format!("{i:02}.png")))
                .unwrap();
        }
    }
}

#[test]
fn train_writes_weights_curves_checkpoint_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("small.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    let out = tmp.path().join("w.safetensors");
    let args = |epochs: &str, resume: bool| {
        let mut a = vec![
            "train",
            spec.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            epochs,
            "--batch",
            "4",
            "--lr",
            "0.05",
            "--schedule",
            "constant",
            "--threads",
            "2",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ];
        if resume {
            a.push("--resume");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        shufflekit(&refs)
    };
    let o = run(args("1", false));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("trained on `data` with resolution=8, channels=1, classes=2"),
        "{stdout}"
    );
    assert!(stdout.contains("epoch   1: train loss"), "{stdout}");
    // One image per class is held out for validation (10% of 8, rounded
    // up to one) and measured next to the test set.
    assert!(
        stdout.contains("(14 training, 2 validation, 4 test images"),
        "{stdout}"
    );
    assert!(stdout.contains("val acc"), "{stdout}");
    assert!(stdout.contains("validation accuracy"), "{stdout}");
    for suffix in [
        "",
        ".curves.png",
        ".curves.svg",
        ".history.json",
        ".checkpoint/state.json",
    ] {
        let mut p = out.as_os_str().to_owned();
        p.push(suffix);
        assert!(
            Path::new(&p).exists(),
            "{} is missing",
            Path::new(&p).display()
        );
    }
    let o = run(args("2", true));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("resumed after epoch 1"), "{stdout}");
    assert!(
        stdout.contains("epoch   2:") && !stdout.contains("epoch   1:"),
        "{stdout}"
    );
    let history = std::fs::read_to_string(tmp.path().join("w.safetensors.history.json")).unwrap();
    assert_eq!(history.matches("\"epoch\"").count(), 2, "{history}");
    // The weights load and fit the network `shufflekit run` builds.
    let w = shufflekit_ir::weights::Weights::load(&out).unwrap();
    let g = shufflekit_spec::load_str(SPEC, "small.yaml", &[]).unwrap();
    w.check(&g).unwrap();
}

#[test]
fn bad_data_is_reported_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    std::fs::write(data.join("dark").join("99.png"), b"garbage").unwrap();
    let out = tmp.path().join("w.safetensors");
    let o = shufflekit(&[
        "train",
        "specs/shufflenet_v1.yaml",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("99.png") && stderr.contains("cannot decode"),
        "{stderr}"
    );
    let o = shufflekit(&[
        "train",
        "specs/shufflenet_v1.yaml",
        "--data",
        "no-such-dataset",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("`no-such-dataset` is not a dataset"),
        "{stderr}"
    );
}

#[test]
fn missing_fashion_mnist_names_the_apt_command() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args([
            "train",
            "specs/shufflenet_v1.yaml",
            "--data",
            "fashion-mnist",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("SHUFFLEKIT_FASHION_MNIST", tmp.path().join("empty"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("apt-get install dataset-fashion-mnist")
            && stderr.contains("train-images-idx3-ubyte.gz` is missing"),
        "{stderr}"
    );
}
