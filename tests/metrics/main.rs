//! The Prometheus metrics, in a process of their own and one test at a time: the recorder is
//! process-global, so any other test's traffic would move the counters these tests assert
//! on, and they could no longer fail.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

#[path = "../it/helpers.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod helpers;
mod metrics;
