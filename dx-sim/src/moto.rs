//! Where the tests that compare with moto find it. `scripts/test` starts moto (through
//! tests/moto/launcher.py) and sets MOTO_ENDPOINT; a plain `cargo test` has no moto, and
//! those tests then skip with a printed reason. Under CI (`CI` set) a missing moto is an
//! error, so they can never be skipped there unseen.

use std::io::Write;

/// moto's address, or `None` (after printing why) when `test` should skip.
pub fn moto_endpoint(test: &str) -> Option<String> {
    if let Ok(endpoint) = std::env::var("MOTO_ENDPOINT") {
        return Some(endpoint);
    }
    let why = "MOTO_ENDPOINT is not set: run the tests with scripts/test, which starts moto through tests/moto/launcher.py";
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
    // Straight to stderr: the test harness captures eprintln!, and this must be seen.
    let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
    None
}
