//! The Python, Node and Prometheus tools some tests run, which `.ci/run` installs. Where
//! `WAGATE_REQUIRE_TEST_TOOLS` is set (`.ci/run` sets it), a missing tool fails its test; elsewhere
//! the test is skipped and says how to install what it lacks.

/// The variable that makes every tool required.
const REQUIRED: &str = "WAGATE_REQUIRE_TEST_TOOLS";

/// True when the test must be skipped because of `missing` (install hints, empty when nothing
/// is missing); panics instead where the tools are required.
pub fn skip_for(missing: &[&str], purpose: &str) -> bool {
    if missing.is_empty() {
        return false;
    }
    let how = missing.join("; ");
    assert!(
        std::env::var_os(REQUIRED).is_none(),
        "{purpose} needs tools that are missing: {how}"
    );
    eprintln!("skipped: {how} to {purpose}");
    true
}
