//! When a long-lived connection's first keepalive falls due (an event stream's heartbeat, a WebSocket's ping).
//! Connections opened together, such as subscribers reconnecting after a restart, would otherwise send theirs in
//! step for as long as they stay: at 10,000 subscribers a burst of writes that delays the event it meets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long after its start a new connection's first keepalive is due: between half the period and the period, the
/// connections' phases spread evenly by the golden ratio's sequence (each new one falls in the widest gap left).
pub fn first_due(every: Duration) -> Duration {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    every.mul_f64(0.5 + phase(CONNECTIONS.fetch_add(1, Ordering::Relaxed)) / 2.0)
}

/// The `n`th connection's phase, in [0, 1).
fn phase(n: u64) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    (n as f64 * GOLDEN).fract()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_together_have_their_first_keepalives_spread_over_half_a_period() {
        for connections in [2, 10, 1000] {
            let mut phases: Vec<f64> = (0..connections).map(phase).collect();
            assert!(phases.iter().all(|p| (0.0..1.0).contains(p)));
            phases.sort_by(f64::total_cmp);
            phases.push(1.0 + phases[0]);
            let widest = phases.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            // The golden ratio's sequence leaves no gap wider than about 2.6 / n.
            assert!(
                widest <= 3.0 / connections as f64,
                "{connections} connections: a gap of {widest}"
            );
        }
        let every = Duration::from_secs(30);
        let due = first_due(every);
        assert!(due >= every / 2 && due < every, "{due:?}");
    }
}
