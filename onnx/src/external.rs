//! External data: initializers whose bytes live in a file beside the model
//! (`external_data` with `location`, `offset` and `length`, as the ONNX
//! spec defines them; PyTorch's dynamo exporter writes `model.onnx.data`).
//!
//! The location must name a file inside the model's directory: absolute
//! paths, `..` and symbolic links that resolve outside it are refused, and
//! so are ranges past the end of the file. Each file is read once, in one
//! pass (no memory map: that would need a crate and `unsafe`), and every
//! tensor's range is copied out of that buffer; the buffer is dropped
//! before the import proper starts.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::proto::Model;
use crate::ImportError;

/// Replaces the external data of every initializer by its bytes, read from
/// the files beside the model in `dir`. Without a directory (a model given
/// as bytes), external data is an error.
pub(crate) fn load(model: &mut Model, dir: Option<&Path>) -> Result<(), ImportError> {
    let Some(g) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for t in g.initializer.iter_mut().filter(|t| t.external) {
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let location = entry("location").unwrap_or_default();
        let error = |message: String| ImportError::ExternalData {
            tensor: t.name.clone(),
            location: location.clone(),
            message,
        };
        let Some(dir) = dir else {
            return Err(error(
                "the model was given as bytes; import it from its file so that the data beside it can be found".into(),
            ));
        };
        if !files.contains_key(&location) {
            let bytes = read(dir, &location).map_err(error)?;
            files.insert(location.clone(), bytes);
        }
        let bytes = &files[&location];
        let number =
            |key: &str| -> Result<Option<u64>, ImportError> {
                match entry(key) {
                    None => Ok(None),
                    Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                        error(format!("`{key}` is `{v}`, not a non-negative integer"))
                    }),
                }
            };
        let size = bytes.len() as u64;
        let offset = number("offset")?.unwrap_or(0);
        if offset > size {
            return Err(error(format!(
                "offset {offset} is past the end of the file ({size} bytes)"
            )));
        }
        let length = number("length")?.unwrap_or(size - offset);
        let end = offset.checked_add(length).ok_or_else(|| {
            error(format!(
                "offset {offset} plus length {length} overflows a 64-bit integer"
            ))
        })?;
        if end > size {
            return Err(error(format!(
                "bytes {offset}..{end} run past the end of the file ({size} bytes)"
            )));
        }
        // Both fit in the buffer's length, so in usize.
        let (offset, end) = (offset as usize, end as usize);
        t.raw_data = bytes[offset..end].to_vec();
        t.external = false;
        t.external_data.clear();
    }
    Ok(())
}

/// The contents of `location` inside `dir`, after checking that it stays
/// inside `dir`.
fn read(dir: &Path, location: &str) -> Result<Vec<u8>, String> {
    if location.is_empty() {
        return Err("the tensor has no `location`".into());
    }
    let relative = Path::new(location);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, Component::RootDir | Component::Prefix(_)))
    {
        return Err(
            "the location is an absolute path; external data must be a file in the model's directory"
                .into(),
        );
    }
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(
            "the location goes up a directory (`..`); external data must be a file in the model's directory"
                .into(),
        );
    }
    let base = canonical(dir).map_err(|e| {
        format!(
            "cannot resolve the model's directory `{}`: {e}",
            dir.display()
        )
    })?;
    let path = base.join(relative);
    let real = canonical(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("the file `{}` does not exist", path.display()),
        _ => format!("cannot resolve `{}`: {e}", path.display()),
    })?;
    if !real.starts_with(&base) {
        return Err(format!(
            "`{}` resolves to `{}`, outside the model's directory `{}` (a symbolic link out of it)",
            path.display(),
            real.display(),
            base.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("`{}` is not a regular file", real.display()));
    }
    std::fs::read(&real).map_err(|e| format!("cannot read `{}`: {e}", real.display()))
}

fn canonical(p: &Path) -> std::io::Result<PathBuf> {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    p.canonicalize()
}

#[cfg(test)]
mod tests {
    use shufflekit_ir::weights::{InitOptions, Weights};
    use std::path::Path;

    use crate::proto::Model;

    const TINY: &str = "
name: tiny
input: [3, 8, 8]
layers:
  - conv: {name: c1, out: 4, kernel: 3, padding: 1, bias: true}
  - relu
  - global_avg_pool
  - flatten
  - linear: {name: fc, out: 2}
";

    /// A tiny model whose initializers all live in `data_name` (written
    /// into `dir` unless `write_data` is false), with `edit` applied to
    /// each tensor's (location, offset, length) before encoding.
    fn model_with_external_data(
        dir: &Path,
        data_name: &str,
        edit: impl Fn(&str, u64, u64) -> (String, String, String),
    ) -> std::path::PathBuf {
        let graph = shufflekit_spec::load_str(TINY, "tiny.yaml", &[]).unwrap();
        let weights = Weights::init(&graph, &InitOptions::default());
        let bytes = crate::export(&graph, &weights).unwrap();
        let mut model = Model::decode(&bytes).unwrap();
        let mut data = Vec::new();
        for t in &mut model.graph.as_mut().unwrap().initializer {
            if t.raw_data.len() < 16 {
                continue;
            }
            let (offset, length) = (data.len() as u64, t.raw_data.len() as u64);
            data.append(&mut t.raw_data);
            let (l, o, n) = edit(data_name, offset, length);
            t.external = true;
            t.external_data = vec![
                ("location".into(), l),
                ("offset".into(), o),
                ("length".into(), n),
            ];
        }
        std::fs::write(dir.join(data_name), data).unwrap();
        let path = dir.join("model.onnx");
        std::fs::write(&path, model.encode()).unwrap();
        path
    }

    fn same(l: &str, o: u64, n: u64) -> (String, String, String) {
        (l.to_string(), o.to_string(), n.to_string())
    }

    fn error(path: &Path) -> String {
        crate::import_file(path).unwrap_err().to_string()
    }

    #[test]
    fn external_data_beside_the_model_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = model_with_external_data(dir.path(), "model.onnx.data", same);
        let imported = crate::import_file(&path).unwrap();
        let graph = shufflekit_spec::load_str(TINY, "tiny.yaml", &[]).unwrap();
        let weights = Weights::init(&graph, &InitOptions::default());
        assert_eq!(
            imported.weights.get("c1.weight"),
            weights.get("c1.weight"),
            "the weights read back from the data file"
        );
        // In a subdirectory, named with `./`.
        let sub = dir.path().join("weights");
        std::fs::create_dir(&sub).unwrap();
        let path = model_with_external_data(dir.path(), "weights/w.bin", |l, o, n| {
            same(&format!("./{l}"), o, n)
        });
        crate::import_file(&path).unwrap();
        // As bytes there is no directory to read from.
        let e = crate::import(&std::fs::read(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("import it from its file"), "{e}");
    }

    #[test]
    fn a_location_going_up_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(dir.path().join("outside.data"), [0u8; 4096]).unwrap();
        let path =
            model_with_external_data(&inner, "w.data", |_, o, n| same("../outside.data", o, n));
        let e = error(&path);
        assert!(
            e.contains("external data `../outside.data`: the location goes up a directory (`..`)"),
            "{e}"
        );
    }

    #[test]
    fn an_absolute_location_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("w.data").to_string_lossy().into_owned();
        let path = model_with_external_data(dir.path(), "w.data", |_, o, n| same(&abs, o, n));
        let e = error(&path);
        assert!(e.contains("the location is an absolute path"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let outside = dir.path().join("secret.data");
        std::fs::write(&outside, [0u8; 4096]).unwrap();
        std::os::unix::fs::symlink(&outside, inner.join("link.data")).unwrap();
        let path = model_with_external_data(&inner, "w.data", |_, o, n| same("link.data", o, n));
        let e = error(&path);
        assert!(
            e.contains("outside the model's directory") && e.contains("secret.data"),
            "{e}"
        );
        // A link that stays inside is followed.
        std::os::unix::fs::symlink(inner.join("w.data"), inner.join("inside.data")).unwrap();
        let path = model_with_external_data(&inner, "w.data", |_, o, n| same("inside.data", o, n));
        crate::import_file(&path).unwrap();
    }

    #[test]
    fn a_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            model_with_external_data(dir.path(), "w.data", |_, o, n| same("nope.data", o, n));
        let e = error(&path);
        assert!(
            e.contains("external data `nope.data`: the file `") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn an_offset_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = model_with_external_data(dir.path(), "w.data", |l, _, n| same(l, 1 << 40, n));
        let e = error(&path);
        assert!(
            e.contains("offset 1099511627776 is past the end of the file"),
            "{e}"
        );
        // A range that starts inside but ends outside.
        let path = model_with_external_data(dir.path(), "w.data", |l, o, n| same(l, o, n + 4096));
        let e = error(&path);
        assert!(e.contains("run past the end of the file"), "{e}");
    }

    #[test]
    fn a_length_that_overflows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            model_with_external_data(dir.path(), "w.data", |l, o, _| same(l, o.max(1), u64::MAX));
        let e = error(&path);
        assert!(e.contains("overflows a 64-bit integer"), "{e}");
        let path = model_with_external_data(dir.path(), "w.data", |l, o, _| {
            (l.to_string(), o.to_string(), "-5".into())
        });
        let e = error(&path);
        assert!(
            e.contains("`length` is `-5`, not a non-negative integer"),
            "{e}"
        );
    }
}
