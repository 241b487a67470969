//! The revoker thread (`cairn-kv-revoker`): brings the key index up to
//! date with pending revokes ([`crate::revoke`]) in bounded steps.

use std::sync::Arc;

use crate::backend::Backend;
use crate::state::Inner;

/// Wakes the revoker thread.
pub(crate) fn kick<B>(inner: &Inner<B>) {
    if let Ok(mut s) = inner.revoker.lock() {
        s.work = true;
        inner.revoker_cv.notify_all();
    }
}

/// Stops the revoker thread.
pub(crate) fn stop<B>(inner: &Inner<B>) {
    if let Ok(mut s) = inner.revoker.lock() {
        s.stop = true;
        inner.revoker_cv.notify_all();
    }
}

/// The revoker thread's loop: on each kick, settles pending revokes in
/// steps until none is left.
pub(crate) fn run<B: Backend>(inner: Arc<Inner<B>>) {
    let step = inner.options.revoke_step;
    loop {
        {
            let Ok(mut s) = inner.revoker.lock() else {
                return;
            };
            loop {
                if s.stop {
                    return;
                }
                if s.work {
                    s.work = false;
                    break;
                }
                s = match inner.revoker_cv.wait(s) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        }
        if step == 0 {
            continue;
        }
        loop {
            let more = match inner.write_state() {
                Ok(mut st) => st.settle(step),
                Err(_) => return,
            };
            if !more {
                break;
            }
            let Ok(s) = inner.revoker.lock() else {
                return;
            };
            if s.stop {
                return;
            }
            // Sleep between steps, waking early only to stop.
            let _ = inner
                .revoker_cv
                .wait_timeout_while(s, inner.options.revoke_pause, |s| !s.stop);
        }
    }
}
