//! The percentile the benchmarks print.

/// The value at `fraction` of `sorted` (0.5 for the median, 0.99 for p99), by nearest rank; `None` when empty.
pub fn percentile<T: Copy>(sorted: &[T], fraction: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (fraction * last as f64).round() as usize;
    Some(sorted[rank.min(last)])
}

/// Milliseconds of the value at `fraction` of `sorted`; 0 when empty.
pub fn ms_at(sorted: &[std::time::Duration], fraction: f64) -> f64 {
    percentile(sorted, fraction).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
