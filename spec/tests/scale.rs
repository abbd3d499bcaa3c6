//! Specs of the documented limit, 100,000 layers, check and count: every
//! step is linear, and none recurses once per layer (a chain this long
//! overflowed the stack in the cycle check). Timing is the benchmark's job
//! (`cargo bench -p shufflekit-spec --bench scale`); these check the results.

use std::path::Path;

use shufflekit_ir::cost::{self, Convention};
use shufflekit_ir::text::{self, DumpOptions};
use shufflekit_spec::{Spec, MAX_NODES};
use shufflekit_test_support::scale::{self, Layout};

fn build(layout: Layout, nodes: usize) -> shufflekit_ir::Graph {
    Spec::parse(&scale::spec(layout, nodes), "scale.yaml", Path::new("."))
        .and_then(|s| s.build(&[]))
        .unwrap_or_else(|e| panic!("{layout:?} {nodes}: {e}"))
}

#[test]
fn a_flat_chain_of_the_largest_size_expands_with_every_name() {
    let g = build(Layout::Relu, MAX_NODES);
    assert_eq!(g.len(), MAX_NODES);
    // Unnamed layers are numbered in order: relu, relu_1, ..., relu_99998.
    let names: Vec<&str> = g.nodes().map(|n| g.node(n).name.as_str()).collect();
    assert_eq!(&names[..3], ["input", "relu", "relu_1"]);
    assert_eq!(names[MAX_NODES - 1], format!("relu_{}", MAX_NODES - 2));
    assert!(shufflekit_ir::verify::verify(&g).is_ok());
    let dump = text::dump(&g, DumpOptions::default());
    assert_eq!(
        dump.lines().count(),
        MAX_NODES + 3,
        "header, nodes, return, brace"
    );
}

#[test]
fn a_conv_chain_of_the_largest_size_counts() {
    let g = build(Layout::Conv, MAX_NODES);
    assert_eq!(g.len(), MAX_NODES);
    let c = cost::count(&g, Convention::Macs);
    // 49,999 convs of 8x8x8 from 8 channels, 3x3: 512 * 72 MACs each.
    assert_eq!(c.conv_macs, 49_999 * 512 * 72);
    assert_eq!(c.params, 49_999 * 8 * 8 * 9);
    assert_eq!(c.layers.len(), MAX_NODES);
}

#[test]
fn named_references_and_repeated_blocks_of_the_largest_size_resolve() {
    let g = build(Layout::Named, MAX_NODES);
    assert_eq!(g.len(), MAX_NODES);
    let last = g.find(&format!("r{}", MAX_NODES - 2)).expect("last layer");
    let prev = g.find(&format!("r{}", MAX_NODES - 3)).expect("its input");
    assert_eq!(g.inputs(last), vec![prev]);

    // 24,999 block calls in three repeats (10,000 + 10,000 + 4,999).
    let g = build(Layout::Repeat, MAX_NODES - 3);
    assert_eq!(g.len(), MAX_NODES - 3);
    let add = g.find("s3u4999.add").expect("the last call's add");
    let input = g.find("s3u4999.conv").map(|c| g.inputs(c)[0]);
    assert_eq!(input, g.find("s3u4998.add"));
    assert_eq!(g.output(), Some(add));
}

#[test]
fn one_layer_more_than_the_limit_is_refused() {
    let src = scale::spec(Layout::Relu, MAX_NODES + 1);
    let e = Spec::parse(&src, "scale.yaml", Path::new("."))
        .and_then(|s| s.build(&[]))
        .unwrap_err();
    assert_eq!(
        e.message,
        format!("the spec expands to more than {MAX_NODES} layers")
    );
    assert_eq!(e.line, MAX_NODES + 3, "the first layer past the limit");
}
