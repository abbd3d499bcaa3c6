//! The search driver of shufflekit: sweeps of a spec's parameters under a
//! compute budget, with pluggable evaluators, resumable JSONL results,
//! shards and Pareto fronts.
//!
//! A [`Search`] enumerates a [`Space`] (the Cartesian product of
//! [`Sweep`]s), or, with [`Search::with_match_budget`], fits one parameter
//! to the budget for every combination of the others ([`matching`]). Each
//! candidate is built from the spec, costed, checked against the
//! [`Constraints`] and measured by the [`Evaluator`]s; its [`Record`] is
//! appended to the results file as soon as it is done. [`Search::run`]
//! returns a [`SearchReport`] that says why it stopped ([`StopReason`]).
//!
//! ```
//! use shufflekit_search::{Space, Sweep};
//! let space = Space {
//!     sweeps: vec![
//!         Sweep::parse("groups=1,2,3,4,8").unwrap(),
//!         Sweep::parse("width=0.25:2.0:0.05").unwrap(),
//!     ],
//! };
//! assert_eq!(space.len().unwrap(), 5 * 36);
//! assert_eq!(space.candidate(1).id(), "groups=1,width=0.3");
//! ```
#![deny(missing_docs)]

pub mod budget;
pub mod driver;
pub mod error;
pub mod evaluator;
pub mod lock;
pub mod machine;
pub mod matching;
pub mod paper;
pub mod pareto;
pub mod results;
pub mod space;
pub mod stats;
pub mod train;

pub use budget::{Constraints, CountScope, Counting};
pub use driver::{ExistingResults, Search, SearchReport};
pub use error::{EvaluatorError, SearchError};
pub use evaluator::{
    EvalContext, Evaluator, FlopsEvaluator, LatencyEvaluator, LatencyOptions, Metrics,
    PaperEvaluator, ProxyEvaluator, ProxyOptions,
};
pub use lock::ResultsLock;
pub use machine::MachineInfo;
pub use matching::{Lattice, MatchOutcome};
pub use pareto::{Direction, Objective};
pub use results::{Line, Record, Results, RunInfo, Status, StopInfo, StopReason};
pub use space::{Candidate, ParamValue, Shard, Space, Sweep};
