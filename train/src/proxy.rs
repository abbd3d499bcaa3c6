//! The proxy task: a spec adapted to a dataset so that a candidate can be
//! trained briefly on it, while its cost is still counted at the spec's
//! deployment resolution.
//!
//! The dataset's image shape and class count are set through the spec's
//! `resolution`, `channels` and `classes` parameters, and a spec that
//! declares `small_input` gets `small_input=true` (a stem for small
//! images) unless the user set it. Parameters the user set with `--set`
//! keep their values except these, which the dataset decides.

use shufflekit_ir::cost::{self, Convention, Cost};
use shufflekit_ir::Graph;
use shufflekit_spec::Spec;

use crate::data::Split;
use crate::{GraphProblem, TrainError};

/// The spec parameters the proxy task sets.
pub const RESOLUTION: &str = "resolution";
/// Input channels parameter.
pub const CHANNELS: &str = "channels";
/// Class count parameter.
pub const CLASSES: &str = "classes";
/// The small-image stem switch.
pub const SMALL_INPUT: &str = "small_input";

/// A spec built twice: at the deployment settings and for the dataset.
#[derive(Debug, Clone)]
pub struct ProxyTask {
    /// The network the budget and MFLOPs are reported for (the spec with
    /// the user's overrides only).
    pub deployment: Graph,
    /// Its cost.
    pub deployment_cost: Cost,
    /// The network that is trained.
    pub trained: Graph,
    /// Its cost.
    pub trained_cost: Cost,
    /// The overrides that built `trained`.
    pub overrides: Vec<(String, String)>,
    /// One line saying what was changed for the dataset.
    pub description: String,
}

/// The overrides that adapt `base` to the dataset: see the module doc.
pub fn proxy_overrides(
    spec: &Spec,
    base: &[(String, String)],
    split: &Split,
) -> Result<Vec<(String, String)>, TrainError> {
    let names = spec.param_names();
    let [c, h, w] = split.shape();
    let mut out: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| ![RESOLUTION, CHANNELS, CLASSES].contains(&k.as_str()))
        .cloned()
        .collect();
    let mut set = |name: &str, value: String, needed: bool| -> Result<(), TrainError> {
        if names.contains(&name) {
            out.push((name.to_string(), value));
            Ok(())
        } else if needed {
            Err(GraphProblem::MissingParam {
                spec: spec.name.clone(),
                param: name.to_string(),
                data: split.name.clone(),
                images: [c, h, w],
                classes: split.classes(),
            }
            .into())
        } else {
            Ok(())
        }
    };
    if h != w {
        return Err(GraphProblem::NotSquare {
            data: split.name.clone(),
            height: h,
            width: w,
        }
        .into());
    }
    set(RESOLUTION, h.to_string(), true)?;
    set(CHANNELS, c.to_string(), true)?;
    set(CLASSES, split.classes().to_string(), true)?;
    if !base.iter().any(|(k, _)| k == SMALL_INPUT) {
        set(SMALL_INPUT, "true".into(), false)?;
    }
    Ok(out)
}

/// Builds the deployment and the trained networks.
pub fn proxy_task(
    spec: &Spec,
    base: &[(String, String)],
    split: &Split,
    convention: Convention,
) -> Result<ProxyTask, TrainError> {
    let deployment = spec.build(base).map_err(GraphProblem::Spec)?;
    let overrides = proxy_overrides(spec, base, split)?;
    let trained = spec
        .build(&overrides)
        .map_err(|source| GraphProblem::Adapt {
            data: split.name.clone(),
            source,
        })?;
    let deployment_cost = cost::count(&deployment, convention);
    let trained_cost = cost::count(&trained, convention);
    let changed: Vec<String> = overrides
        .iter()
        .filter(|o| !base.contains(o))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let description = format!(
        "trained on `{}` with {} ({:.2} MFLOPs at {:?}); budget and MFLOPs reported at the deployment input {:?} ({:.2} MFLOPs)",
        split.name,
        changed.join(", "),
        trained_cost.macs as f64 / 1e6,
        trained_cost.input_shape,
        deployment_cost.input_shape,
        deployment_cost.macs as f64 / 1e6
    );
    Ok(ProxyTask {
        deployment,
        deployment_cost,
        trained,
        trained_cost,
        overrides,
        description,
    })
}
