//! Network inputs: seeded random tensors, `.npy` files and images.
//!
//! Images are preprocessed the way ImageNet models expect (torchvision's
//! `Resize(round(res * 256 / 224))`, `CenterCrop(res)`, `ToTensor()`,
//! `Normalize(mean, std)`): the shorter side is resized with a triangle
//! (bilinear) filter, the centre is cropped, values are scaled to [0, 1] and
//! normalised per channel, and the result is laid out `[1, C, H, W]`.
//!
//! The `.npy` reader and writer follow the format's specification (version
//! 1.0 to 3.0): little-endian `f32` (`<f4`) in C order is read and written;
//! `<f8` is read and converted; anything else is refused with the reason.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};

use crate::shape::Shape;
use crate::tensor::{checked_numel, try_with_capacity, Tensor, TensorError};
use crate::weights::{named_rng, push_normal_values};

/// ImageNet's per-channel mean (RGB), the default for image inputs.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The largest image, in pixels after the resize step, that is
/// preprocessed; larger ones are refused rather than exhausting memory.
pub const MAX_RESIZED_PIXELS: u64 = 1 << 28;

/// Why an input could not be read, written or made.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an `.npy` array this reader accepts.
    #[error("`{}` is not a valid .npy file: {message}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The image could not be decoded (corrupt, truncated, unknown format).
    #[error("cannot decode image `{}`: {message}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        message: String,
    },
    /// The image's channels do not match the network's input channels.
    #[error("image `{}` has {got} channel{} but the network's input has {expected}", path.display(), if *got == 1 { "" } else { "s" })]
    Channels {
        /// The file.
        path: PathBuf,
        /// Channels the network takes.
        expected: usize,
        /// Channels the image has (1 for grey, 3 for colour).
        got: usize,
    },
    /// Preprocessing options or the input shape do not allow the conversion.
    #[error("{0}")]
    Preprocess(String),
    /// A tensor could not be formed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// How images are normalised: `(value / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// Per-channel mean, one value per input channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, one positive value per input channel.
    pub std: Vec<f32>,
}

impl Default for ImageOptions {
    /// ImageNet's mean and standard deviation.
    fn default() -> Self {
        ImageOptions {
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }
}

/// A `[batch, ...shape]` tensor of standard normal values that depends only
/// on the seed (and the size).
pub fn random_input(shape: &Shape, batch: usize, seed: u64) -> Result<Tensor, InputError> {
    let mut dims = vec![batch];
    dims.extend_from_slice(shape.dims());
    let n = checked_numel(&dims).ok_or_else(|| TensorError::TooLarge {
        shape: dims.clone(),
    })?;
    let mut rng = named_rng(seed, "input", "");
    let mut data = try_with_capacity(n, &dims)?;
    push_normal_values(&mut rng, &mut data, n);
    Ok(Tensor::new(dims, data)?)
}

/// Reads an `.npy` file (see [`parse_npy`]).
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor, InputError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes: `<f4` or `<f8` (converted to `f32`), C order, any
/// rank; `path` is only used in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Tensor, InputError> {
    let err = |message: String| InputError::Npy {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err(
            "the file does not start with the .npy magic `\\x93NUMPY`".into(),
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| err("the header length is truncated".into()))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        _ => {
            return Err(err(format!(
                "format version {major}.{minor} is not supported"
            )))
        }
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| err(format!("the header ({header_len} bytes) is truncated")))?;
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|_| err("the header is not text".into()))?;
    let header = NpyHeader::parse(header).map_err(|m| err(format!("bad header: {m}")))?;
    if header.fortran_order {
        return Err(err(
            "the array is in Fortran order; save it in C order (numpy.ascontiguousarray)".into(),
        ));
    }
    let size = match header.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(err(format!(
                "dtype `{other}` is not supported (expected little-endian float32 `<f4` or float64 `<f8`)"
            )))
        }
    };
    let numel = checked_numel(&header.shape)
        .ok_or_else(|| err(format!("shape {:?} is too large", header.shape)))?;
    let data = &bytes[header_end..];
    let expected = numel
        .checked_mul(size)
        .ok_or_else(|| err(format!("shape {:?} is too large", header.shape)))?;
    if data.len() != expected {
        return Err(err(format!(
            "{} data: shape {:?} of `{}` needs {expected} bytes, the file has {}",
            if data.len() < expected {
                "truncated"
            } else {
                "trailing"
            },
            header.shape,
            header.descr,
            data.len()
        )));
    }
    let values: Vec<f32> = if size == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok(Tensor::new(header.shape, values)?)
}

/// The `.npy` (version 1.0, `<f4`, C order) encoding of a tensor.
pub fn npy_bytes(tensor: &Tensor) -> Vec<u8> {
    let shape = match tensor.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so the data starts on a 64-byte boundary; the header
    // ends with a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + tensor.numel() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // The header of a tensor's shape is far below 64 KiB.
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in tensor.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a tensor as an `.npy` file (`<f4`, C order).
pub fn write_npy(path: impl AsRef<Path>, tensor: &Tensor) -> Result<(), InputError> {
    let path = path.as_ref();
    std::fs::write(path, npy_bytes(tensor)).map_err(|source| InputError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads an image (PNG or JPEG, detected from the content) and
/// preprocesses it for a network whose input is `input` (`[C, H, W]`):
/// returns `[1, C, H, W]`. A grey image is expanded to 3 channels; a
/// network with 1 input channel takes grey images only.
pub fn load_image(
    path: impl AsRef<Path>,
    input: &Shape,
    options: &ImageOptions,
) -> Result<Tensor, InputError> {
    let path = path.as_ref();
    let read = |source| InputError::Read {
        path: path.to_path_buf(),
        source,
    };
    let image = image::ImageReader::open(path)
        .map_err(read)?
        .with_guessed_format()
        .map_err(read)?
        .decode()
        .map_err(|e| InputError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    preprocess_image(&image, input, options).map_err(|e| match e {
        InputError::Channels { expected, got, .. } => InputError::Channels {
            path: path.to_path_buf(),
            expected,
            got,
        },
        other => other,
    })
}

/// The length the shorter side is resized to before the centre crop of a
/// `resolution`-sized input: `round(resolution * 256 / 224)` (256 for 224).
pub fn resize_length(resolution: usize) -> usize {
    // Round half up, in integers.
    (resolution.saturating_mul(256).saturating_add(112)) / 224
}

/// Preprocesses a decoded image (see [`load_image`]); errors name no file.
pub fn preprocess_image(
    image: &DynamicImage,
    input: &Shape,
    options: &ImageOptions,
) -> Result<Tensor, InputError> {
    let (c, h, w) = input.as_chw().ok_or_else(|| {
        InputError::Preprocess(format!(
            "the network's input {input} is not an image shape [C, H, W]"
        ))
    })?;
    let grey = !image.color().has_color();
    let got = if grey { 1 } else { 3 };
    if !(c == 3 || (c == 1 && grey)) {
        return Err(InputError::Channels {
            path: PathBuf::from("<image>"),
            expected: c,
            got,
        });
    }
    for (what, values) in [("mean", &options.mean), ("std", &options.std)] {
        if values.len() != c {
            return Err(InputError::Preprocess(format!(
                "{what} has {} value{} but the network's input has {c} channel{}",
                values.len(),
                if values.len() == 1 { "" } else { "s" },
                if c == 1 { "" } else { "s" }
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(InputError::Preprocess(format!(
                "{what} has a non-finite value"
            )));
        }
    }
    if options.std.iter().any(|&s| s <= 0.0) {
        return Err(InputError::Preprocess("std values must be positive".into()));
    }

    let (iw, ih) = image.dimensions();
    if iw == 0 || ih == 0 {
        return Err(InputError::Preprocess("the image is empty".into()));
    }
    let short = resize_length(h.max(w)) as u64;
    // torchvision's Resize(int): the shorter side becomes `short`, the longer
    // `floor(short * long / short_side)`.
    let (nw, nh) = if iw <= ih {
        (short, short * u64::from(ih) / u64::from(iw))
    } else {
        (short * u64::from(iw) / u64::from(ih), short)
    };
    if nw.saturating_mul(nh) > MAX_RESIZED_PIXELS
        || nw > u64::from(u32::MAX)
        || nh > u64::from(u32::MAX)
    {
        return Err(InputError::Preprocess(format!(
            "the image ({iw}x{ih}) would be {nw}x{nh} after resizing, larger than the limit of {MAX_RESIZED_PIXELS} pixels"
        )));
    }
    let (nw, nh) = (nw as u32, nh as u32);
    let left = centre_offset(nw as usize, w);
    let top = centre_offset(nh as usize, h);

    let mut data = Vec::with_capacity(c * h * w);
    let mut push_plane = |plane: &dyn Fn(u32, u32) -> u8, ch: usize| {
        for y in 0..h {
            for x in 0..w {
                let v = plane((left + x) as u32, (top + y) as u32);
                data.push((f32::from(v) / 255.0 - options.mean[ch]) / options.std[ch]);
            }
        }
    };
    if c == 1 {
        let resized = image::imageops::resize(&image.to_luma8(), nw, nh, FilterType::Triangle);
        push_plane(&|x, y| resized.get_pixel(x, y).0[0], 0);
    } else {
        let resized = image::imageops::resize(&image.to_rgb8(), nw, nh, FilterType::Triangle);
        for ch in 0..3 {
            push_plane(&|x, y| resized.get_pixel(x, y).0[ch], ch);
        }
    }
    Ok(Tensor::new(vec![1, c, h, w], data)?)
}

/// torchvision's `CenterCrop` offset: `round((len - crop) / 2)` with Python's
/// round-half-to-even.
fn centre_offset(len: usize, crop: usize) -> usize {
    let d = len.saturating_sub(crop);
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// The parsed header dictionary of an `.npy` file.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the header's Python literal.
enum PyValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl NpyHeader {
    /// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
    fn parse(text: &str) -> Result<NpyHeader, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        p.skip_ws();
        p.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = match p.value()? {
                PyValue::Str(s) => s,
                _ => return Err("a key is not a string".into()),
            };
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let value = p.value()?;
            match (key.as_str(), value) {
                ("descr", PyValue::Str(s)) => descr = Some(s),
                ("fortran_order", PyValue::Bool(b)) => fortran = Some(b),
                ("shape", PyValue::Tuple(t)) => shape = Some(t),
                ("descr" | "fortran_order" | "shape", _) => {
                    return Err(format!("`{key}` has the wrong type"))
                }
                _ => return Err(format!("unknown key `{key}`")),
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.skip_ws();
                p.expect(b'}')?;
                break;
            }
        }
        p.skip_ws();
        if p.i != p.s.len() {
            return Err("text after the dictionary".into());
        }
        Ok(NpyHeader {
            descr: descr.ok_or("no `descr` key")?,
            fortran_order: fortran.ok_or("no `fortran_order` key")?,
            shape: shape.ok_or("no `shape` key")?,
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{}` at offset {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<PyValue, String> {
        match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.s.get(self.i).is_some_and(|&c| c != q) {
                    self.i += 1;
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.expect(q)?;
                Ok(PyValue::Str(text))
            }
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.skip_ws();
                    if self.eat(b')') {
                        break;
                    }
                    let start = self.i;
                    while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                        self.i += 1;
                    }
                    let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                    let d: usize = digits
                        .parse()
                        .map_err(|_| format!("bad shape dimension at offset {start}"))?;
                    // Python 2 wrote long integers with an `L` suffix.
                    self.eat(b'L');
                    dims.push(d);
                    self.skip_ws();
                    if !self.eat(b',') {
                        self.skip_ws();
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(PyValue::Tuple(dims))
            }
            _ => {
                let rest = &self.s[self.i..];
                if rest.starts_with(b"True") {
                    self.i += 4;
                    Ok(PyValue::Bool(true))
                } else if rest.starts_with(b"False") {
                    self.i += 5;
                    Ok(PyValue::Bool(false))
                } else {
                    Err(format!("unexpected text at offset {}", self.i))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shufflekit-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn npy_error(bytes: &[u8]) -> String {
        parse_npy(bytes, Path::new("x.npy"))
            .unwrap_err()
            .to_string()
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn random_input_is_seeded() {
        let s = Shape::chw(3, 4, 5);
        let a = random_input(&s, 2, 9).unwrap();
        assert_eq!(a.shape(), &[2, 3, 4, 5]);
        assert_eq!(a, random_input(&s, 2, 9).unwrap());
        assert_ne!(a, random_input(&s, 2, 10).unwrap());
    }

    #[test]
    fn npy_round_trip() {
        for shape in [vec![2, 3, 4], vec![5], vec![]] {
            let n: usize = shape.iter().product();
            let t = Tensor::new(
                shape.clone(),
                (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
            )
            .unwrap();
            let bytes = npy_bytes(&t);
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            let path = temp("round_trip.npy");
            write_npy(&path, &t).unwrap();
            assert_eq!(read_npy(&path).unwrap(), t);
        }
        // The header numpy writes for a (2, 3) float32 array.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let t = Tensor::new(vec![2, 3], vec![0.0; 6]).unwrap();
        assert!(String::from_utf8_lossy(&npy_bytes(&t)).contains(header));
    }

    #[test]
    fn npy_reads_f64_and_version_2() {
        let data: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n";
        let t = parse_npy(&with_header(header, &data), Path::new("x.npy")).unwrap();
        assert_eq!(t.data(), &[1.5, -2.0]);
        assert_eq!(t.shape(), &[2]);

        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        let header = "{\"shape\": (1, 1), \"fortran_order\": False, \"descr\": \"<f4\"}";
        v2.extend_from_slice(&(header.len() as u32).to_le_bytes());
        v2.extend_from_slice(header.as_bytes());
        v2.extend_from_slice(&7.0f32.to_le_bytes());
        let t = parse_npy(&v2, Path::new("x.npy")).unwrap();
        assert_eq!(t.shape(), &[1, 1]);
        assert_eq!(t.data(), &[7.0]);
    }

    #[test]
    fn npy_errors_say_why() {
        let four = [0u8; 4];
        let e = npy_error(b"not an npy file");
        assert!(e.starts_with("`x.npy` is not a valid .npy file: "), "{e}");
        assert!(e.contains("magic"), "{e}");
        let e = npy_error(&with_header(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
            &four,
        ));
        assert!(e.contains("Fortran order"), "{e}");
        let e = npy_error(&with_header(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }",
            &four,
        ));
        assert!(e.contains("dtype `<i4` is not supported"), "{e}");
        let e = npy_error(&with_header(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
            &four,
        ));
        assert!(e.contains("dtype `>f4` is not supported"), "{e}");
        let e = npy_error(&with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            &four,
        ));
        assert!(
            e.contains("truncated data: shape [2] of `<f4` needs 8 bytes, the file has 4"),
            "{e}"
        );
        let e = npy_error(&with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }",
            &four,
        ));
        assert!(e.contains("trailing data"), "{e}");
        let e = npy_error(&with_header("{'descr': '<f4', 'shape': (1,), }", &four));
        assert!(e.contains("no `fortran_order` key"), "{e}");
        let e = npy_error(&with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,x), }",
            &four,
        ));
        assert!(e.contains("bad header"), "{e}");
        let mut short = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &four,
        );
        short.truncate(20);
        assert!(npy_error(&short).contains("header (57 bytes) is truncated"));
        let mut v9 = with_header("{}", &[]);
        v9[6] = 9;
        assert!(npy_error(&v9).contains("version 9.0 is not supported"));
        let e = npy_error(&with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &four,
        ));
        assert!(e.contains("too large"), "{e}");
        let e = read_npy(temp("missing.npy")).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read `") && e.contains("missing.npy"),
            "{e}"
        );
    }

    #[test]
    fn resize_length_matches_the_imagenet_ratio() {
        assert_eq!(resize_length(224), 256);
        assert_eq!(resize_length(32), 37);
        assert_eq!(resize_length(7), 8);
        assert_eq!(centre_offset(8, 7), 0); // round(0.5) = 0
        assert_eq!(centre_offset(10, 7), 2); // round(1.5) = 2
        assert_eq!(centre_offset(12, 7), 2); // round(2.5) = 2
        assert_eq!(centre_offset(14, 7), 4); // round(3.5) = 4
    }

    #[test]
    fn tiny_png_is_cropped_and_normalised() {
        // 8 wide, 10 high: the short side is already round(7 * 256 / 224) = 8,
        // so no resampling happens and the 7x7 crop starts at x 0, y 2.
        let img = RgbImage::from_fn(8, 10, |x, y| Rgb([(x * 20) as u8, (y * 20) as u8, 100]));
        let path = temp("tiny.png");
        img.save(&path).unwrap();
        let opts = ImageOptions::default();
        let t = load_image(&path, &Shape::chw(3, 7, 7), &opts).unwrap();
        assert_eq!(t.shape(), &[1, 3, 7, 7]);
        let at = |c: usize, y: usize, x: usize| t.data()[(c * 7 + y) * 7 + x];
        let norm = |v: f32, c: usize| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        assert_eq!(at(0, 0, 3), norm(60.0, 0));
        assert_eq!(at(1, 0, 3), norm(40.0, 1));
        assert_eq!(at(1, 6, 0), norm(160.0, 1));
        assert_eq!(at(2, 4, 4), norm(100.0, 2));
    }

    #[test]
    fn grey_images_expand_and_resizing_keeps_constants() {
        let img = GrayImage::from_pixel(40, 30, Luma([51]));
        let path = temp("grey.png");
        img.save(&path).unwrap();
        let opts = ImageOptions {
            mean: vec![0.0, 0.1, 0.2],
            std: vec![1.0, 0.5, 0.25],
        };
        let t = load_image(&path, &Shape::chw(3, 16, 16), &opts).unwrap();
        assert_eq!(t.shape(), &[1, 3, 16, 16]);
        for c in 0..3 {
            let expected = (0.2 - opts.mean[c]) / opts.std[c];
            for &v in &t.data()[c * 256..(c + 1) * 256] {
                assert!((v - expected).abs() < 1e-6, "{v} vs {expected}");
            }
        }
        // A one-channel network takes the grey image as it is.
        let one = ImageOptions {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let t = load_image(&path, &Shape::chw(1, 16, 16), &one).unwrap();
        assert_eq!(t.shape(), &[1, 1, 16, 16]);
        assert!((t.data()[0] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn jpeg_images_load() {
        // JPEG is lossy: a flat colour comes back within a few levels.
        let path = temp("flat.jpg");
        RgbImage::from_pixel(30, 20, Rgb([200, 100, 50]))
            .save(&path)
            .unwrap();
        let none = ImageOptions {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        };
        let t = load_image(&path, &Shape::chw(3, 8, 8), &none).unwrap();
        assert_eq!(t.shape(), &[1, 3, 8, 8]);
        for (c, level) in [200.0f32, 100.0, 50.0].into_iter().enumerate() {
            for &v in &t.data()[c * 64..(c + 1) * 64] {
                assert!((v * 255.0 - level).abs() < 6.0, "channel {c}: {v}");
            }
        }
    }

    #[test]
    fn image_errors_are_clear() {
        let path = temp("corrupt.png");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
        let e = load_image(&path, &Shape::chw(3, 8, 8), &ImageOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with("cannot decode image `"), "{e}");
        assert!(e.to_string().contains("corrupt.png"), "{e}");

        let rgb = temp("rgb.png");
        RgbImage::from_pixel(8, 8, Rgb([1, 2, 3]))
            .save(&rgb)
            .unwrap();
        let e = load_image(&rgb, &Shape::chw(1, 8, 8), &ImageOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("rgb.png` has 3 channels but the network's input has 1"),
            "{e}"
        );
        let e = load_image(&rgb, &Shape::chw(4, 8, 8), &ImageOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("has 3 channels but the network's input has 4"),
            "{e}"
        );
        let e = load_image(&rgb, &Shape::flat(10), &ImageOptions::default()).unwrap_err();
        assert!(e.to_string().contains("is not an image shape"), "{e}");
        let bad = ImageOptions {
            mean: vec![0.5, 0.5],
            std: vec![1.0, 1.0, 1.0],
        };
        let e = load_image(&rgb, &Shape::chw(3, 8, 8), &bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mean has 2 values but the network's input has 3 channels"
        );
        let zero = ImageOptions {
            mean: vec![0.5; 3],
            std: vec![1.0, 0.0, 1.0],
        };
        assert!(load_image(&rgb, &Shape::chw(3, 8, 8), &zero).is_err());
        let e = load_image(
            temp("nope.png"),
            &Shape::chw(3, 8, 8),
            &ImageOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("cannot read `"), "{e}");
    }
}
