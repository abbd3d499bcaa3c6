//! Fashion-MNIST: the installed package's files (`--data fashion-mnist`),
//! their errors when missing or corrupt (on generated files), the embedded
//! sample and the validation split.

use std::io::Write;
use std::path::{Path, PathBuf};

use shufflekit_train::data::{
    self, fashion_mnist, DataError, DataSource, Dataset, Split, FASHION_MNIST_DIR,
    FASHION_MNIST_ENV, IDX_FILES,
};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: u32, side: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0803, n, side, side] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend((0..n * side * side).map(|i| (i % 251) as u8));
    b
}

fn labels(values: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0801, values.len() as u32] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend_from_slice(values);
    b
}

/// A directory with the four files of a small Fashion-MNIST (20 training
/// and 10 test images of 4x4, labels 0..9), gzipped like the package's.
fn fake(dir: &Path) {
    let train: Vec<u8> = (0..20).map(|i| i % 10).collect();
    let test: Vec<u8> = (0..10).collect();
    let files = [images(20, 4), labels(&train), images(10, 4), labels(&test)];
    for (name, bytes) in IDX_FILES.iter().zip(files) {
        std::fs::write(dir.join(name), gz(&bytes)).unwrap();
    }
}

fn corrupt_message(e: &DataError) -> (PathBuf, String) {
    match e {
        DataError::Corrupt { path, message } => (path.clone(), message.clone()),
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

#[test]
fn a_generated_dataset_loads_with_ten_classes() {
    let tmp = tempfile::tempdir().unwrap();
    fake(tmp.path());
    let split = fashion_mnist(tmp.path()).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (20, 10));
    assert_eq!(split.shape(), [1, 4, 4]);
    assert_eq!(split.classes(), 10);
    assert_eq!(split.name, "fashion-mnist");
}

#[test]
fn missing_files_name_the_apt_command() {
    let tmp = tempfile::tempdir().unwrap();
    let e = fashion_mnist(&tmp.path().join("nothing-here")).unwrap_err();
    assert!(matches!(e, DataError::NotInstalled { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("apt-get install dataset-fashion-mnist"),
        "{text}"
    );
    assert!(text.contains(FASHION_MNIST_ENV), "{text}");
    // One missing file of four: that file is named.
    fake(tmp.path());
    std::fs::remove_file(tmp.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let e = fashion_mnist(tmp.path()).unwrap_err();
    assert!(
        e.to_string()
            .contains("t10k-labels-idx1-ubyte.gz` is missing"),
        "{e}"
    );
}

#[test]
fn corrupt_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let at = |name: &str| dir.join(name);
    let check = |name: &str, bytes: Vec<u8>, want_file: &str, want: &str| {
        fake(dir);
        std::fs::write(at(name), bytes).unwrap();
        let e = fashion_mnist(dir).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(want_file), "{name}: {text}");
        assert!(text.contains(want), "{name}: {text}");
        e
    };
    // Bad magic: a label file where the images should be.
    let e = check(
        IDX_FILES[0],
        gz(&labels(&[1, 2])),
        IDX_FILES[0],
        "expected magic 0x00000803",
    );
    assert_eq!(corrupt_message(&e).0, at(IDX_FILES[0]));
    // Truncated: the header promises more images than follow.
    let mut short = images(20, 4);
    short.truncate(100);
    check(
        IDX_FILES[0],
        gz(&short),
        IDX_FILES[0],
        "but 84 bytes follow",
    );
    // Count mismatch: 9 labels for 10 test images.
    let e = check(
        IDX_FILES[3],
        gz(&labels(&[0, 1, 2, 3, 4, 5, 6, 7, 8])),
        IDX_FILES[3],
        "9 labels for 10 images",
    );
    assert!(matches!(e, DataError::Mismatch { .. }), "{e:?}");
    // A label of 10 in a 10-class dataset.
    let mut bad: Vec<u8> = (0..20).map(|i| i % 10).collect();
    bad[7] = 10;
    let e = check(
        IDX_FILES[1],
        gz(&labels(&bad)),
        IDX_FILES[1],
        "label 10 of image 7 is not below 10",
    );
    assert_eq!(corrupt_message(&e).0, at(IDX_FILES[1]));
    // Bad gzip: the magic bytes, then garbage; and a gzip stream cut short.
    let e = check(
        IDX_FILES[2],
        vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
        IDX_FILES[2],
        "bad gzip data",
    );
    assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
    let mut cut = gz(&images(10, 4));
    cut.truncate(cut.len() / 2);
    let e = check(IDX_FILES[2], cut, IDX_FILES[2], "bad gzip data");
    assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
}

#[test]
fn the_environment_variable_moves_the_directory() {
    // The only test of this binary that touches the variable.
    let tmp = tempfile::tempdir().unwrap();
    fake(tmp.path());
    std::env::set_var(FASHION_MNIST_ENV, tmp.path());
    let loaded = DataSource::parse("fashion-mnist").load();
    assert_eq!(data::fashion_mnist_dir(), tmp.path());
    std::env::set_var(FASHION_MNIST_ENV, "");
    assert_eq!(data::fashion_mnist_dir(), Path::new(FASHION_MNIST_DIR));
    std::env::remove_var(FASHION_MNIST_ENV);
    assert_eq!(loaded.unwrap().train.len(), 20);
}

fn count(set: &Dataset, class: u32) -> usize {
    set.labels.iter().filter(|&&l| l == class).count()
}

#[test]
fn the_embedded_sample_is_balanced() {
    let split = DataSource::parse("fashion-sample").load().unwrap();
    assert_eq!((split.train.len(), split.test.len()), (10_000, 2_000));
    assert_eq!((split.shape(), split.classes()), ([1, 28, 28], 10));
    for c in 0..10 {
        assert_eq!(count(&split.train, c), 1000);
        assert_eq!(count(&split.test, c), 200);
    }
}

/// The shipped sample is the documented rule applied to the files of
/// Debian's `dataset-fashion-mnist` (which `scripts/test` installs): byte
/// for byte what `cargo run --example make_fashion_sample` writes.
#[test]
fn the_sample_is_the_rule_applied_to_the_installed_package() {
    let dir = Path::new(FASHION_MNIST_DIR);
    let full = fashion_mnist(dir)
        .unwrap_or_else(|e| panic!("{e}\n(run the tests with scripts/test, which installs it)"));
    assert_eq!((full.train.len(), full.test.len()), (60_000, 10_000));
    for c in 0..10 {
        assert_eq!(count(&full.train, c), 6000);
        assert_eq!(count(&full.test, c), 1000);
    }
    let train = data::first_per_class(&full.train, data::FASHION_SAMPLE_TRAIN_PER_CLASS);
    let test = data::first_per_class(&full.test, data::FASHION_SAMPLE_TEST_PER_CLASS);
    let (ti, tl) = data::idx_gz(&train).unwrap();
    let (vi, vl) = data::idx_gz(&test).unwrap();
    for ((name, shipped), made) in data::FASHION_SAMPLE.iter().zip([ti, tl, vi, vl]) {
        assert!(
            *shipped == made.as_slice(),
            "{name} differs from what the rule makes"
        );
    }
}

#[test]
fn the_validation_split_is_stratified_fixed_by_seed_and_disjoint() {
    let split = data::fashion_sample().unwrap();
    let train_before = split.train.clone();
    let a = split.clone().hold_out(0.1, 5).unwrap();
    let val = a.validation.as_ref().unwrap();
    assert_eq!((a.train.len(), val.len(), a.test.len()), (9000, 1000, 2000));
    for c in 0..10 {
        assert_eq!(count(val, c), 100);
    }
    // Same seed, same split; another seed, another.
    let b = split.clone().hold_out(0.1, 5).unwrap();
    assert_eq!(a, b);
    let other = split.clone().hold_out(0.1, 6).unwrap();
    assert_ne!(other.validation, a.validation);
    // Every training image is in exactly one of the two sets.
    let item = 28 * 28;
    let key = |set: &Dataset, i: usize| set.pixels[i * item..(i + 1) * item].to_vec();
    let mut before: Vec<Vec<u8>> = (0..train_before.len())
        .map(|i| key(&train_before, i))
        .collect();
    let mut after: Vec<Vec<u8>> = (0..a.train.len())
        .map(|i| key(&a.train, i))
        .chain((0..val.len()).map(|i| key(val, i)))
        .collect();
    before.sort();
    after.sort();
    assert_eq!(before, after);
    // The normalisation is the remaining training images'.
    let again = Split::new("x".into(), "x".into(), a.train.clone(), a.test.clone());
    assert_eq!(
        (again.mean.clone(), again.std.clone()),
        (a.mean.clone(), a.std.clone())
    );
    assert!(a.source.contains("validation: 1000"), "{}", a.source);
    // No validation set, and bad fractions.
    assert!(split.clone().hold_out(0.0, 5).unwrap().validation.is_none());
    let e = split.clone().hold_out(1.0, 5).unwrap_err();
    assert!(matches!(e, DataError::Validation { .. }), "{e}");
}
