//! The exact figures of `shared/reference/shufflenet-v1.md` (ShuffleNet v1,
//! Table 1, recomputed and cross-checked with megvii-model, osmr/imgclsmob
//! and tensorpack), torchvision's ShuffleNet v2 x1.0 and MobileNet v1 1.0.

use std::path::{Path, PathBuf};

use shufflekit_ir::cost::{self, Convention, Cost};

fn spec_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../specs")
        .join(name)
}

fn cost_of(name: &str, sets: &[(&str, &str)]) -> Cost {
    let overrides: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let graph =
        shufflekit_spec::load(&spec_path(name), &overrides).unwrap_or_else(|e| panic!("{e}"));
    cost::count(&graph, Convention::Macs)
}

#[test]
fn shufflenet_v1_table1_exact() {
    // groups, conv-only MACs, conv + FC MACs, params.
    let table = [
        (1, 142_502_976u64, 143_078_976u64, 1_531_936u64),
        (2, 140_036_512, 140_836_512, 1_733_848),
        (3, 136_500_672, 137_460_672, 1_865_728),
        (4, 133_251_776, 134_339_776, 1_968_344),
        (8, 136_829_952, 138_365_952, 2_434_768),
    ];
    for (g, conv, total, params) in table {
        let c = cost_of("shufflenet_v1.yaml", &[("groups", &g.to_string())]);
        assert_eq!(c.conv_macs, conv, "g={g} conv-only MACs");
        assert_eq!(c.macs, total, "g={g} MACs");
        assert_eq!(c.params, params, "g={g} params");
    }
}

fn macs_under(c: &Cost, prefix: &str) -> u64 {
    c.layers
        .iter()
        .filter(|l| l.name == prefix || l.name.starts_with(&format!("{prefix}.")))
        .map(|l| l.macs)
        .sum()
}

#[test]
fn shufflenet_v1_g3_per_layer_breakdown() {
    let c = cost_of("shufflenet_v1.yaml", &[]);
    assert_eq!(macs_under(&c, "conv1"), 8_128_512);
    assert_eq!(macs_under(&c, "stage2.unit1"), 8_326_080);
    assert_eq!(macs_under(&c, "stage2.unit1.gconv1"), 4_515_840);
    assert_eq!(macs_under(&c, "stage2.unit1.dwconv"), 423_360);
    assert_eq!(macs_under(&c, "stage2.unit1.gconv2"), 3_386_880);
    for u in 2..=4 {
        assert_eq!(
            macs_under(&c, &format!("stage2.unit{u}")),
            7_949_760,
            "stage2 unit{u}"
        );
    }
    assert_eq!(macs_under(&c, "stage3.unit1"), 9_619_680);
    for u in 2..=8 {
        assert_eq!(
            macs_under(&c, &format!("stage3.unit{u}")),
            7_738_080,
            "stage3 unit{u}"
        );
    }
    assert_eq!(macs_under(&c, "stage4.unit1"), 9_513_840);
    for u in 2..=4 {
        assert_eq!(
            macs_under(&c, &format!("stage4.unit{u}")),
            7_632_240,
            "stage4 unit{u}"
        );
    }
    assert_eq!(macs_under(&c, "fc"), 960_000);
    // 50 weighted layers: conv1, 16 units x 3 convs, fc.
    let weighted = c
        .layers
        .iter()
        .filter(|l| l.op == "conv2d" || l.op == "linear")
        .count();
    assert_eq!(weighted, 50);
}

#[test]
fn shufflenet_v1_width_multiplier_rounds_as_the_spec_says() {
    // 0.5x g=3: Conv1 12, stages 120/240/480; 0.5x g=8: 16, 192/384/768.
    for (g, stem, c2) in [(3, 12, 120), (8, 16, 192)] {
        let c = cost_of(
            "shufflenet_v1.yaml",
            &[("groups", &g.to_string()), ("width", "0.5")],
        );
        let out = |name: &str| {
            c.layers
                .iter()
                .find(|l| l.name == name)
                .unwrap_or_else(|| panic!("no layer {name}"))
                .output_shape[0]
        };
        assert_eq!(out("conv1"), stem, "g={g}");
        assert_eq!(out("stage2.unit4.relu"), c2, "g={g}");
        assert_eq!(out("stage3.unit8.relu"), 2 * c2, "g={g}");
        assert_eq!(out("stage4.unit4.relu"), 4 * c2, "g={g}");
    }
}

#[test]
fn shufflenet_v1_shallow_variant_has_2_4_2_units() {
    let c = cost_of("shufflenet_v1.yaml", &[("shallow", "true")]);
    assert!(c.layers.iter().any(|l| l.name.starts_with("stage3.unit4.")));
    assert!(!c.layers.iter().any(|l| l.name.starts_with("stage3.unit5.")));
    assert!(!c.layers.iter().any(|l| l.name.starts_with("stage2.unit3.")));
}

#[test]
fn shufflenet_v1_shuffle_switch_removes_only_the_shuffles() {
    let on = cost_of("shufflenet_v1.yaml", &[]);
    let off = cost_of("shufflenet_v1.yaml", &[("shuffle", "false")]);
    let shuffles = on
        .layers
        .iter()
        .filter(|l| l.op == "channel_shuffle")
        .count();
    assert_eq!(shuffles, 16);
    assert_eq!(
        off.layers
            .iter()
            .filter(|l| l.op == "channel_shuffle")
            .count(),
        0
    );
    assert_eq!(on.macs, off.macs);
    assert_eq!(on.params, off.params);
}

#[test]
fn shufflenet_v2_matches_torchvision() {
    let c = cost_of("shufflenet_v2.yaml", &[]);
    assert_eq!(c.params, 2_278_604);
    assert_eq!(c.macs, 144_907_992);
}

#[test]
fn mobilenet_v1_matches_the_paper() {
    let c = cost_of("mobilenet_v1.yaml", &[]);
    assert_eq!(c.params, 4_231_976);
    assert_eq!(c.macs, 568_740_352);
}

/// torchvision's MobileNet v3 weights metadata (torchvision/models/
/// mobilenetv3.py, `MobileNet_V3_{Small,Large}_Weights.IMAGENET1K_V1`):
/// `num_params` 2,542,856 and 5,483,032, `_ops` (GFLOPS, counted as MACs)
/// 0.057 and 0.217. The small network's exact MACs are also the count
/// taken from a torchvision export (`../shared/onnx-corpus`, see the onnx
/// crate's corpus test).
#[test]
fn mobilenet_v3_matches_torchvision() {
    let small = cost_of("mobilenet_v3.yaml", &[]);
    assert_eq!(small.params, 2_542_856);
    assert_eq!(small.macs, 56_510_400);
    assert_eq!((small.macs as f64 / 1e6).round(), 57.0);
    let large = cost_of("mobilenet_v3.yaml", &[("large", "true")]);
    assert_eq!(large.params, 5_483_032);
    assert_eq!((large.macs as f64 / 1e6).round(), 217.0);
    assert_eq!(large.macs, 216_589_760);
}

#[test]
fn flops_convention_doubles_macs() {
    let path = spec_path("shufflenet_v1.yaml");
    let graph = shufflekit_spec::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    let macs = cost::count(&graph, Convention::Macs);
    let flops = cost::count(&graph, Convention::Flops);
    let all = cost::count(&graph, Convention::MacsAll);
    assert_eq!(flops.ops, 2 * macs.macs);
    assert!(all.ops > macs.macs);
    assert_eq!(
        all.macs, macs.macs,
        "the MAC total does not depend on the convention"
    );
}
