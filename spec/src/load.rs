//! Loading a spec: reading the file and its imports within the size limits,
//! parsing the YAML and turning it into a [`Spec`] (parameters, derived
//! values, blocks and the layer list, still unevaluated). Expansion into a
//! graph is in `expand.rs`.

use crate::source::{read_limited, SourceFile};
use crate::yaml::{Loc, ScalarStyle, Yaml, YamlKind};
use crate::SpecError;
use shufflekit_ir::ops::SpecSyntax;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The most files one spec may import, directly or not.
const MAX_FILES: usize = 64;

/// Keys with a structural meaning in a layer list.
const STRUCTURAL: &[&str] = &["seq", "repeat", "if"];

/// The layer key an op key or alias stands for.
pub(crate) fn canonical_op(key: &str) -> Option<&'static str> {
    SpecSyntax::find(key).map(|s| s.key)
}

/// A reusable block: named arguments, derived values and a layer list.
#[derive(Debug, Clone)]
pub struct Block {
    /// The block's name.
    pub name: String,
    pub(crate) args: Vec<(String, Option<Yaml>)>,
    pub(crate) lets: Vec<(String, Yaml)>,
    pub(crate) layers: Yaml,
    pub(crate) file: usize,
    pub(crate) loc: Loc,
}

impl Block {
    /// The argument names, in declaration order.
    pub fn arg_names(&self) -> Vec<&str> {
        self.args.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// A parsed spec with its imports, ready to be built with any overrides.
pub struct Spec {
    /// The network's name.
    pub name: String,
    /// The spec's description, if it has one.
    pub doc: Option<String>,
    pub(crate) files: Vec<SourceFile>,
    pub(crate) params: Vec<(String, Yaml)>,
    pub(crate) lets: Vec<(String, Yaml)>,
    pub(crate) input: Yaml,
    pub(crate) blocks: HashMap<String, Block>,
    pub(crate) layers: Yaml,
    pub(crate) output: Option<Yaml>,
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Letters, digits, `_` and `-`: what a layer's `name` may use.
pub(crate) fn is_layer_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn map_entries(node: &Yaml) -> Option<&[(Yaml, Yaml)]> {
    match &node.kind {
        YamlKind::Map(entries) => Some(entries),
        _ => None,
    }
}

impl Spec {
    /// Reads and parses a spec file and the files it imports.
    pub fn parse_file(path: &Path) -> Result<Spec, SpecError> {
        let name = path.display().to_string();
        let text = read_limited(path, &name, "the spec")?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Spec::parse(&text, &name, &base)
    }

    /// Parses spec text; `file` names it in messages, `base` is the folder
    /// imports are resolved against.
    pub fn parse(src: &str, file: &str, base: &Path) -> Result<Spec, SpecError> {
        let mut spec = Spec {
            name: String::new(),
            doc: None,
            files: Vec::new(),
            params: Vec::new(),
            lets: Vec::new(),
            input: Yaml {
                kind: YamlKind::Null,
                loc: Loc::default(),
                style: ScalarStyle::Plain,
            },
            blocks: HashMap::new(),
            layers: Yaml {
                kind: YamlKind::Seq(Vec::new()),
                loc: Loc::default(),
                style: ScalarStyle::NotScalar,
            },
            output: None,
        };
        let root = spec.add_file(file, src)?;
        let entries = spec.top_map(0, &root)?;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut name = None;
        let mut input = None;
        let mut layers = None;
        for (k, v) in entries {
            let key = spec.key_str(0, k)?;
            const TOP: &[&str] = &[
                "name", "doc", "import", "params", "let", "input", "blocks", "layers", "output",
            ];
            if !TOP.contains(&key) {
                return Err(spec.unknown_key(0, k, key, TOP, "top-level key"));
            }
            seen.insert(key);
            match key {
                "name" => name = Some(spec.string(0, v, "name")?),
                "doc" => spec.doc = Some(spec.string(0, v, "doc")?),
                "import" => {
                    let mut visiting = vec![base.join(file)];
                    spec.import(0, v, base, &mut visiting)?
                }
                "params" => spec.params = spec.named_values(0, v, "params")?,
                "let" => spec.lets = spec.named_values(0, v, "let")?,
                "input" => input = Some(v.clone()),
                "blocks" => spec.blocks_from(0, v)?,
                "layers" => layers = Some(v.clone()),
                "output" => spec.output = Some(v.clone()),
                _ => unreachable!("key checked against TOP"),
            }
        }
        for required in ["name", "input", "layers"] {
            if !seen.contains(required) {
                return Err(spec.error(0, root.loc, 0, format!("the spec has no `{required}`")));
            }
        }
        spec.name = name.unwrap_or_default();
        if !is_layer_name(&spec.name) {
            return Err(spec.error(
                0,
                root.loc,
                0,
                format!(
                    "the spec name `{}` may use only letters, digits, `_` and `-`",
                    spec.name
                ),
            ));
        }
        spec.input = input.unwrap_or(spec.input);
        spec.layers = layers.unwrap_or(spec.layers);
        let mut names: HashMap<&str, Loc> = HashMap::new();
        for (n, node) in spec.params.iter().chain(&spec.lets) {
            if let Some(first) = names.insert(n, node.loc) {
                return Err(spec.error(
                    0,
                    node.loc,
                    0,
                    format!("`{n}` is defined twice (first at line {})", first.line),
                ));
            }
        }
        Ok(spec)
    }

    /// Names of the declared parameters, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn add_file(&mut self, name: &str, text: &str) -> Result<Yaml, SpecError> {
        self.files.push(SourceFile::new(name, text));
        self.files[self.files.len() - 1].parse_yaml()
    }

    fn import(
        &mut self,
        file: usize,
        list: &Yaml,
        base: &Path,
        visiting: &mut Vec<PathBuf>,
    ) -> Result<(), SpecError> {
        let YamlKind::Seq(items) = &list.kind else {
            return Err(self.type_error(file, list, "`import`", "a list of file paths"));
        };
        for item in items {
            let rel = self.string(file, item, "import")?;
            let path = base.join(&rel);
            if visiting.iter().any(|p| same_file(p, &path)) {
                return Err(self.error(
                    file,
                    item.loc,
                    rel.len(),
                    format!("`{rel}` is imported in a cycle"),
                ));
            }
            if self
                .files
                .iter()
                .any(|f| same_file(Path::new(&*f.name), &path))
            {
                continue;
            }
            if self.files.len() >= MAX_FILES {
                return Err(self.error(
                    file,
                    item.loc,
                    rel.len(),
                    format!("more than {MAX_FILES} files imported"),
                ));
            }
            let name = path.display().to_string();
            let text = read_limited(&path, &name, "the spec").map_err(|mut e| {
                let at = self.error(file, item.loc, rel.len(), e.message.clone());
                e.notes
                    .push(format!("imported at {}:{}:{}", at.file, at.line, at.col));
                at.with_notes(std::mem::take(&mut e.notes))
            })?;
            let root = self.add_file(&name, &text)?;
            let lib = self.files.len() - 1;
            for (k, v) in self.top_map(lib, &root)? {
                let key = self.key_str(lib, k)?;
                const LIB: &[&str] = &["doc", "import", "blocks"];
                match key {
                    "doc" => {}
                    "import" => {
                        visiting.push(path.clone());
                        let lib_base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                        self.import(lib, v, &lib_base, visiting)?;
                        visiting.pop();
                    }
                    "blocks" => self.blocks_from(lib, v)?,
                    _ => return Err(self.unknown_key(lib, k, key, LIB, "key of a library file")),
                }
            }
        }
        Ok(())
    }

    fn top_map<'y>(&self, file: usize, root: &'y Yaml) -> Result<&'y [(Yaml, Yaml)], SpecError> {
        map_entries(root).ok_or_else(|| {
            self.error(
                file,
                root.loc,
                1,
                format!(
                    "a spec must be a map of keys like `name:` and `layers:`, found {}",
                    root.type_name()
                ),
            )
        })
    }

    fn blocks_from(&mut self, file: usize, node: &Yaml) -> Result<(), SpecError> {
        let entries = map_entries(node)
            .ok_or_else(|| self.type_error(file, node, "`blocks`", "a map of block definitions"))?;
        for (k, v) in entries {
            let name = self.key_str(file, k)?.to_string();
            if !is_identifier(&name) {
                return Err(self.error(
                    file,
                    k.loc,
                    name.len(),
                    format!("block name `{name}` is not an identifier"),
                ));
            }
            if canonical_op(&name).is_some() || STRUCTURAL.contains(&name.as_str()) {
                return Err(self.error(
                    file,
                    k.loc,
                    name.len(),
                    format!("block name `{name}` is already an op or keyword"),
                ));
            }
            if let Some(other) = self.blocks.get(&name) {
                let first = &self.files[other.file];
                return Err(self.error(
                    file,
                    k.loc,
                    name.len(),
                    format!(
                        "block `{name}` is defined twice (first at {}:{})",
                        first.name, other.loc.line
                    ),
                ));
            }
            let fields = map_entries(v).ok_or_else(|| {
                self.type_error(
                    file,
                    v,
                    &format!("block `{name}`"),
                    "a map with `args` and `layers`",
                )
            })?;
            let mut block = Block {
                name: name.clone(),
                args: Vec::new(),
                lets: Vec::new(),
                layers: Yaml {
                    kind: YamlKind::Null,
                    loc: v.loc,
                    style: ScalarStyle::Plain,
                },
                file,
                loc: k.loc,
            };
            let mut has_layers = false;
            for (fk, fv) in fields {
                let key = self.key_str(file, fk)?;
                match key {
                    "doc" => {}
                    "args" => block.args = self.block_args(file, fv)?,
                    "let" => block.lets = self.named_values(file, fv, "let")?,
                    "layers" => {
                        has_layers = true;
                        block.layers = fv.clone();
                    }
                    _ => {
                        return Err(self.unknown_key(
                            file,
                            fk,
                            key,
                            &["doc", "args", "let", "layers"],
                            "key of a block",
                        ))
                    }
                }
            }
            if !has_layers {
                return Err(self.error(
                    file,
                    k.loc,
                    name.len(),
                    format!("block `{name}` has no `layers`"),
                ));
            }
            self.blocks.insert(name, block);
        }
        Ok(())
    }

    fn block_args(
        &self,
        file: usize,
        node: &Yaml,
    ) -> Result<Vec<(String, Option<Yaml>)>, SpecError> {
        let mut args: Vec<(String, Option<Yaml>)> = Vec::new();
        let mut push = |name: &Yaml, default: Option<Yaml>| -> Result<(), SpecError> {
            let n = self.key_str(file, name)?.to_string();
            if !is_identifier(&n) || n == "name" || n == "from" || n == "in" {
                return Err(self.error(
                    file,
                    name.loc,
                    n.len(),
                    format!("`{n}` cannot be an argument name"),
                ));
            }
            if args.iter().any(|(a, _)| *a == n) {
                return Err(self.error(
                    file,
                    name.loc,
                    n.len(),
                    format!("argument `{n}` is declared twice"),
                ));
            }
            args.push((n, default));
            Ok(())
        };
        match &node.kind {
            YamlKind::Seq(items) => {
                for item in items {
                    push(item, None)?;
                }
            }
            YamlKind::Map(entries) => {
                for (k, v) in entries {
                    let default = (!matches!(v.kind, YamlKind::Null)).then(|| v.clone());
                    push(k, default)?;
                }
            }
            _ => {
                return Err(self.type_error(
                    file,
                    node,
                    "`args`",
                    "a list of names or a map of names to defaults (null: required)",
                ))
            }
        }
        Ok(args)
    }

    fn named_values(
        &self,
        file: usize,
        node: &Yaml,
        what: &str,
    ) -> Result<Vec<(String, Yaml)>, SpecError> {
        if matches!(node.kind, YamlKind::Null) {
            return Ok(Vec::new());
        }
        let entries = map_entries(node).ok_or_else(|| {
            self.type_error(file, node, &format!("`{what}`"), "a map of names to values")
        })?;
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = self.key_str(file, k)?;
            if !is_identifier(name) || matches!(name, "true" | "false" | "in") {
                return Err(self.error(
                    file,
                    k.loc,
                    name.len(),
                    format!("`{name}` is not a valid name for a value"),
                ));
            }
            out.push((name.to_string(), v.clone()));
        }
        Ok(out)
    }

    pub(crate) fn key_str<'y>(&self, file: usize, key: &'y Yaml) -> Result<&'y str, SpecError> {
        self.files[file].key_str(key)
    }

    pub(crate) fn string(&self, file: usize, node: &Yaml, what: &str) -> Result<String, SpecError> {
        self.files[file].string(node, what)
    }

    pub(crate) fn unknown_key(
        &self,
        file: usize,
        key: &Yaml,
        name: &str,
        valid: &[&str],
        what: &str,
    ) -> SpecError {
        self.files[file].unknown_key(key, name, valid, what)
    }

    pub(crate) fn type_error(
        &self,
        file: usize,
        node: &Yaml,
        what: &str,
        expected: &str,
    ) -> SpecError {
        self.files[file].type_error(node, what, expected)
    }

    pub(crate) fn error(&self, file: usize, loc: Loc, len: usize, message: String) -> SpecError {
        self.files[file].error(loc, len, message)
    }

    pub(crate) fn error_at_offset(
        &self,
        file: usize,
        offset: usize,
        len: usize,
        message: String,
    ) -> SpecError {
        self.files[file].error_at_offset(offset, len, message)
    }
}

impl SpecError {
    fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes.extend(notes);
        self
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
