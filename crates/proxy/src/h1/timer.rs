//! The native engine's deadlines: one [`Timer`] per connection holds the deadline of the current [`Phase`], and one
//! [`Watchdog`] future per connection fires when it passes (no timer armed per request or per read).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Waiting for (the rest of) a request head.
    Header = 0,
    /// Between requests.
    Idle = 1,
    /// Relaying the request body.
    RequestBody = 2,
    /// Request sent, no response head yet.
    WaitingResponse = 3,
    /// Relaying the response body.
    ResponseBody = 4,
    /// Upgraded: the tunnel has its own idle timeout.
    Tunnel = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Header,
            1 => Phase::Idle,
            2 => Phase::RequestBody,
            3 => Phase::WaitingResponse,
            4 => Phase::ResponseBody,
            _ => Phase::Tunnel,
        }
    }
}

/// The deadline of the connection's current phase, shared by the request loop (which moves it) and the watchdog.
pub(super) struct Timer {
    base: Instant,
    deadline_ms: AtomicU64,
    /// The deadline the watchdog's sleep is armed for.
    armed_ms: AtomicU64,
    phase: AtomicU8,
    watchdog: AtomicWaker,
}

impl Timer {
    pub(super) fn new() -> Self {
        Timer {
            base: Instant::now(),
            deadline_ms: AtomicU64::new(u64::MAX),
            armed_ms: AtomicU64::new(u64::MAX),
            phase: AtomicU8::new(Phase::Header as u8),
            watchdog: AtomicWaker::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Enters `phase`, which must end within `limit` from now. Returns now, as time since [`Timer::since`]'s
    /// origin (one clock read serves the deadline and the response-time histogram).
    pub(super) fn set(&self, phase: Phase, limit: Duration) -> Duration {
        let now = self.base.elapsed();
        let deadline = (now.as_millis() as u64).saturating_add(limit.as_millis() as u64);
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.deadline_ms.store(deadline, Ordering::Release);
        // A later deadline is noticed when the armed sleep fires; an earlier one needs the watchdog now.
        if deadline < self.armed_ms.load(Ordering::Acquire) {
            self.watchdog.wake();
        }
        now
    }

    /// Time since the origin of the values [`Timer::set`] returns.
    pub(super) fn since(&self) -> Duration {
        self.base.elapsed()
    }

    /// Enters `phase`, keeping the current deadline.
    pub(super) fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Enters a phase without a deadline of ours.
    pub(super) fn clear(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.deadline_ms.store(u64::MAX, Ordering::Release);
    }
}

/// Resolves with the phase whose deadline passed.
pub(super) struct Watchdog<'a> {
    timer: &'a Timer,
    sleep: Pin<Box<Sleep>>,
    armed: u64,
}

impl<'a> Watchdog<'a> {
    pub(super) fn new(timer: &'a Timer) -> Self {
        Watchdog {
            timer,
            sleep: Box::pin(tokio::time::sleep_until(
                timer.base + Duration::from_secs(86_400 * 365),
            )),
            armed: u64::MAX,
        }
    }
}

impl Future for Watchdog<'_> {
    type Output = Phase;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Phase> {
        let this = self.get_mut();
        this.timer.watchdog.register(cx.waker());
        loop {
            let deadline = this.timer.deadline_ms.load(Ordering::Acquire);
            if deadline != this.armed {
                this.armed = deadline;
                this.timer.armed_ms.store(deadline, Ordering::Release);
                let ms = deadline.min(86_400_000 * 365);
                this.sleep
                    .as_mut()
                    .reset(this.timer.base + Duration::from_millis(ms));
            }
            match this.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let deadline = this.timer.deadline_ms.load(Ordering::Acquire);
                    if deadline != u64::MAX && this.timer.now_ms() >= deadline {
                        return Poll::Ready(Phase::from_u8(
                            this.timer.phase.load(Ordering::Relaxed),
                        ));
                    }
                    // Moved later meanwhile: sleep again.
                    this.armed = 0;
                }
            }
        }
    }
}
