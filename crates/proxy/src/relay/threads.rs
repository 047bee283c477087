//! The relay threads of one proxy ([`RelayLoops`]): started as poll loops or io_uring rings, handed pairs round
//! robin, told to close a pair, and ended when the last handle goes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use mio::{Poll, Waker};

use super::poll::{RelayLoop, WAKER};
use super::uring::{EventFd, UringLoop};
use super::{Command, Job};

struct LoopHandle {
    commands: mpsc::Sender<Command>,
    waker: LoopWaker,
}

/// How a loop is woken for a command: its poll's waker, or its ring's eventfd.
enum LoopWaker {
    Poll(Arc<Waker>),
    Uring(Arc<EventFd>),
}

impl LoopWaker {
    fn wake(&self) {
        match self {
            LoopWaker::Poll(waker) => {
                let _ = waker.wake();
            }
            LoopWaker::Uring(eventfd) => eventfd.wake(),
        }
    }
}

/// The relay threads of one proxy. Dropping the last handle ends them (their pairs are closed).
pub(crate) struct RelayLoops {
    loops: Vec<LoopHandle>,
    /// Pair ids, given in turn; pair `id` goes to loop `id % loops.len()` (round robin).
    next_id: AtomicU64,
    /// The threads run io_uring rings, not poll loops.
    pub(crate) uring: bool,
}

impl RelayLoops {
    pub(crate) fn start(threads: usize) -> io::Result<RelayLoops> {
        let mut loops = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (commands, inbox) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("tandem-relay-{i}"))
                .spawn(move || RelayLoop::new(poll, inbox).run())?;
            loops.push(LoopHandle {
                commands,
                waker: LoopWaker::Poll(waker),
            });
        }
        Ok(RelayLoops {
            loops,
            next_id: AtomicU64::new(0),
            uring: false,
        })
    }

    /// As [`Self::start`], each thread running an io_uring ring ([`super::uring`]) instead of a poll loop.
    /// Fails where io_uring cannot be set up; the threads started so far then end. `yields`: whether the rings
    /// may yield the CPU to a local process before they sleep (see `local_yield.rs`).
    pub(crate) fn start_uring(threads: usize, yields: bool) -> io::Result<RelayLoops> {
        let mut relay = RelayLoops {
            loops: Vec::new(),
            next_id: AtomicU64::new(0),
            uring: true,
        };
        for i in 0..threads.max(1) {
            let (commands, inbox) = mpsc::channel();
            let (ready, set_up) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name(format!("tandem-ring-{i}"))
                .spawn(move || match UringLoop::new(inbox, yields) {
                    Ok(ring) => {
                        let _ = ready.send(Ok(ring.waker()));
                        ring.run();
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })?;
            let eventfd = set_up
                .recv()
                .map_err(|_| io::Error::other("relay ring thread ended while setting up"))??;
            relay.loops.push(LoopHandle {
                commands,
                waker: LoopWaker::Uring(eventfd),
            });
        }
        Ok(relay)
    }

    pub(crate) fn len(&self) -> usize {
        self.loops.len()
    }

    /// Hands a pair to one of the loops (round robin). The returned id is for [`Self::close`].
    pub(crate) fn hand_over(&self, job: Job) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A loop that is gone drops the job, and with it `done`: the waiting task sees the pair end.
        self.send(id, Command::Add(id, job));
        id
    }

    /// Closes pair `id` now (halt with close, shutdown, its VIP released); `reset`: its client gets a RST
    /// (SO_LINGER 0). Nothing happens if it has ended already.
    pub(crate) fn close(&self, id: u64, reset: bool) {
        self.send(id, Command::Close { id, reset });
    }

    /// Sends a command to the loop of pair `id`.
    fn send(&self, id: u64, command: Command) {
        let target = &self.loops[(id % self.loops.len() as u64) as usize];
        if target.commands.send(command).is_ok() {
            target.waker.wake();
        }
    }
}

impl Drop for RelayLoops {
    fn drop(&mut self) {
        // Each loop ends when it finds its command channel closed; wake it to look (an idle loop waits without a
        // timeout).
        for LoopHandle { commands, waker } in self.loops.drain(..) {
            drop(commands);
            waker.wake();
        }
    }
}
