//! What a candidate costs and what it may cost: the counted operations
//! (convention and scope), the constraints, and peak activation memory.

use serde::{Deserialize, Serialize};
pub use shufflekit_ir::cost::Convention;
use shufflekit_ir::cost::{Cost, LayerKind};
use shufflekit_ir::Graph;
use shufflekit_passes::PassError;

/// Which layers the budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountScope {
    /// Every layer the convention counts (conv + linear, or more for
    /// `macs-all`).
    #[default]
    All,
    /// Convolutions only: the figures ShuffleNet's Table 1 rounds.
    Conv,
}

impl CountScope {
    /// Parses `all` or `conv`.
    pub fn from_name(name: &str) -> Option<CountScope> {
        match name {
            "all" => Some(CountScope::All),
            "conv" => Some(CountScope::Conv),
            _ => None,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CountScope::All => "all",
            CountScope::Conv => "conv",
        }
    }
}

/// How a candidate's cost is counted for budgets, plots and the Pareto front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counting {
    /// The FLOP convention.
    #[serde(with = "convention_serde")]
    pub convention: Convention,
    /// Which layers count.
    pub scope: CountScope,
}

mod convention_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use shufflekit_ir::cost::Convention;

    pub fn serialize<S: Serializer>(c: &Convention, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Convention, D::Error> {
        let name = String::deserialize(d)?;
        Convention::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown convention `{name}`")))
    }
}

impl Counting {
    /// The counted operations of a cost.
    pub fn count(&self, cost: &Cost) -> u64 {
        match self.scope {
            CountScope::All => cost.ops,
            CountScope::Conv => cost
                .layers
                .iter()
                .filter(|l| {
                    matches!(
                        l.kind,
                        LayerKind::Conv | LayerKind::Pointwise | LayerKind::Depthwise
                    )
                })
                .map(|l| l.ops)
                .sum(),
        }
    }

    /// The unit label, e.g. `MMACs (conv only)`.
    pub fn unit(&self) -> String {
        let base = match self.convention {
            Convention::Macs => "MMACs",
            Convention::Flops => "MFLOPs",
            Convention::MacsAll => "M ops (MACs + elementwise)",
        };
        match self.scope {
            CountScope::All => base.to_string(),
            CountScope::Conv => format!("{base}, conv layers only"),
        }
    }

    /// A sentence for reports.
    pub fn describe(&self) -> String {
        let scope = match self.scope {
            CountScope::All => "all counted layers",
            CountScope::Conv => {
                "convolution layers only (the figures Table 1 of the ShuffleNet paper rounds)"
            }
        };
        format!(
            "convention `{}`: {}; counting {}",
            self.convention.name(),
            self.convention.describe(),
            scope
        )
    }
}

/// Limits a candidate must respect to be feasible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    /// Budget in millions of counted operations ([`Counting`]).
    pub budget_m: Option<f64>,
    /// Maximum trainable parameters.
    pub max_params: Option<u64>,
    /// Maximum peak activation memory in bytes.
    pub max_memory_bytes: Option<u64>,
    /// Maximum measured median latency in milliseconds.
    pub max_latency_ms: Option<f64>,
}

impl Constraints {
    /// The budget in counted operations, if there is one.
    pub fn budget_ops(&self) -> Option<u64> {
        self.budget_m.map(|m| (m * 1e6).floor() as u64)
    }

    /// The violated static limits (budget, parameters, memory).
    pub fn check_static(&self, counted: u64, params: u64, memory: u64) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(b) = self.budget_ops() {
            if counted > b {
                v.push(format!(
                    "cost {:.3} M > budget {} M",
                    counted as f64 / 1e6,
                    self.budget_m.unwrap_or_default()
                ));
            }
        }
        if let Some(p) = self.max_params {
            if params > p {
                v.push(format!("params {params} > max {p}"));
            }
        }
        if let Some(m) = self.max_memory_bytes {
            if memory > m {
                v.push(format!("peak memory {memory} B > max {m} B"));
            }
        }
        v
    }

    /// The violated latency limit.
    pub fn check_latency(&self, latency_ms: Option<f64>) -> Vec<String> {
        match (self.max_latency_ms, latency_ms) {
            (Some(max), Some(l)) if l > max => vec![format!("latency {l:.3} ms > max {max} ms")],
            _ => Vec::new(),
        }
    }
}

/// How peak memory is obtained (recorded in the flops evaluator's description).
pub const MEMORY_METHOD: &str = "the arena of shufflekit_passes::memory::plan after the default pass pipeline (f32, one image; in-place, view and zero-copy concat sharing), as `shufflekit flops` reports it; if a pass fails on a valid graph, the same planner on the unoptimised graph (recorded per candidate in `memory_method`)";

/// Peak activation memory: the arena size of one image, as planned by
/// `shufflekit_passes::memory` after the default optimisation pipeline,
/// the plan's lower bound, and how it was obtained. If a pass fails on a
/// valid graph, the unoptimised graph is planned instead: that is the
/// graph the latency evaluator then runs. An invalid graph has no plan
/// and is an error.
pub fn peak_activation_bytes(graph: &Graph) -> Result<(u64, u64, &'static str), PassError> {
    let mut module = shufflekit_passes::Module::graph_only(graph.clone());
    let (planned, method) = match shufflekit_passes::optimize(&mut module) {
        Ok(_) => (&module.graph, "passes::memory"),
        Err(e @ PassError::InvalidInput { .. }) => return Err(e),
        Err(_) => (
            graph,
            "passes::memory on the unoptimised graph (a pass failed on it)",
        ),
    };
    let plan = shufflekit_passes::memory::plan(planned);
    Ok((
        plan.arena_bytes as u64,
        plan.lower_bound_bytes as u64,
        method,
    ))
}

/// The layer groups of the per-kind cost plot.
pub const KIND_GROUPS: [(&str, &str); 5] = [
    ("stem", "stem / spatial conv"),
    ("pointwise", "pointwise (group) conv"),
    ("depthwise", "depthwise conv"),
    ("classifier", "classifier (linear)"),
    ("other", "other"),
];

/// Counted operations per layer group ([`KIND_GROUPS`] keys).
pub fn ops_by_kind(cost: &Cost) -> Vec<(&'static str, u64)> {
    let mut totals = [0u64; 5];
    for l in &cost.layers {
        let k = match l.kind {
            LayerKind::Conv => 0,
            LayerKind::Pointwise => 1,
            LayerKind::Depthwise => 2,
            LayerKind::Linear => 3,
            LayerKind::Other => 4,
        };
        totals[k] += l.ops;
    }
    KIND_GROUPS
        .iter()
        .zip(totals)
        .map(|((k, _), t)| (*k, t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_is_the_arena_the_passes_plan_after_the_pipeline() {
        let src = "name: t\ninput: [4, 8, 8]\nlayers:\n  - conv: {out: 8, kernel: 1}\n  - batch_norm\n  - relu\n  - conv: {out: 4, kernel: 1}\n";
        let graph = shufflekit_spec::load_str(src, "t.yaml", &[]).expect("spec");
        let mut module = shufflekit_passes::Module::graph_only(graph.clone());
        shufflekit_passes::optimize(&mut module).expect("pipeline");
        let plan = shufflekit_passes::memory::plan(&module.graph);
        let (arena, lower_bound, method) = peak_activation_bytes(&graph).expect("planned");
        assert_eq!(arena, plan.arena_bytes as u64);
        assert_eq!(lower_bound, plan.lower_bound_bytes as u64);
        assert_eq!(method, "passes::memory");
    }

    #[test]
    fn an_invalid_graph_has_no_peak_memory() {
        let mut graph = Graph::new("bad");
        let x = graph
            .add(
                shufflekit_ir::Op::Input(shufflekit_ir::Shape::chw(2, 4, 4)),
                "x",
                &[],
                None,
            )
            .expect("input");
        let r = graph
            .add(shufflekit_ir::Op::Relu, "r", &[x], None)
            .expect("relu");
        graph.set_output(r);
        graph.node_mut(r).shape = shufflekit_ir::Shape::chw(3, 4, 4);
        let e = peak_activation_bytes(&graph).expect_err("the verifier refuses it");
        assert!(matches!(e, PassError::InvalidInput { .. }), "{e}");
    }
}
