//! Where the tests that need a peer program find it: moto (MOTO_ENDPOINT) and the GitOps
//! health tool (HEALTH_TOOL). `scripts/test` and `scripts/with-cluster` start or build them
//! and set the variables; a plain `cargo test` has none, and those tests then skip with a
//! printed reason. Under CI (`CI` set) a missing peer is an error, so they can never be
//! skipped there unseen.

use std::io::Write;

/// The value of `var` for `test`, or `None` (after printing why) when `test` should skip.
pub fn test_peer(var: &str, test: &str) -> Option<String> {
    if let Ok(value) = std::env::var(var) {
        return Some(value);
    }
    let why = format!("{var} is not set: run the tests with scripts/test, which sets it");
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
    // Straight to stderr: the test harness captures eprintln!, and this must be seen.
    let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
    None
}

/// moto's address (started by `scripts/test` through tests/moto/launcher.py), or `None`.
pub fn moto_endpoint(test: &str) -> Option<String> {
    test_peer("MOTO_ENDPOINT", test)
}
