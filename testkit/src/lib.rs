//! The one test kit of component-repository: what its tests (`tests/`), examples and benchmarks (`examples/`)
//! share, so none of them pulls another's files in by path. A workspace member, a dev-dependency of the root
//! package.
//!
//! - [`app`]: [`app::TestApp`], the real server on a random port in this process, with a client and typed
//!   helpers (create each kind, upload, download), started from a plain `Config`.
//! - [`process`]: the real binary, run as an operator would.
//! - [`chaos`]: a loopback TCP proxy a test can break.
//! - [`data`]: the one generator of test bytes, and the one hash helper.
//! - [`graphql`]: the GraphQL multipart request (uploads), built once.
//! - [`inference_server`]: the inference server's real configurations and component files, loaded into a server.
//! - [`signing`]: keys, a private CA, bundles and trust policies made with the real `model_signing` CLI.
//! - [`ws`]: the GraphQL-over-WebSocket client (both subprotocols).
//! - [`eventually`], [`wait_for`]: wait for a condition instead of sleeping.
//! - [`bench`]: what the benchmarks measure with (percentiles, RSS, CPU time, the raw disk baseline).

pub mod app;
pub mod bench;
pub mod chaos;
pub mod data;
pub mod graphql;
pub mod inference_server;
pub mod process;
pub mod signing;
pub mod ws;

pub use data::{bytes, sha256_hex};

use std::fmt::Display;

use std::time::Duration;

/// Waits until `condition` holds, checking every 50 ms, for at most `deadline`; says whether it did.
pub async fn eventually(deadline: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Polls `probe` every 50 ms until it answers `Ok`, for at most `within`, and returns that answer; otherwise fails
/// the test with the probe's last `Err` (what it saw instead).
pub async fn wait_for<T, E: Display>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(seen) if start.elapsed() >= within => {
                panic!("still not there after {within:?}: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
