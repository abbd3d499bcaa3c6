//! Random and mutated YAML fed to the spec parser and expander: every input
//! must give a graph or an error, never a panic, and errors must point
//! inside the source.

use proptest::prelude::*;
use shufflekit_spec::Spec;

const SEED_SPEC: &str = r#"name: fuzz
params: {groups: 2, width: 1.0, deep: true}
let:
  c: round_up(16 * width, 2 * groups)
input: [4, 16, 16]
blocks:
  unit:
    args: {out: null, stride: 1}
    layers:
      - conv: {name: pw, out: out // 2, kernel: 1, groups: groups}
      - batch_norm: {name: bn}
      - relu
      - channel_shuffle: {groups: groups}
      - conv: {name: dw, out: out // 2, kernel: 3, stride: stride, padding: 1, groups: out // 2}
      - conv: {name: pw2, out: "stride == 1 ? out : out - in_channels", kernel: 1, groups: groups}
      - if: stride == 1
        add: {from: [in, pw2]}
      - if: stride != 1
        avg_pool: {name: sc, from: in, kernel: 3, stride: 2, padding: 1}
      - if: stride != 1
        concat: {from: [sc, pw2]}
layers:
  - conv: {name: stem, out: 8, kernel: 3, padding: 1}
  - repeat: {count: "deep ? 3 : 1", index: i, name: unit}
    unit: {out: c, stride: "i == 0 ? 2 : 1"}
  - global_avg_pool
  - flatten
  - linear: {out: 10}
"#;

fn check(src: &str) {
    match Spec::parse(src, "fuzz.yaml", std::path::Path::new(".")) {
        Ok(s) => {
            if let Err(e) = s.build(&[]) {
                assert!(e.offset <= e.source.len(), "{e}");
            }
        }
        Err(e) => {
            assert!(e.offset <= e.source.len(), "{e}");
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn the_seed_spec_is_valid() {
    let g =
        shufflekit_spec::load_str(SEED_SPEC, "fuzz.yaml", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(g.len() > 20);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(src in "\\PC{0,200}") {
        check(&src);
    }

    #[test]
    fn yaml_shaped_noise_never_panics(src in "(name: x\n)?(input: \\[[0-9, -]{0,12}\\]\n)?(layers:\n)?(  - [a-z_]{1,12}(: \\{[a-z_]{1,6}: [-0-9a-z_*/+ ]{1,10}\\})?\n){0,6}") {
        check(&src);
    }

    #[test]
    fn mutated_specs_never_panic(edits in proptest::collection::vec((0usize..2000, 0u8..5, proptest::char::any()), 1..6)) {
        let mut chars: Vec<char> = SEED_SPEC.chars().collect();
        for (pos, kind, c) in edits {
            if chars.is_empty() { break; }
            let at = pos % chars.len();
            match kind {
                0 => { chars.remove(at); }
                1 => chars.insert(at, c),
                2 => chars[at] = c,
                3 => { let digit = char::from(b'0' + (pos % 10) as u8); chars.insert(at, digit); }
                _ => { let len = (pos % 30).min(chars.len() - at); chars.drain(at..at + len); }
            }
        }
        let src: String = chars.into_iter().collect();
        check(&src);
    }
}
