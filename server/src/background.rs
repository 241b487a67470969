//! Work that must yield to the member's requests: copying the whole store
//! (backups, and images sent to a follower that needs a Raft snapshot).
//!
//! Such work runs on a thread of its own at a lower priority, so that it
//! takes the CPU the requests leave.
//!
//! Owns: the priority of those threads.
//!
//! May not: decide what is copied or when.

use std::io;

/// Nice value of the threads that copy the store, so that a copy takes
/// the CPU the member's requests leave: at the default priority, a
/// backup of a 1 GiB store on 2 cores took put p99 from 1.7 to 5.2 ms
/// (`cairn-bench snapshot-save`).
const NICE: i32 = 10;

/// Runs `f` on a new thread of lower priority (`NICE`; Linux keeps a
/// nice value per thread, threads it starts inherit it, and the thread
/// ends with `f`, so no pooled thread is left slowed).
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
                tracing::debug!(error = %e, "lowering a background thread's priority");
            }
            f()
        })
}

/// Runs `f` (blocking) on a thread of its own at the lower priority, and
/// waits for it.
pub async fn run<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(name, move || {
        let _ = tx.send(f());
    })?;
    rx.await
        .map_err(|_| io::Error::other("a background thread ended without an answer"))?
}
