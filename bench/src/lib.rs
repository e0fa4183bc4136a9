//! Signing benchmarks. `benches/micro.rs` measures per-operation costs with criterion; see
//! `bench/RESULTS.md` for figures and the commands that produced them.
