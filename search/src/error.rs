//! The errors of the search driver.

use std::path::PathBuf;

use shufflekit_spec::SpecError;
use shufflekit_train::DataError;

/// Why a search could not be set up, run or its results read.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A `--sweep` (or space file) entry is malformed: no `=`, an empty
    /// value, a range with a bad step.
    #[error("bad sweep `{text}`: {message}")]
    BadSweep {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        message: String,
    },
    /// A sweep, `--set` or `--match-budget` names a parameter the spec does
    /// not declare.
    #[error("unknown parameter `{name}` for spec `{spec}`; its parameters are: {known}")]
    UnknownParam {
        /// The name given.
        name: String,
        /// The spec's name.
        spec: String,
        /// The declared parameters, comma-separated.
        known: String,
    },
    /// The configuration is inconsistent (a parameter swept twice, a
    /// constraint without the evaluator it needs, a shard out of range...).
    #[error("{0}")]
    Config(String),
    /// The space has more candidates than the driver accepts.
    #[error("the search space has {count} candidates; at most {max} are allowed")]
    SpaceTooLarge {
        /// The number of candidates (saturated at `u64::MAX`).
        count: u64,
        /// The limit.
        max: u64,
    },
    /// The `train` evaluator's dataset could not be loaded.
    #[error("train: {0}")]
    TrainData(#[source] DataError),
    /// The `train` evaluator's settings are out of range.
    #[error("train: {0}")]
    TrainSettings(#[source] shufflekit_train::TrainError),
    /// The spec could not be read or expanded with the base overrides.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A search space file could not be read, or a value in it is
    /// malformed; the source names the file, line and column.
    #[error("search space file {source}")]
    SpaceFile {
        /// The located error.
        #[source]
        source: SpecError,
    },
    /// A results file or the output directory could not be read or written.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a results file is not a valid record.
    #[error("{}:{line}: {message}", path.display())]
    CorruptResults {
        /// The results file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// `--resume` was asked for but the results file was written by a
    /// search with a different configuration.
    #[error("`{}` was written by a different search ({difference}); use another --out directory or --force to start over", path.display())]
    ResumeMismatch {
        /// The results file.
        path: PathBuf,
        /// The first setting that differs.
        difference: String,
    },
    /// The results file exists and neither resuming nor overwriting was asked.
    #[error("`{}` already exists: pass --resume to continue that search or --force to start over", path.display())]
    ResultsExist {
        /// The results file.
        path: PathBuf,
    },
    /// Another search holds the lock of the output directory.
    #[error("`{}` is locked by {owner}: two searches must not write one results file; {hint}", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, in words (`pid 12 on host node3`).
        owner: String,
        /// What to do about it.
        hint: String,
    },
    /// A worker thread pool could not be created.
    #[error("cannot start worker threads: {0}")]
    Threads(#[source] rayon::ThreadPoolBuildError),
}

/// Why one evaluator failed on one candidate. Recorded in the results (as
/// its text); the search goes on with the next candidate.
#[derive(Debug, thiserror::Error)]
#[error("{evaluator}: {message}")]
pub struct EvaluatorError {
    /// The evaluator's name.
    pub evaluator: String,
    /// What went wrong (including the source's text, when there is one).
    pub message: String,
    /// The typed error behind the message (a `JitError`, `TrainError`,
    /// `EvalError`, `SpecError`...), when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl EvaluatorError {
    /// An error of the named evaluator with no typed cause.
    pub fn new(evaluator: &str, message: impl Into<String>) -> Self {
        EvaluatorError {
            evaluator: evaluator.to_string(),
            message: message.into(),
            source: None,
        }
    }

    /// An error of the named evaluator caused by `source`; the message is
    /// the source's text.
    pub fn from_source(
        evaluator: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EvaluatorError::caused_by(evaluator, source.to_string(), source)
    }

    /// An error of the named evaluator caused by `source`, with a message
    /// that says the source in its own words.
    pub fn caused_by(
        evaluator: &str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EvaluatorError {
            evaluator: evaluator.to_string(),
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
