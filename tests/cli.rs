//! The `shufflekit` binary end to end: outputs, exit codes and error text.

use std::process::{Command, Output};

fn shufflekit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shufflekit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn flops_json_reproduces_table1_for_every_group_count() {
    let expected = [
        ("1", 143_078_976u64, 142_502_976u64, 1_531_936u64),
        ("2", 140_836_512, 140_036_512, 1_733_848),
        ("3", 137_460_672, 136_500_672, 1_865_728),
        ("4", 134_339_776, 133_251_776, 1_968_344),
        ("8", 138_365_952, 136_829_952, 2_434_768),
    ];
    for (g, macs, conv_macs, params) in expected {
        let set = format!("groups={g}");
        let o = shufflekit(&[
            "flops",
            "specs/shufflenet_v1.yaml",
            "--set",
            &set,
            "--format",
            "json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
        assert_eq!(v["macs"], macs, "g={g}");
        assert_eq!(v["conv_macs"], conv_macs, "g={g}");
        assert_eq!(v["params"], params, "g={g}");
        assert_eq!(v["convention"], "macs");
        let layers = v["layers"].as_array().expect("layers");
        let fc = layers.iter().find(|l| l["name"] == "fc").expect("fc layer");
        assert_eq!(fc["op"], "linear");
        assert_eq!(fc["output_shape"], serde_json::json!([1000]));
        assert!(layers
            .iter()
            .all(|l| l.get("macs").is_some() && l.get("params").is_some()));
    }
}

#[test]
fn flops_table_and_csv_name_the_convention() {
    let o = shufflekit(&["flops", "specs/shufflenet_v1.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("137,460,672  (conv 136,500,672 + linear 960,000)"),
        "{text}"
    );
    assert!(text.contains("convention   macs:"), "{text}");
    let o = shufflekit(&[
        "flops",
        "specs/shufflenet_v1.yaml",
        "--format",
        "csv",
        "--convention",
        "flops",
    ]);
    let text = stdout(&o);
    assert!(
        text.starts_with("# model=shufflenet_v1 convention=flops"),
        "{text}"
    );
    assert!(text.contains("total,,,,137460672,274921344,"), "{text}");
}

#[test]
fn check_prints_a_deterministic_ir() {
    let a = shufflekit(&["check", "specs/shufflenet_v2.yaml", "--print-ir"]);
    let b = shufflekit(&["check", "specs/shufflenet_v2.yaml", "--print-ir"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert!(stdout(&a).contains("channel_shuffle g=2"));
    assert!(stdout(&a).contains("; stage3.unit2.branch2.pwconv1"));
}

#[test]
fn a_bad_spec_exits_non_zero_and_shows_the_line() {
    let o = shufflekit(&["check", "spec/tests/bad_specs/groups_not_dividing.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("spec/tests/bad_specs/groups_not_dividing.yaml:6:"),
        "{err}"
    );
    assert!(err.contains("layer `pw`"), "{err}");
    assert!(
        err.contains("output channels 64 are not divisible by groups 3"),
        "{err}"
    );
    assert!(
        err.contains("conv: {name: pw"),
        "the source line is shown: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unknown_parameter_exits_non_zero() {
    let o = shufflekit(&["flops", "specs/shufflenet_v1.yaml", "--set", "group=3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("did you mean `groups`?"),
        "{}",
        stderr(&o)
    );
    let o = shufflekit(&["flops", "specs/shufflenet_v1.yaml", "--set", "groups"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("name=value"), "{}", stderr(&o));
}

#[test]
fn a_missing_spec_file_exits_non_zero() {
    let o = shufflekit(&["flops", "specs/nope.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("specs/nope.yaml"), "{}", stderr(&o));
}
