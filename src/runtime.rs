//! What the calling task runs on.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Whether the caller runs on a single-threaded runtime (a connection thread): its tasks stay on this thread, so
/// what a thread-local keeps for them is theirs, and waking them from here costs no cross-thread wake-up.
pub fn on_single_threaded_runtime() -> bool {
    Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::CurrentThread)
}
