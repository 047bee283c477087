//! Batched small writes for the h1 engine's threads ([`super::threads`]): one `io_uring_enter` per batch.
//!
//! Why: in HTTP mode nearly every write is a small head (a request to the server, a response to the client), and
//! each `send` to a process on this host wakes it. With one system call per write, the woken process (the real
//! server, say) often preempts the proxy on the way back from that call, with one request to handle; then the
//! proxy runs again for one more request, and so on. Queuing the writes of a batch and issuing them together in
//! one `io_uring_enter` lets the proxy finish its batch and the peer take many requests per wake-up (benchmarked in
//! `docs/benchmarks.md`).
//!
//! How: a writer copies its bytes into a buffer owned here and waits. The first write of a batch wakes this
//! thread's flusher task, which the current-thread runtime runs after the tasks already runnable (its queue is
//! first in, first out): it issues every queued send in one call and takes the completions (a send with room in the
//! socket completes within that call), which wake the writers. A send that has to wait for room completes later:
//! the flusher also waits on the ring's descriptor (registered with the reactor, readable when a completion is
//! ready). The runtime's park hooks would not do: they never run while a task keeps the thread busy (the runtime
//! then only polls the reactor between tasks). Sends use `MSG_WAITALL`, so the kernel sends all of it or fails.
//!
//! Whether a thread batches at all is decided per round ([`super::write_mode`]): while its rounds of writes are
//! small, [`send`] answers `None` and the writer sends directly; the flusher is still woken once per round, to count
//! the round's writes, so that the thread sees its rounds grow and starts batching again. Every few hundred writes
//! it also reads the thread's involuntary context switches (`getrusage`), so that a thread preempted by each write's
//! answer (a backend on its core) batches even while its rounds are small.
//!
//! A write given up before it was issued (its task was cancelled) is removed from the queue, so nothing is ever
//! issued on a descriptor that may have been closed and reused since; one given up after it was issued is cancelled
//! and its buffer kept until the kernel has finished with it. Threads without a ring (io_uring unavailable, or any
//! thread other than the engine's own) write with plain system calls: [`send`] returns `None` there. A ring the
//! kernel stops taking work from is dropped (its waiting writers fail) and the thread goes on with plain calls.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use tokio::io::unix::AsyncFd;

use super::write_mode::{ModeGovernor, WriteBatching, WriteMode};

/// Writes up to this size go through the ring; larger ones (bulk bodies) are written directly, without a copy.
pub(crate) const MAX_BATCHED: usize = 4096;
/// Submission queue size: a flush issues more in several calls.
const ENTRIES: u32 = 256;
/// Completion queue size, so that completions of many connections' sends seldom overflow it (the kernel keeps
/// overflowed ones, handed over on the next `io_uring_enter`: see `take_completions`).
const CQ_ENTRIES: u32 = 4096;
/// Buffers kept for reuse per thread.
const SPARE_MAX: usize = 256;
/// `user_data` of cancellation requests (their completions carry nothing we need).
const CANCEL: u64 = u64::MAX;
/// Refusals (`EAGAIN`, `ENOMEM`, `EBUSY`) retried at once, then with a 1 ms pause, before the ring is given up.
const QUICK_RETRIES: u32 = 64;
const SLOW_RETRIES: u32 = 1000;
/// A thread's round sizes and modes go to a debug line at most this often (checked every [`STATS_CHECK`] rounds).
const STATS_EVERY: Duration = Duration::from_secs(5);
const STATS_CHECK: u64 = 1024;

thread_local! {
    static RING: RefCell<Option<SendRing>> = const { RefCell::new(None) };
    /// Rounds with writes this thread has ended, and the task waiting for the next one (the poller of
    /// `threads.rs`): a round with writes is the thread's sign of work.
    static ROUNDS: Cell<u64> = const { Cell::new(0) };
    static ROUND_WAITER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// The descriptor of a ring, registered with the reactor so that a completion wakes the thread and the flusher.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

enum Slot {
    Free,
    /// Queued (not yet issued) or issued; `waker` is the writer's.
    Waiting {
        buf: Vec<u8>,
        issued: bool,
        waker: Option<Waker>,
    },
    /// The kernel's result (bytes sent, or `-errno`), not yet taken by the writer.
    Done {
        res: i32,
        buf: Vec<u8>,
    },
    /// The writer gave up after the send was issued: the buffer stays until the kernel is done with it.
    Abandoned {
        buf: Vec<u8>,
    },
}

struct SendRing {
    /// Dropped before `ring` (field order), so the descriptor leaves the reactor before it closes.
    registration: AsyncFd<RingFd>,
    ring: IoUring,
    /// Sends (with their slot) and cancellations (`None`) waiting for the next flush, in order. They enter the
    /// submission queue only then, so that a cancelled writer's entry can still be taken back.
    queued: Vec<(Option<u32>, squeue::Entry)>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    spare: Vec<Vec<u8>>,
    /// Completions being handled (kept for its allocation).
    done: Vec<(u64, i32)>,
    /// The flusher task, and whether it has been woken for the current batch.
    flusher: Option<Waker>,
    flush_wanted: bool,
    /// Small writes of the current round (queued or written directly), and the mode they take.
    round_writes: u32,
    governor: ModeGovernor,
    stats_since: std::time::Instant,
    /// Set when the kernel stopped taking work: the ring is then dropped by whoever holds it next.
    broken: Option<io::Error>,
}

impl Drop for SendRing {
    /// Buffers of sends the kernel may still read are leaked on purpose: closing the ring cancels those sends, but
    /// asynchronously. This happens only when a thread ends or its ring breaks.
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            match slot {
                Slot::Waiting {
                    buf, issued: true, ..
                }
                | Slot::Abandoned { buf } => std::mem::forget(buf),
                _ => {}
            }
        }
    }
}

/// Involuntary context switches of the calling thread so far (the kernel's count), `None` if it cannot tell.
fn involuntary_switches() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD asks about the calling thread only.
    let result = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: filled by the successful call above.
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_nivcsw).ok()
}

/// Sets up this thread's ring and spawns its flusher task; call within the thread's current-thread runtime. After
/// this, [`send`] on this thread queues sends whenever `batching` says so.
pub(crate) fn install(batching: WriteBatching) -> io::Result<()> {
    let ring = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_clamp()
        .build(ENTRIES)?;
    // SAFETY: the ring's descriptor stays open while the registration lives: `SendRing` drops its registration
    // before its ring.
    let registration = unsafe {
        AsyncFd::register_with_interest(RingFd(ring.as_raw_fd()), tokio::io::Interest::READABLE)
    }?;
    RING.with(|cell| {
        *cell.borrow_mut() = Some(SendRing {
            registration,
            ring,
            queued: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            spare: Vec::new(),
            done: Vec::new(),
            flusher: None,
            flush_wanted: false,
            round_writes: 0,
            governor: ModeGovernor::new(batching),
            stats_since: std::time::Instant::now(),
            broken: None,
        });
    });
    tokio::spawn(flusher());
    Ok(())
}

/// Removes this thread's ring (see `Drop for SendRing`); its writers then fail with `ECANCELED`.
pub(crate) fn uninstall() {
    let ring = RING.with(|cell| cell.borrow_mut().take());
    drop(ring);
}

/// Queues `a` then `b` (together at most [`MAX_BATCHED`] bytes) for one send on `fd`; `None` where this thread has
/// no ring or writes directly for now (the caller then sends them itself). The returned future gives the kernel's result: bytes sent (all of them unless an error cut the send
/// short) or `-errno`. `fd` must stay open while the future lives (it borrows nothing, so the caller makes sure).
pub(crate) fn send(fd: RawFd, a: &[u8], b: &[u8]) -> Option<Send> {
    let len = a.len() + b.len();
    debug_assert!(len <= MAX_BATCHED);
    let len32 = u32::try_from(len).ok()?;
    let (send, flusher) = RING.with(|cell| {
        let mut cell = cell.borrow_mut();
        let ring = cell.as_mut()?;
        if ring.governor.mode() == WriteMode::Direct {
            return Some((None, ring.note_write()));
        }
        let mut buf = ring.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(len);
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        let slot = match ring.free_slots.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(ring.slots.len()).ok()?;
                ring.slots.push(Slot::Free);
                s
            }
        };
        // The buffer's heap allocation does not move when the Vec moves into the slot.
        let entry = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len32)
            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
            .build()
            .user_data(u64::from(slot));
        ring.slots[slot as usize] = Slot::Waiting {
            buf,
            issued: false,
            waker: None,
        };
        let flusher = ring.enqueue(Some(slot), entry);
        let send = Send {
            slot,
            #[cfg(debug_assertions)]
            home: crate::shared::thread_tag(),
            finished: false,
        };
        Some((Some(send), flusher))
    })?;
    if let Some(flusher) = flusher {
        flusher.wake();
    }
    send
}

/// One queued send; resolves to the kernel's result.
pub(crate) struct Send {
    slot: u32,
    /// The thread whose ring has the slot (the engine's tasks never move between threads): checked in tests.
    #[cfg(debug_assertions)]
    home: u64,
    finished: bool,
}

impl Send {
    fn debug_assert_home(&self) {
        #[cfg(debug_assertions)]
        assert_eq!(
            self.home,
            crate::shared::thread_tag(),
            "a send used off its ring's thread"
        );
    }
}

impl Future for Send {
    type Output = i32;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        self.debug_assert_home();
        let slot = self.slot as usize;
        let result = RING.with(|cell| {
            let mut cell = cell.borrow_mut();
            let Some(ring) = cell.as_mut() else {
                // The ring is gone (the engine is stopping, or the ring broke): report the send as failed.
                return Poll::Ready(-libc::ECANCELED);
            };
            match ring.slots.get_mut(slot) {
                Some(Slot::Done { .. }) => {
                    let Slot::Done { res, buf } =
                        std::mem::replace(&mut ring.slots[slot], Slot::Free)
                    else {
                        unreachable!("matched above")
                    };
                    ring.release(slot, buf);
                    Poll::Ready(res)
                }
                Some(Slot::Waiting { waker, .. }) => {
                    keep_waker(waker, cx);
                    Poll::Pending
                }
                _ => Poll::Ready(-libc::ECANCELED),
            }
        });
        if result.is_ready() {
            self.finished = true;
        }
        result
    }
}

impl Drop for Send {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.debug_assert_home();
        let slot = self.slot as usize;
        // `try_with`: the thread may be ending, its ring already gone.
        let flusher = RING.try_with(|cell| {
            let Ok(mut cell) = cell.try_borrow_mut() else {
                // Never dropped while this module holds the ring (wakers are called after it lets go).
                debug_assert!(false, "a send dropped while its ring is in use");
                return None;
            };
            let ring = cell.as_mut()?;
            let state = ring.slots.get_mut(slot)?;
            match std::mem::replace(state, Slot::Free) {
                Slot::Waiting {
                    buf, issued: false, ..
                } => {
                    ring.queued.retain(|(s, _)| *s != Some(slot as u32));
                    ring.release(slot, buf);
                    None
                }
                Slot::Waiting {
                    buf, issued: true, ..
                } => {
                    ring.slots[slot] = Slot::Abandoned { buf };
                    let cancel = opcode::AsyncCancel::new(slot as u64)
                        .build()
                        .user_data(CANCEL);
                    ring.enqueue(None, cancel)
                }
                Slot::Done { buf, .. } => {
                    ring.release(slot, buf);
                    None
                }
                other => {
                    ring.slots[slot] = other;
                    None
                }
            }
        });
        if let Ok(Some(flusher)) = flusher {
            flusher.wake();
        }
    }
}

impl SendRing {
    /// Queues an entry; the first of a batch returns the flusher to wake (after letting go of the ring), which the
    /// runtime then runs behind the tasks already runnable.
    #[must_use]
    fn enqueue(&mut self, slot: Option<u32>, entry: squeue::Entry) -> Option<Waker> {
        let is_write = slot.is_some();
        self.queued.push((slot, entry));
        if is_write {
            self.note_write()
        } else {
            self.want_flush()
        }
    }

    /// Counts a small write of this round; as [`Self::enqueue`], the first of a round returns the flusher to wake
    /// (which then counts the round, whichever mode its writes took).
    #[must_use]
    fn note_write(&mut self) -> Option<Waker> {
        self.round_writes = self.round_writes.saturating_add(1);
        self.want_flush()
    }

    #[must_use]
    fn want_flush(&mut self) -> Option<Waker> {
        if self.flush_wanted {
            return None;
        }
        self.flush_wanted = true;
        self.flusher.take()
    }

    /// Ends the current round: its writes decide the mode of the next ones.
    fn end_round(&mut self) {
        let writes = std::mem::take(&mut self.round_writes);
        if writes == 0 {
            return;
        }
        ROUNDS.set(ROUNDS.get().wrapping_add(1));
        if let Some(waiter) = ROUND_WAITER.take() {
            waiter.wake();
        }
        let before = self.governor.mode();
        let mut after = self.governor.round(writes);
        if self.governor.wants_preemptions()
            && let Some(switches) = involuntary_switches()
        {
            after = self.governor.preemptions(switches);
        }
        if after != before {
            tracing::trace!(?after, writes, "HTTP thread's write mode");
        }
        if self.governor.rounds().is_multiple_of(STATS_CHECK)
            && self.stats_since.elapsed() >= STATS_EVERY
        {
            self.stats_since = std::time::Instant::now();
            let (stats, mean) = self.governor.take_stats();
            tracing::debug!(
                rounds = stats.rounds,
                writes_per_round = stats.writes as f64 / stats.rounds as f64,
                mean_now = mean,
                batched_pct = 100.0 * stats.batched_rounds as f64 / stats.rounds as f64,
                switches = stats.switches,
                preempted_windows = stats.preempted_windows,
                "HTTP thread's rounds of small writes"
            );
        }
    }

    fn release(&mut self, slot: usize, buf: Vec<u8>) {
        self.slots[slot] = Slot::Free;
        self.free_slots.push(slot as u32);
        if self.spare.len() < SPARE_MAX && buf.capacity() <= MAX_BATCHED {
            self.spare.push(buf);
        }
    }

    /// Issues everything queued, in as few calls as the submission queue allows.
    fn issue(&mut self, wakers: &mut Vec<Waker>) {
        let mut queued = std::mem::take(&mut self.queued);
        let mut entries = queued.iter().peekable();
        while entries.peek().is_some() && self.broken.is_none() {
            {
                let mut sq = self.ring.submission();
                while let Some((slot, entry)) = entries.peek() {
                    // SAFETY: a send's buffer lives in its slot until its completion is taken (an abandoned
                    // send's too, and a dropped ring leaks it), and `fd` is open: a writer's descriptor outlives
                    // its queued entry (dropping the writer takes the entry back), and an entry that entered the
                    // submission queue is either taken by the kernel now or never (the ring is dropped).
                    if unsafe { sq.push(entry) }.is_err() {
                        break;
                    }
                    if let Some(slot) = slot
                        && let Slot::Waiting { issued, .. } = &mut self.slots[*slot as usize]
                    {
                        *issued = true;
                    }
                    entries.next();
                }
            }
            self.submit_all(wakers);
        }
        // Keep the allocation for the next batch.
        queued.clear();
        self.queued = queued;
    }

    /// Has the kernel take every entry of the submission queue. Taking completions in between makes room when the
    /// completion queue is full; short refusals are retried. If the kernel keeps refusing, the ring is marked
    /// broken: entries left in its submission queue then never reach the kernel (the ring is dropped).
    fn submit_all(&mut self, wakers: &mut Vec<Waker>) {
        let mut refusals = 0;
        loop {
            match self.ring.submit() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ENOMEM)
                    ) =>
                {
                    refusals += 1;
                    if refusals > QUICK_RETRIES + SLOW_RETRIES {
                        self.broken = Some(e);
                        return;
                    }
                    if refusals > QUICK_RETRIES {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(e) => {
                    self.broken = Some(e);
                    return;
                }
            }
            self.take_completions(wakers);
            if self.ring.submission().is_empty() {
                return;
            }
        }
    }

    fn take_completions(&mut self, wakers: &mut Vec<Waker>) {
        let mut done = std::mem::take(&mut self.done);
        for _ in 0..16 {
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            // Completions that did not fit are kept by the kernel and handed over by the next `io_uring_enter`.
            if !self.ring.submission().cq_overflow() {
                break;
            }
            if let Err(e) = self.ring.submit() {
                tracing::debug!(error = %e, "io_uring: taking overflowed completions");
            }
        }
        for (user_data, res) in done.drain(..) {
            if user_data == CANCEL {
                continue;
            }
            let Some(slot) = usize::try_from(user_data)
                .ok()
                .filter(|s| *s < self.slots.len())
            else {
                continue;
            };
            match std::mem::replace(&mut self.slots[slot], Slot::Free) {
                Slot::Waiting { buf, waker, .. } => {
                    self.slots[slot] = Slot::Done { res, buf };
                    if let Some(w) = waker {
                        wakers.push(w);
                    }
                }
                Slot::Abandoned { buf } => self.release(slot, buf),
                other => self.slots[slot] = other,
            }
        }
        self.done = done;
    }

    /// The wakers of every writer still waiting (when the ring is given up).
    fn all_waiting(&mut self, wakers: &mut Vec<Waker>) {
        for slot in &mut self.slots {
            if let Slot::Waiting { waker, .. } = slot
                && let Some(w) = waker.take()
            {
                wakers.push(w);
            }
        }
    }
}

/// Remembers the waker of `cx` in `slot` (cloned only when it changed).
fn keep_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Runs `work` on this thread's ring, then drops the ring if it broke, then wakes the writers concerned (after
/// letting go of the ring, so that they may use it). `None` where the thread has no ring.
fn with_ring<T>(work: impl FnOnce(&mut SendRing, &mut Vec<Waker>) -> T) -> Option<T> {
    let mut wakers = Vec::new();
    let mut broken = None;
    let out = RING.with(|cell| {
        // The flusher never runs inside another use of the ring.
        let Ok(mut cell) = cell.try_borrow_mut() else {
            debug_assert!(false, "the ring is already in use");
            return None;
        };
        let ring = cell.as_mut()?;
        let out = work(ring, &mut wakers);
        if ring.broken.is_some() {
            ring.all_waiting(&mut wakers);
            broken = cell.take();
        }
        Some(out)
    });
    if let Some(mut ring) = broken {
        let error = ring.broken.take();
        tracing::error!(error = ?error, "io_uring refuses the HTTP thread's sends; it writes with plain system calls from now on");
        drop(ring);
    }
    wakers.into_iter().for_each(Waker::wake);
    out
}

/// Rounds with writes this thread has ended so far (see [`next_round`]).
pub(super) fn rounds() -> u64 {
    ROUNDS.get()
}

/// Ready once this thread has ended a round with writes after the `seen`-th.
pub(super) fn next_round(seen: u64) -> impl Future<Output = ()> {
    std::future::poll_fn(move |cx| {
        if ROUNDS.get() != seen {
            return Poll::Ready(());
        }
        ROUND_WAITER.set(Some(cx.waker().clone()));
        Poll::Pending
    })
}

/// The flusher task of a ring: issues the batch it was woken for, and takes completions whenever the ring's
/// descriptor reports some.
async fn flusher() {
    std::future::poll_fn(|cx| {
        let alive = with_ring(|ring, wakers| {
            ring.flush_wanted = false;
            ring.end_round();
            if !ring.queued.is_empty() {
                ring.issue(wakers);
            }
            // Clear the recorded readiness before taking completions: one arriving after the take then makes the
            // descriptor ready again, which wakes this task.
            while let Poll::Ready(Ok(mut ready)) = ring.registration.poll_read_ready(cx) {
                ready.clear_ready();
            }
            ring.take_completions(wakers);
            keep_waker(&mut ring.flusher, cx);
        });
        match alive {
            Some(()) => Poll::Pending,
            // The ring is gone (uninstalled, or broken).
            None => Poll::Ready(()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::FutureExt as _;

    use super::*;

    /// A current-thread runtime, as the engine's threads run; `None` where io_uring cannot
    /// be set up (then there is nothing to test here).
    fn on_ring_thread<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> bool {
        on_ring_thread_with(WriteBatching::Always, test)
    }

    /// As [`on_ring_thread`], the thread's writes batched as `batching` says.
    fn on_ring_thread_with<F: Future<Output = ()>>(
        batching: WriteBatching,
        test: impl FnOnce() -> F,
    ) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            if install(batching).is_err() {
                eprintln!("io_uring cannot be set up here; skipped");
                return false;
            }
            test().await;
            let free = RING.with(|c| {
                c.borrow()
                    .as_ref()
                    .map(|r| r.slots.iter().all(|s| matches!(s, Slot::Free)))
            });
            assert_eq!(free, Some(true), "every slot is given back");
            uninstall();
            true
        })
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        (client, server)
    }

    /// Fills `client`'s send buffer and the peer's receive buffer; returns how many bytes that took.
    fn fill(client: &TcpStream) -> usize {
        client.set_nonblocking(true).unwrap();
        let chunk = [7u8; 65536];
        let mut sent = 0;
        loop {
            match (&*client).write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn read_all(server: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match server.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return got;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn sends_of_a_batch_arrive_whole_and_in_order() {
        on_ring_thread(|| async {
            let (client, mut server) = pair();
            let fd = client.as_raw_fd();
            let first = send(fd, b"GET / HTTP/1.1\r\n", b"Host: a\r\n\r\n").unwrap();
            assert_eq!(first.await, 27);
            let second = send(fd, b"", b"second").unwrap();
            assert_eq!(second.await, 6);
            assert_eq!(
                read_all(&mut server),
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\nsecond"
            );
        });
    }

    /// A writer cancelled before its send was issued leaves nothing behind: its descriptor number, reused for
    /// another connection, must not get the stale bytes.
    #[test]
    fn a_send_given_up_before_the_flush_never_reaches_a_reused_descriptor() {
        on_ring_thread(|| async {
            let (old, _old_server) = pair();
            let (new, mut new_server) = pair();
            let fd = old.as_raw_fd();
            // Polled once (queued), then dropped, as when a select! picks another branch.
            assert!(send(fd, b"stale", b"").unwrap().now_or_never().is_none());
            // The number now names the new connection (dup2 replaces it atomically; no other test can take it).
            // SAFETY: both descriptors are open and owned by this test.
            assert_eq!(unsafe { libc::dup2(new.as_raw_fd(), fd) }, fd);
            let fresh = send(fd, b"fresh", b"").unwrap();
            assert_eq!(fresh.await, 5);
            drop(new);
            assert_eq!(read_all(&mut new_server), b"fresh");
            // `old` closes `fd`, now the duplicate of `new`.
            drop(old);
        });
    }

    /// A send that must wait for room completes later, while the thread sleeps: the ring's descriptor wakes it.
    #[test]
    fn a_send_waiting_for_room_completes_when_the_peer_reads() {
        on_ring_thread(|| async {
            let (client, mut server) = pair();
            let filled = fill(&client);
            let reader = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                let mut total = 0;
                let mut buf = [0u8; 65536];
                server
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                while total < filled + 100 {
                    match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            });
            let late = send(client.as_raw_fd(), &[1u8; 100], b"").unwrap();
            let started = std::time::Instant::now();
            let res = tokio::time::timeout(Duration::from_secs(5), late).await;
            assert_eq!(res, Ok(100), "the send completes once the peer reads");
            // The reader starts after 200 ms; the thread must wake for the completion, not for the timeout.
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "woken only after {:?}",
                started.elapsed()
            );
            assert_eq!(reader.join().unwrap(), filled + 100);
        });
    }

    /// A writer that gives up after its send was issued (a timeout) cancels it; the slot comes back once the
    /// kernel reports the cancellation, and nothing of it is sent afterwards.
    #[test]
    fn a_send_given_up_after_it_was_issued_is_cancelled() {
        on_ring_thread(|| async {
            let (client, mut server) = pair();
            let filled = fill(&client);
            let late = send(client.as_raw_fd(), &[1u8; 100], b"").unwrap();
            let res = tokio::time::timeout(Duration::from_millis(50), late).await;
            assert!(res.is_err(), "no room: the send cannot have completed");
            // The flusher issues the cancellation; its completion gives the slot back.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let free = RING.with(|c| {
                    c.borrow()
                        .as_ref()
                        .is_some_and(|r| r.slots.iter().all(|s| matches!(s, Slot::Free)))
                });
                if free {
                    break;
                }
            }
            server
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            assert_eq!(read_all(&mut server).len(), filled);
        });
    }

    /// A task that never lets its thread sleep (it keeps yielding): anything waiting for the thread to park would
    /// wait for ever.
    fn spinner() -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = stop.clone();
        let task = tokio::spawn(async move {
            let mut turns = 0;
            while !spinning.load(Ordering::Relaxed) {
                turns += 1;
                tokio::task::yield_now().await;
            }
            turns
        });
        (stop, task)
    }

    #[test]
    fn a_busy_thread_still_issues_its_batches() {
        on_ring_thread(|| async {
            // Let the flusher start and wait (as it does between batches).
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (stop, spinning) = spinner();
            let (client, mut server) = pair();
            let sent = send(client.as_raw_fd(), b"while busy", b"").unwrap();
            let res = tokio::time::timeout(Duration::from_secs(2), sent).await;
            stop.store(true, Ordering::Relaxed);
            assert!(spinning.await.unwrap() > 0);
            assert_eq!(res, Ok(10), "issued although the thread never parked");
            drop(client);
            assert_eq!(read_all(&mut server), b"while busy");
        });
    }

    /// Likewise, a send that waited for room is taken while the thread stays busy (the ring's descriptor wakes the
    /// flusher).
    #[test]
    fn a_busy_thread_takes_late_completions() {
        on_ring_thread(|| async {
            // Let the flusher start and wait (as it does between batches).
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (stop, spinning) = spinner();
            let (client, mut server) = pair();
            let filled = fill(&client);
            let late = send(client.as_raw_fd(), &[1u8; 100], b"").unwrap();
            let reader = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                server
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let mut total = 0;
                let mut buf = [0u8; 65536];
                while total < filled + 100 {
                    match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                total
            });
            let res = tokio::time::timeout(Duration::from_secs(2), late).await;
            stop.store(true, Ordering::Relaxed);
            assert!(spinning.await.unwrap() > 0);
            assert_eq!(res, Ok(100), "completed while the thread stayed busy");
            assert_eq!(reader.join().unwrap(), filled + 100);
        });
    }

    /// Makes one round of `writes` writes of `line` on `client` as the engine does (a send the thread does not queue
    /// is written directly by the writer), then lets the flusher end the round; how many were queued.
    async fn round(client: &TcpStream, writes: usize, line: &[u8], sent: &mut Vec<u8>) -> usize {
        let mut queued = Vec::new();
        for _ in 0..writes {
            match send(client.as_raw_fd(), line, b"") {
                Some(s) => queued.push(s),
                None => {
                    // Queued sends of this round go first: the engine's writers wait for theirs before writing again.
                    assert!(queued.is_empty(), "a direct write in a batched round");
                    (&*client).write_all(line).unwrap();
                }
            }
            sent.extend_from_slice(line);
        }
        let batched = queued.len();
        let results = futures::future::join_all(queued).await;
        assert!(results.iter().all(|r| *r == line.len() as i32));
        // The flusher was woken by the round's first write: it runs before this task again.
        tokio::task::yield_now().await;
        batched
    }

    #[test]
    fn a_thread_batches_while_its_rounds_are_large_and_writes_directly_when_they_are_small() {
        on_ring_thread_with(WriteBatching::Adaptive, || async {
            let (client, mut server) = pair();
            let mut sent = Vec::new();
            // Small rounds: every write direct.
            for _ in 0..50 {
                assert_eq!(round(&client, 2, b"small\n", &mut sent).await, 0);
            }
            // Large rounds: after a few, the whole round is queued.
            let mut rounds = 0;
            while round(&client, 30, b"large\n", &mut sent).await == 0 {
                rounds += 1;
                assert!(
                    rounds < 10,
                    "still direct after {rounds} rounds of 30 writes"
                );
            }
            assert_eq!(round(&client, 30, b"large\n", &mut sent).await, 30);
            // Small again: back to direct writes.
            let mut rounds = 0;
            while round(&client, 1, b"one\n", &mut sent).await == 1 {
                rounds += 1;
                assert!(
                    rounds < 80,
                    "still batched after {rounds} rounds of 1 write"
                );
            }
            drop(client);
            assert_eq!(read_all(&mut server), sent, "every write arrived, in order");
        });
    }

    #[test]
    fn a_thread_that_never_batches_queues_nothing() {
        on_ring_thread_with(WriteBatching::Never, || async {
            let (client, mut server) = pair();
            let mut sent = Vec::new();
            for _ in 0..20 {
                assert_eq!(round(&client, 40, b"direct\n", &mut sent).await, 0);
            }
            let rounds = RING.with(|c| c.borrow().as_ref().map(|r| r.governor.rounds()));
            assert_eq!(rounds, Some(20), "each round counted once");
            drop(client);
            assert_eq!(read_all(&mut server), sent);
        });
    }

    /// More sends than the submission queue holds, queued together: issued in several calls, in order.
    #[test]
    fn a_batch_larger_than_the_submission_queue_arrives_in_order() {
        on_ring_thread(|| async {
            let (client, mut server) = pair();
            let fd = client.as_raw_fd();
            let count = ENTRIES as usize * 2 + 17;
            let lines: Vec<String> = (0..count).map(|i| format!("{i:05}\n")).collect();
            let sends: Vec<Send> = lines
                .iter()
                .map(|l| send(fd, l.as_bytes(), b"").unwrap())
                .collect();
            let results = futures::future::join_all(sends).await;
            assert!(results.iter().all(|r| *r == 6));
            drop(client);
            assert_eq!(read_all(&mut server), lines.concat().into_bytes());
        });
    }
}
