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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{batch, register_and_serve};
use crate::ConnCtx;
use crate::state::ServiceRuntime;

/// A connection handed to a thread; `done` is dropped when it is served.
struct Job {
    client: std::net::TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
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

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("peer", &self.peer).finish()
    }
}

impl H1Threads {
    pub(crate) fn start(threads: usize) -> io::Result<H1Threads> {
        let mut inboxes = Vec::new();
        let mut rings = 0;
        for i in 0..threads.max(1) {
            let (inbox_tx, inbox) = mpsc::unbounded_channel::<Job>();
            let (ready_tx, ready) = std::sync::mpsc::sync_channel::<io::Result<bool>>(1);
            std::thread::Builder::new()
                .name(format!("tandem-http-{i}"))
                .spawn(move || run_thread(inbox, ready_tx))?;
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

    pub(crate) fn serve(
        &self,
        client: std::net::TcpStream,
        peer: SocketAddr,
        vip_port: u16,
        svc: Arc<ServiceRuntime>,
        ctx: ConnCtx,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (done, finished) = oneshot::channel();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        let job = Job {
            client,
            peer,
            vip_port,
            svc,
            ctx,
            done,
        };
        let handed = self.inboxes[i].send(job).map_err(|refused| {
            let error = format!("HTTP thread {i} has ended");
            (refused.0.svc, error)
        });
        if let Err((svc, error)) = &handed {
            tracing::error!(service = %svc.cfg.label, client = %peer, %error, "cannot hand the connection to an HTTP thread; closed");
        }
        Box::pin(async move {
            if handed.is_ok() {
                // An error only means the thread dropped the connection (it is stopping).
                let _ = finished.await;
            }
        })
    }
}

fn run_thread(
    mut inbox: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::SyncSender<io::Result<bool>>,
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
        let has_ring = match batch::install() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; HTTP mode writes with plain system calls");
                false
            }
        };
        let _ = ready.send(Ok(has_ring));
        while let Some(job) = inbox.recv().await {
            tokio::spawn(async move {
                let Job {
                    client,
                    peer,
                    vip_port,
                    svc,
                    ctx,
                    done,
                } = job;
                register_and_serve(client, peer, vip_port, svc, ctx).await;
                drop(done);
            });
        }
        batch::uninstall();
    });
}
