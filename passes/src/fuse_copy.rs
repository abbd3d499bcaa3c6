//! Fuses a `relu` or `relu6` into the concatenation that feeds it: the
//! concat applies the activation to each value as it copies it (its
//! `activation`), and the activation node goes. The reference evaluator and
//! the JIT's copy loop compute the fused op.
//!
//! It does not fuse when the concat has other users or is the graph output
//! (they need the value before the activation), when the concat already has
//! an activation, and it fuses nothing into shuffles, slices (views of
//! their input, which an activation would overwrite) or flattens.

use shufflekit_ir::Op;

use crate::util::fuse_activations;
use crate::{Module, Pass, PassError, PassLog};

/// The pass.
pub struct FuseCopyActivation;

impl Pass for FuseCopyActivation {
    fn name(&self) -> &'static str {
        "fuse-copy-activation"
    }

    fn run(&self, module: &mut Module, log: &mut PassLog) -> Result<(), PassError> {
        fuse_activations(&mut module.graph, log, |op| match op {
            Op::Concat(c) => Some(&mut c.activation),
            _ => None,
        });
        Ok(())
    }
}
