//! The h1 engine's own threads: each runs a current-thread tokio runtime whose small writes are batched through
//! an io_uring ring ([`super::batch`]).
//!
//! Why threads of its own: the ring is per thread, and a batch is issued by a flusher task that must run after the
//! writers of the batch, on their thread. A current-thread runtime keeps every task on its thread and runs them
//! first in, first out; the multi-thread runtime moves tasks between workers. The accepting task hands each
//! HTTP connection over (round robin) and waits for it to end, so connection limits and counters stay where they
//! were.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::batch;
use super::poll_budget::PollBudget;
use super::write_mode::WriteBatching;

/// What the accepting task hands to a thread: makes the connection's future there (so the connection is
/// registered with that thread's reactor, and its writes use that thread's ring).
pub(crate) type Work = crate::http::ConnectionJob;

/// A connection handed to a thread; `done` is dropped when it is served.
struct Job {
    work: Work,
    done: oneshot::Sender<()>,
}

/// The threads of one engine. Dropping it ends them: connections still open on them are closed (the daemon keeps its
/// engine for its whole life, across reloads).
#[derive(Debug)]
pub(crate) struct H1Threads {
    inboxes: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
    /// How many threads have an io_uring ring (the others write with plain system calls).
    pub(crate) rings: usize,
}

impl H1Threads {
    pub(crate) fn start(
        threads: usize,
        batching: WriteBatching,
        poll_limit: Duration,
    ) -> io::Result<H1Threads> {
        let mut inboxes = Vec::new();
        let mut rings = 0;
        for i in 0..threads.max(1) {
            let (inbox_tx, inbox) = mpsc::unbounded_channel::<Job>();
            let (ready_tx, ready) = std::sync::mpsc::sync_channel::<io::Result<bool>>(1);
            std::thread::Builder::new()
                .name(format!("tandem-http-{i}"))
                .spawn(move || run_thread(inbox, ready_tx, batching, poll_limit))?;
            let has_ring = ready
                .recv()
                .map_err(|_| io::Error::other("HTTP thread ended while starting"))??;
            rings += usize::from(has_ring);
            inboxes.push(inbox_tx);
        }
        Ok(H1Threads {
            inboxes,
            next: AtomicUsize::new(0),
            rings,
        })
    }

    /// Runs `work` on the next thread (round robin); the returned future ends when the connection does. A thread
    /// that has ended (the engine is stopping) drops the connection, logged as coming from `peer`.
    pub(crate) fn serve(
        &self,
        peer: SocketAddr,
        work: Work,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (done, finished) = oneshot::channel();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        let handed = self.inboxes[i].send(Job { work, done }).is_ok();
        if !handed {
            tracing::error!(client = %peer, "cannot hand the connection to HTTP thread {i}, which has ended; closed");
        }
        Box::pin(async move {
            if handed {
                // An error only means the thread dropped the connection (it is stopping).
                let _ = finished.await;
            }
        })
    }
}

fn run_thread(
    mut inbox: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::SyncSender<io::Result<bool>>,
    batching: WriteBatching,
    poll_limit: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let has_ring = match batch::install(batching) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; HTTP mode writes with plain system calls");
                false
            }
        };
        let _ = ready.send(Ok(has_ring));
        // The rounds that tell the poller of work are counted by the ring's flusher.
        if has_ring && !poll_limit.is_zero() {
            tokio::spawn(poll_before_sleeping(poll_limit));
        }
        while let Some(Job { work, done }) = inbox.recv().await {
            tokio::spawn(async move {
                work().await;
                drop(done);
            });
        }
        batch::uninstall();
    });
}

/// Keeps this thread polling for work for a while after each round of writes, as [`PollBudget`] says, instead of
/// sleeping in `epoll_wait` at once. Each turn lets the runtime poll its reactor without waiting (a yielded task
/// makes it do so) and gives the core to any other runnable thread (`sched_yield`: a backend sharing the core is not
/// kept waiting by our polling).
async fn poll_before_sleeping(limit: Duration) {
    let mut budget = PollBudget::new(limit);
    loop {
        let seen = batch::rounds();
        let since = Instant::now();
        let polling = budget.budget();
        let mut caught = false;
        while !polling.is_zero() && since.elapsed() < polling {
            // SAFETY: sched_yield takes no argument and only reschedules the calling thread.
            unsafe { libc::sched_yield() };
            tokio::task::yield_now().await;
            if batch::rounds() != seen {
                caught = true;
                break;
            }
        }
        if !caught {
            batch::next_round(seen).await;
        }
        budget.waited(since.elapsed());
    }
}
