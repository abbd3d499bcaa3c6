//! The training loop, batch norm running statistics, checkpoints and the
//! dataset loaders (including corrupt and mismatched files).

use std::io::Write;
use std::path::Path;

use shufflekit_ir::ops::BatchNorm;
use shufflekit_ir::tensor::Tensor;
use shufflekit_ir::weights::{InitOptions, Weights};
use shufflekit_ir::{Graph, Op, Shape};
use shufflekit_spec::Spec;
use shufflekit_train::data::{self, Augment, DataError, Dataset, Split};
use shufflekit_train::fit::checkpoint_dir;
use shufflekit_train::grad::{Mode, Network};
use shufflekit_train::proxy::{proxy_overrides, proxy_task};
use shufflekit_train::{TrainConfig, Trainer};

fn spec() -> Spec {
    Spec::parse_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../specs/shufflenet_v1.yaml"
    )))
    .unwrap()
}

fn set(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// 240 synthetic 8x8 images of 3 classes: a bright bar whose position
/// gives the class, plus noise.
fn toy_split() -> Split {
    let make = |n: usize, salt: u64| {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = i % 3;
            for y in 0..8 {
                for x in 0..8usize {
                    let noise = ((i as u64 * 31 + y as u64 * 7 + x as u64 * 13 + salt) % 40) as u8;
                    let bar = if x / 3 == class { 180 } else { 0 };
                    pixels.push(bar + noise);
                }
            }
            labels.push(class as u32);
        }
        Dataset {
            shape: [1, 8, 8],
            pixels,
            labels,
            classes: 3,
        }
    };
    Split::new("toy".into(), "synthetic".into(), make(240, 0), make(60, 5))
}

fn toy_graph(split: &Split) -> Graph {
    let s = spec();
    let base = vec![set("width", "0.25"), set("shallow", "true")];
    let o = proxy_overrides(&s, &base, split).unwrap();
    s.build(&o).unwrap()
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 16,
        lr: 0.05,
        seed: 3,
        ..TrainConfig::default()
    }
}

#[test]
fn a_short_run_lowers_the_loss() {
    let split = toy_split();
    let g = toy_graph(&split);
    let mut t = Trainer::new(&g, &split, config(3)).unwrap();
    let (before, _) = t.evaluate(&split, &split.test).unwrap();
    let mut steps = 0;
    t.fit(
        &split,
        &mut |e| {
            if let shufflekit_train::Event::Step { .. } = e {
                steps += 1
            }
        },
        &mut |_| Ok(true),
    )
    .unwrap();
    let h = &t.history().epochs;
    assert_eq!(h.len(), 3);
    assert_eq!(steps, 3 * 15);
    assert!(h[2].train_loss < h[0].train_loss, "{h:?}");
    assert!(h[2].test_loss < before, "{before} -> {h:?}");
    assert!(h[2].test_accuracy > 60.0, "{h:?}");
}

#[test]
fn same_seed_same_weights_and_resume_continues_exactly() {
    let split = toy_split();
    let g = toy_graph(&split);
    let run = |epochs: usize| {
        let mut t = Trainer::new(&g, &split, config(2)).unwrap();
        let mut done = 0;
        t.fit(&split, &mut |_| {}, &mut |_| {
            done += 1;
            Ok(done < epochs)
        })
        .unwrap();
        t
    };
    let a = run(2);
    let b = run(2);
    assert_eq!(a.weights(), b.weights());
    // One epoch, checkpoint, resume for the second: the same weights.
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint_dir(&dir.path().join("w.safetensors"));
    let half = run(1);
    assert_eq!(half.history().epochs.len(), 1);
    half.save_checkpoint(&ck, "toy").unwrap();
    let mut resumed = Trainer::resume(&g, &split, config(2), &ck, "toy").unwrap();
    resumed.fit(&split, &mut |_| {}, &mut |_| Ok(true)).unwrap();
    assert_eq!(resumed.weights(), a.weights());
    assert_eq!(resumed.history().epochs.len(), 2);
    // Another seed, dataset or network is refused.
    let e = Trainer::resume(
        &g,
        &split,
        TrainConfig {
            seed: 4,
            ..config(2)
        },
        &ck,
        "toy",
    )
    .unwrap_err();
    assert!(e.to_string().contains("other settings"), "{e}");
    let e = Trainer::resume(&g, &split, config(2), &ck, "mnist").unwrap_err();
    assert!(e.to_string().contains("trained on `toy`"), "{e}");
    let s = spec();
    let other = s
        .build(
            &proxy_overrides(&s, &[set("width", "0.5"), set("shallow", "true")], &split).unwrap(),
        )
        .unwrap();
    let e = Trainer::resume(&other, &split, config(2), &ck, "toy").unwrap_err();
    assert!(e.to_string().contains("another network"), "{e}");
}

#[test]
fn running_statistics_follow_pytorch() {
    // x = [1, 2, 3, 6] in one channel: mean 3, unbiased variance 14/3.
    let mut g = Graph::new("bn");
    let x = g
        .add(Op::Input(Shape::chw(1, 1, 2)), "input", &[], None)
        .unwrap();
    g.add(Op::BatchNorm(BatchNorm::default()), "bn", &[x], None)
        .unwrap();
    let net = Network::new(&g).unwrap();
    let mut w = Weights::init(&g, &InitOptions::default());
    let input = Tensor::new(vec![2, 1, 1, 2], vec![1.0, 2.0, 3.0, 6.0]).unwrap();
    let tape = net.forward(&w, &input, Mode::Train).unwrap();
    // Normalised with the biased variance 3.5.
    let y = tape.output().unwrap();
    assert!((y.data()[3] - 3.0 / (3.5f32 + 1e-5).sqrt()).abs() < 1e-6);
    tape.update_running_stats(&mut w, 0.1);
    assert!((w.get("bn.running_mean").unwrap().data()[0] - 0.3).abs() < 1e-6);
    assert!((w.get("bn.running_var").unwrap().data()[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
}

#[test]
fn bad_settings_and_mismatched_networks_are_refused() {
    let split = toy_split();
    let g = toy_graph(&split);
    for bad in [
        TrainConfig {
            epochs: 0,
            ..config(1)
        },
        TrainConfig {
            batch: 1,
            ..config(1)
        },
        TrainConfig {
            lr: -1.0,
            ..config(1)
        },
        TrainConfig {
            batch: 1000,
            ..config(1)
        },
    ] {
        assert!(Trainer::new(&g, &split, bad).is_err());
    }
    let s = spec();
    let wrong = s
        .build(&[
            set("resolution", "16"),
            set("channels", "1"),
            set("classes", "3"),
            set("small_input", "true"),
        ])
        .unwrap();
    let e = Trainer::new(&wrong, &split, config(1)).unwrap_err();
    assert!(e.to_string().contains("set the spec's resolution"), "{e}");
}

#[test]
fn proxy_task_reports_both_resolutions() {
    let split = toy_split();
    let s = spec();
    let p = proxy_task(&s, &[set("width", "0.5")], &split, Default::default()).unwrap();
    assert_eq!(p.deployment_cost.input_shape, vec![3, 224, 224]);
    assert_eq!(p.trained_cost.input_shape, vec![1, 8, 8]);
    assert!(p.overrides.contains(&set("small_input", "true")));
    assert!(
        p.description.contains("small_input=true"),
        "{}",
        p.description
    );
    // The user's small_input wins.
    let o = proxy_overrides(&s, &[set("small_input", "false")], &split).unwrap();
    assert!(o.contains(&set("small_input", "false")));
}

#[test]
fn the_mnist_sample_has_its_fixed_split() {
    let split = data::mnist_sample().unwrap();
    assert_eq!(split.train.len(), 4000);
    assert_eq!(split.test.len(), 1000);
    assert_eq!(split.shape(), [1, 28, 28]);
    assert_eq!(split.classes(), 10);
    for c in 0..10 {
        assert_eq!(split.test.labels.iter().filter(|&&l| l == c).count(), 100);
    }
    // Normalised batches: about zero mean over the training set.
    let idx: Vec<usize> = (0..4000).step_by(10).collect();
    let (x, labels) = split
        .batch(&split.train, &idx, Augment::default(), None)
        .unwrap();
    assert_eq!(x.shape(), &[400, 1, 28, 28]);
    assert_eq!(labels.len(), 400);
    let mean: f64 = x.data().iter().map(|&v| f64::from(v)).sum::<f64>() / x.numel() as f64;
    assert!(mean.abs() < 0.1, "{mean}");
}

#[test]
fn augmentation_is_seeded() {
    let split = toy_split();
    let aug = Augment {
        crop_padding: 2,
        flip: true,
    };
    let idx = [0, 1, 2, 3];
    let a = split
        .batch(&split.train, &idx, aug, Some(&mut data::epoch_rng(1, 1, 1)))
        .unwrap();
    let b = split
        .batch(&split.train, &idx, aug, Some(&mut data::epoch_rng(1, 1, 1)))
        .unwrap();
    let c = split
        .batch(&split.train, &idx, Augment::default(), None)
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(data::epoch_order(10, 1, 1), data::epoch_order(10, 1, 1));
    assert_ne!(data::epoch_order(10, 1, 1), data::epoch_order(10, 1, 2));
}

fn idx_images(n: u32, h: u32, w: u32, body: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, h, w] {
        b.extend(v.to_be_bytes());
    }
    b.extend(std::iter::repeat_n(7u8, body));
    b
}

fn idx_labels(n: u32, labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend(n.to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_directories_load_gzipped_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("train-images-idx3-ubyte.gz"),
        gz(&idx_images(4, 3, 2, 24)),
    )
    .unwrap();
    std::fs::write(
        d.join("train-labels-idx1-ubyte.gz"),
        gz(&idx_labels(4, &[0, 1, 2, 1])),
    )
    .unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx_images(2, 3, 2, 12)).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx_labels(2, &[2, 0])).unwrap();
    let split = data::load_dir(d).unwrap();
    assert_eq!(split.shape(), [1, 3, 2]);
    assert_eq!(
        (split.train.len(), split.test.len(), split.classes()),
        (4, 2, 3)
    );
}

#[test]
fn corrupt_and_mismatched_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("img");
    let labels = d.join("lab");
    // Truncated image data.
    std::fs::write(&images, idx_images(4, 3, 2, 20)).unwrap();
    std::fs::write(&labels, idx_labels(4, &[0, 1, 2, 1])).unwrap();
    let e = data::load_idx(&images, &labels).unwrap_err();
    assert!(matches!(e, DataError::Corrupt { .. }));
    assert!(
        e.to_string().contains("img") && e.to_string().contains("24 bytes) but 20 bytes follow"),
        "{e}"
    );
    // Wrong magic.
    std::fs::write(&images, b"not an idx file at all").unwrap();
    let e = data::load_idx(&images, &labels).unwrap_err();
    assert!(e.to_string().contains("magic 0x00000803"), "{e}");
    // Counts that disagree.
    std::fs::write(&images, idx_images(3, 3, 2, 18)).unwrap();
    let e = data::load_idx(&images, &labels).unwrap_err();
    assert!(matches!(e, DataError::Mismatch { .. }));
    assert!(e.to_string().contains("4 labels for 3 images"), "{e}");
    // Broken gzip.
    let mut bad = gz(&idx_labels(4, &[0, 1, 2, 1]));
    bad.truncate(bad.len() / 2);
    std::fs::write(&labels, bad).unwrap();
    let e = data::load_idx(&images, &labels).unwrap_err();
    assert!(
        e.to_string().contains("bad gzip data") && e.to_string().contains("lab"),
        "{e}"
    );
    // Missing file.
    let e = data::load_idx(&d.join("nope"), &labels).unwrap_err();
    assert!(
        matches!(e, DataError::Read { .. }) && e.to_string().contains("nope"),
        "{e}"
    );
    // CSV: a short row, a bad pixel, a label out of range.
    let p = Path::new("x.csv");
    let e = data::parse_pixel_csv(b"1,2,3\n", p, [1, 2, 2], 10).unwrap_err();
    assert!(
        e.to_string()
            .contains("`x.csv` is corrupt: line 1: 3 fields"),
        "{e}"
    );
    let e = data::parse_pixel_csv(b"1,2,3,400,1\n", p, [1, 2, 2], 10).unwrap_err();
    assert!(e.to_string().contains("pixel 400"), "{e}");
    let e = data::parse_pixel_csv(b"1,2,3,4,1\n1,2,3,4,12\n", p, [1, 2, 2], 10).unwrap_err();
    assert!(e.to_string().contains("line 2: label 12"), "{e}");
    // Not a dataset.
    let e = data::load_dir(&d.join("missing")).unwrap_err();
    assert!(matches!(e, DataError::Unrecognised { .. }), "{e}");
}

#[test]
fn cifar_batches_load_and_bad_lengths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let mut train = Vec::new();
    for l in [0u8, 3, 9] {
        train.extend(record(l));
    }
    std::fs::write(d.join("data_batch_1.bin"), &train).unwrap();
    std::fs::write(d.join("test_batch.bin"), record(5)).unwrap();
    let split = data::load_dir(d).unwrap();
    assert_eq!(split.shape(), [3, 32, 32]);
    assert_eq!(split.train.labels, vec![0, 3, 9]);
    assert_eq!(split.classes(), 10);
    std::fs::write(d.join("test_batch.bin"), &record(5)[..3000]).unwrap();
    let e = data::load_dir(d).unwrap_err();
    assert!(
        e.to_string().contains("test_batch.bin") && e.to_string().contains("3073-byte records"),
        "{e}"
    );
    let mut bad = record(12);
    bad.extend(record(1));
    std::fs::write(d.join("test_batch.bin"), bad).unwrap();
    let e = data::load_dir(d).unwrap_err();
    assert!(e.to_string().contains("record 0: label 12"), "{e}");
    // CIFAR-100: coarse and fine labels, the fine one is used.
    let c100 = tempfile::tempdir().unwrap();
    let mut r = vec![1u8, 77];
    r.extend(vec![0u8; 3072]);
    std::fs::write(c100.path().join("train.bin"), &r).unwrap();
    std::fs::write(c100.path().join("test.bin"), &r).unwrap();
    let split = data::load_dir(c100.path()).unwrap();
    assert_eq!((split.train.labels[0], split.classes()), (77, 100));
}

#[test]
fn image_folders_load_and_corrupt_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(d.join(class)).unwrap();
        for i in 0..5 {
            let v = if class == "cat" { 30 } else { 200 } + i as u8;
            let img = image::GrayImage::from_pixel(6, 6, image::Luma([v]));
            img.save(d.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let split = data::load_dir(d).unwrap();
    assert_eq!(split.shape(), [1, 6, 6]);
    assert_eq!(
        (split.train.len(), split.test.len(), split.classes()),
        (8, 2, 2)
    );
    assert_eq!(split.test.labels, vec![0, 1]);
    std::fs::write(d.join("dog").join("9.png"), b"\x89PNG broken").unwrap();
    let e = data::load_dir(d).unwrap_err();
    assert!(
        e.to_string().contains("9.png") && e.to_string().contains("cannot decode"),
        "{e}"
    );
}
