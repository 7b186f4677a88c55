//! The suites live in `tests/*.rs`; the rig they use is `meshward_harness::envoy`.
