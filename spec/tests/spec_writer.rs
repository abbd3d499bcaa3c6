//! The spec writer against the parser: every zoo network, written as a flat
//! spec and parsed back, is the same graph (ops with every parameter,
//! shapes, edges, names, output), and graphs a spec cannot express are
//! refused with the layer named.

use std::path::Path;

use shufflekit_ir::ops::{Activation, Conv2d, Op};
use shufflekit_ir::{Graph, Shape};
use shufflekit_spec::{write_flat, SpecHeader};

fn zoo(file: &str, overrides: &[(&str, &str)]) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../specs")
        .join(file);
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    shufflekit_spec::load(&path, &overrides).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Hierarchical names (`stage2.unit1.bn`) are not layer names: flatten them.
fn flat_names(mut g: Graph) -> Graph {
    let ids: Vec<_> = g.nodes().collect();
    for id in ids {
        let name = g.node(id).name.replace('.', "__");
        if name != g.node(id).name {
            g.rename(id, name).unwrap();
        }
    }
    g
}

fn describe(g: &Graph) -> Vec<String> {
    g.nodes()
        .map(|id| {
            let n = g.node(id);
            let from: Vec<&str> = g
                .inputs(id)
                .iter()
                .map(|&i| g.node(i).name.as_str())
                .collect();
            format!(
                "{} = {:?} ({}) -> {}",
                n.name,
                n.op,
                from.join(", "),
                n.shape
            )
        })
        .collect()
}

#[test]
fn every_zoo_network_round_trips_through_a_flat_spec() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("shufflenet_v1.yaml", &[]),
        ("shufflenet_v1.yaml", &[("groups", "8"), ("width", "0.5")]),
        (
            "shufflenet_v1.yaml",
            &[("shuffle", "false"), ("resolution", "64")],
        ),
        ("shufflenet_v2.yaml", &[("width", "1.5")]),
        ("mobilenet_v1.yaml", &[("width", "0.25")]),
        ("vgg_like.yaml", &[]),
        ("resnet_bottleneck.yaml", &[]),
        ("xception_like.yaml", &[]),
        ("resnext.yaml", &[]),
    ];
    for (file, overrides) in cases {
        let graph = flat_names(zoo(file, overrides));
        let comments = vec![format!("written from {file}")];
        let text = write_flat(
            &graph,
            &SpecHeader {
                comments: &comments,
                doc: Some("round trip: it's a test"),
            },
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let back = shufflekit_spec::load_str(&text, "written.yaml", &[])
            .unwrap_or_else(|e| panic!("{file} {overrides:?}: {e}\n{text}"));
        assert_eq!(describe(&back), describe(&graph), "{file} {overrides:?}");
        assert_eq!(back.name, graph.name);
        assert_eq!(
            back.output().map(|o| back.node(o).name.clone()),
            graph.output().map(|o| graph.node(o).name.clone())
        );
    }
}

#[test]
fn fused_graphs_and_bad_names_are_refused_with_the_layer() {
    let mut g = Graph::new("fused");
    let x = g
        .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
        .unwrap();
    let mut conv = Conv2d::new(4, 3);
    conv.activation = Activation::Relu;
    let c = g.add(Op::Conv2d(conv), "conv1", &[x], None).unwrap();
    g.set_output(c);
    let e = write_flat(&g, &SpecHeader::default()).unwrap_err();
    assert_eq!(e.layer, "conv1");
    assert!(e.to_string().contains("fused epilogue"), "{e}");

    let mut g = Graph::new("named");
    let x = g
        .add(Op::Input(Shape::chw(3, 8, 8)), "input", &[], None)
        .unwrap();
    let r = g.add(Op::Relu, "stage2.relu", &[x], None).unwrap();
    g.set_output(r);
    let e = write_flat(&g, &SpecHeader::default()).unwrap_err();
    assert_eq!(e.layer, "stage2.relu");
    assert!(e.to_string().contains("layer name"), "{e}");
}
