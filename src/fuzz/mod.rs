//! Fuzz targets for what a config file or a request can reach, run as property tests: the stable
//! toolchain has no libFuzzer, and proptest shrinks a failure to a small input we can read.
//!
//! `cargo test fuzz` runs every `fuzz_*` test (these and the ones beside the code they cover)
//! with a few hundred cases each; a long run takes any number:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --lib fuzz
//! ```

mod config;
mod routes;

/// `cases`, unless `PROPTEST_CASES` asks for more or fewer: `ProptestConfig::with_cases` would
/// ignore the variable, and `default()` alone would run 256 cases of every target.
pub fn config(cases: u32) -> proptest::test_runner::Config {
    let default = proptest::test_runner::Config::default();
    let cases = match std::env::var("PROPTEST_CASES") {
        Ok(_) => default.cases,
        Err(_) => cases,
    };
    proptest::test_runner::Config { cases, ..default }
}
