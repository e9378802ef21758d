//! What the benchmarks and load tests measure with.

pub mod baseline;
pub mod cpu;
pub mod rss;
pub mod stats;
