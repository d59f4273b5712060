//! Benchmarks live in `benches/` (criterion) and `compare.sh`.
