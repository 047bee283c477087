//! Small helpers every layer of the proxy uses; imports nothing of the crate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the data half-updated in a harmful way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A number naming the current thread (cheaper than `std::thread::current().id()`): where a pooled upstream
/// connection is at home, and which thread a batched send belongs to.
pub(crate) fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TAG: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TAG.with(|t| *t)
}
