//! Makes `data/fashion-sample`, the Fashion-MNIST sample compiled into
//! shufflekit (`--data fashion-sample`), from the full data set:
//!
//! ```text
//! cargo run --release -p shufflekit-train --example make_fashion_sample -- \
//!     /usr/share/datasets/fashion-mnist data/fashion-sample
//! ```
//!
//! The rule: per class, the first 1,000 images of the official training
//! file and the first 200 of the official test file, in file order, written
//! as gzipped IDX files (no time stamp, so the same input gives the same
//! bytes). It prints the SHA-256 of nothing: `sha256sum` does that (see
//! `data/README.md`).

use std::path::PathBuf;

use shufflekit_train::data::{
    fashion_mnist, first_per_class, idx_gz, FASHION_SAMPLE_TEST_PER_CLASS,
    FASHION_SAMPLE_TRAIN_PER_CLASS, IDX_FILES,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        return Err("usage: make_fashion_sample FASHION_MNIST_DIR OUT_DIR".into());
    };
    let full = fashion_mnist(&input)?;
    let train = first_per_class(&full.train, FASHION_SAMPLE_TRAIN_PER_CLASS);
    let test = first_per_class(&full.test, FASHION_SAMPLE_TEST_PER_CLASS);
    std::fs::create_dir_all(&output)?;
    let (ti, tl) = idx_gz(&train)?;
    let (vi, vl) = idx_gz(&test)?;
    for (name, bytes) in IDX_FILES.iter().zip([ti, tl, vi, vl]) {
        let path = output.join(name);
        std::fs::write(&path, bytes)?;
        println!(
            "{} ({} bytes)",
            path.display(),
            std::fs::metadata(&path)?.len()
        );
    }
    println!("{} training and {} test images", train.len(), test.len());
    Ok(())
}
