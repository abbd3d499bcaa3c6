//! Reports of shufflekit: plotters charts and Markdown/HTML/JSON renderings
//! of search results.
//!
//! This crate is a placeholder in the workspace layout: reports are the
//! subject of the "Search driver and reports" issue and are not written yet.
//! It exports nothing.
#![deny(missing_docs)]
