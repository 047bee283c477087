//! TCP-mode relay on dedicated threads, each running one edge-triggered poll loop (mio) over the connection pairs
//! handed to it.
//!
//! Why: with a tokio task per connection every message costs a reactor wake-up, a task schedule and a poll of both
//! directions; in TCP mode on loopback user space was ~10% of the proxy's CPU per request, ~6% with these loops and
//! ~2.5% in a bare epoll relay (netns-tests/bench/tcp-floor). The tokio task that accepted the client and connected the server stays parked
//! on a oneshot: it keeps the connection's counters and its halt/shutdown watch, and asks the loop to close the pair
//! when a halt with close or a shutdown fires. The loop owns both sockets until the pair ends.
//!
//! Semantics are those of [`super::tasks::relay`]: full duplex, a FIN passed on once everything before it was
//! written, the pair closed when both directions are done, idle timeouts (`client_idle` while both directions are
//! open, `server_idle` once the client has finished sending, `client_idle` once the server has), and backpressure:
//! a direction whose bytes the other side does not take is not read further (at most one read buffer held).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tokio::sync::oneshot;

use super::{CLIENT, Command, Job, RelayEnd, SERVER, TICK, Traffic};
use crate::vip_conns::reset_on_close;

pub(super) const WAKER: Token = Token(usize::MAX);
const READ_SIZE: usize = 32 * 1024;
/// Reads of one side per turn (512 KiB): a bulk transfer then lets the loop's other pairs have their turn.
const READS_PER_TURN: usize = 16;

struct Pair {
    /// `CLIENT`, `SERVER`.
    streams: [TcpStream; 2],
    /// Bytes read from side i and not yet taken by the other side.
    pending: [Vec<u8>; 2],
    /// Side i has sent its FIN.
    eof: [bool; 2],
    /// The FIN was passed on to side i (its write side is shut down).
    shut: [bool; 2],
    traffic: Traffic,
    done: oneshot::Sender<RelayEnd>,
}

impl Pair {
    fn finished(&self) -> bool {
        self.eof[CLIENT]
            && self.eof[SERVER]
            && self.pending[CLIENT].is_empty()
            && self.pending[SERVER].is_empty()
    }

    /// Moves bytes from side `from` to the other side: first what is pending, then what can be read now.
    /// `fin_seen`: the poll reported the peer's FIN, so reading goes on to the end of stream even after a short read.
    /// `now`: when the poll returned (one clock read per wake-up, not per message; idle limits are coarser).
    /// `Ok(true)`: stopped after [`READS_PER_TURN`] reads with more perhaps waiting; the loop comes back to it (no
    /// new edge will say so).
    fn pump(
        &mut self,
        from: usize,
        buf: &mut [u8],
        fin_seen: bool,
        now: Instant,
    ) -> io::Result<bool> {
        let to = 1 - from;
        if !self.pending[from].is_empty() {
            let written = write_now(&self.streams[to], &self.pending[from])?;
            if written > 0 {
                self.pending[from].drain(..written);
                // Waiting for the peer to take bytes counts as activity: bytes are still moving.
                self.traffic.last_activity = now;
            }
            if !self.pending[from].is_empty() {
                return Ok(false);
            }
            // Drained: give the buffer back, so pairs that were once slow do not each keep one.
            self.pending[from] = Vec::new();
        }
        if self.eof[from] {
            self.pass_fin(to);
            return Ok(false);
        }
        for _ in 0..READS_PER_TURN {
            let n = match (&self.streams[from]).read(buf) {
                Ok(0) => {
                    self.eof[from] = true;
                    self.pass_fin(to);
                    return Ok(false);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.traffic.read(from, n, now);
            let written = write_now(&self.streams[to], &buf[..n])?;
            if written < n {
                // The other side is full: keep the rest and stop reading this side until it drains.
                self.pending[from].extend_from_slice(&buf[written..n]);
                return Ok(false);
            }
            if n < buf.len() && !fin_seen {
                // A short read emptied the socket; the next byte (or the FIN) raises a new edge.
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn pass_fin(&mut self, to: usize) {
        if !self.shut[to] {
            self.shut[to] = true;
            let _ = self.streams[to].shutdown(Shutdown::Write);
        }
    }
}

/// Writes what the socket takes now.
fn write_now(mut to: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match to.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

pub(super) struct RelayLoop {
    poll: Poll,
    inbox: mpsc::Receiver<Command>,
    pairs: HashMap<u64, Pair>,
    buf: Box<[u8]>,
    /// Sides that stopped at [`READS_PER_TURN`] with data perhaps left: read again next turn.
    again: Vec<(u64, usize)>,
}

impl RelayLoop {
    pub(super) fn new(poll: Poll, inbox: mpsc::Receiver<Command>) -> Self {
        RelayLoop {
            poll,
            inbox,
            pairs: HashMap::new(),
            buf: vec![0u8; READ_SIZE].into_boxed_slice(),
            again: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_scan = Instant::now();
        loop {
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else {
                (!self.pairs.is_empty()).then_some(TICK)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "relay loop cannot poll; closing its connections");
                self.close_all();
                return;
            }
            let now = Instant::now();
            for (id, side) in std::mem::take(&mut self.again) {
                self.on_ready(id, side, true, true, now);
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let id = (event.token().0 / 2) as u64;
                let side = event.token().0 % 2;
                let fin_seen = event.is_read_closed() || event.is_error();
                let incoming = event.is_readable() || fin_seen;
                self.on_ready(id, side, incoming, fin_seen, now);
            }
            if !self.take_commands() {
                self.close_all();
                return;
            }
            if now.duration_since(last_scan) >= TICK {
                last_scan = now;
                self.close_idle(now);
            }
        }
    }

    /// Applies queued commands. `false` once every handle is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Add(id, job)) => self.add(id, job),
                Ok(Command::Close { id, reset }) => {
                    if reset && let Some(pair) = self.pairs.get(&id) {
                        reset_on_close(&pair.streams[CLIENT]);
                    }
                    self.finish(id, RelayEnd::Closed)
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn add(&mut self, id: u64, job: Job) {
        let mut streams = [
            TcpStream::from_std(job.client),
            TcpStream::from_std(job.server),
        ];
        for (side, stream) in streams.iter_mut().enumerate() {
            let token = Token(id as usize * 2 + side);
            if let Err(e) = self.poll.registry().register(
                stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                let _ = job.done.send(RelayEnd::Error(e));
                return;
            }
        }
        self.pairs.insert(
            id,
            Pair {
                streams,
                pending: [Vec::new(), Vec::new()],
                eof: [false; 2],
                shut: [false; 2],
                traffic: job.traffic,
                done: job.done,
            },
        );
        // Registration reports what is already readable; nothing to read by hand.
    }

    fn on_ready(&mut self, id: u64, side: usize, incoming: bool, fin_seen: bool, now: Instant) {
        let Some(pair) = self.pairs.get_mut(&id) else {
            return;
        };
        let mut result = Ok(());
        // Bytes held for this side (it was full) go first; then the other direction continues reading, as its
        // edge was spent while it waited.
        if !pair.pending[1 - side].is_empty() {
            // It stopped reading before running dry, and that edge is spent: read on until it does.
            result = pair
                .pump(1 - side, &mut self.buf, true, now)
                .map(|more| self.again.extend(more.then_some((id, 1 - side))));
        }
        if result.is_ok() && incoming {
            result = pair
                .pump(side, &mut self.buf, fin_seen, now)
                .map(|more| self.again.extend(more.then_some((id, side))));
        }
        let finished = result.is_ok() && pair.finished();
        match result {
            Err(e) => self.finish(id, RelayEnd::Error(e)),
            Ok(()) if finished => self.finish(id, RelayEnd::Closed),
            Ok(()) => {}
        }
    }

    fn close_idle(&mut self, now: Instant) {
        let idle: Vec<u64> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.traffic.idle(p.eof, now))
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.finish(id, RelayEnd::Idle);
        }
    }

    fn finish(&mut self, id: u64, end: RelayEnd) {
        let Some(Pair {
            mut streams, done, ..
        }) = self.pairs.remove(&id)
        else {
            return;
        };
        for stream in &mut streams {
            let _ = self.poll.registry().deregister(stream);
        }
        drop(streams);
        let _ = done.send(end);
    }

    fn close_all(&mut self) {
        let ids: Vec<u64> = self.pairs.keys().copied().collect();
        for id in ids {
            self.finish(id, RelayEnd::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::test_support::{loopback_pair, test_traffic};
    use std::net::TcpStream as StdStream;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// [`loopback_pair`] with the relay's end ready for the poll loop.
    fn connected() -> (TcpStream, StdStream) {
        let (near, far) = loopback_pair();
        near.set_nonblocking(true).unwrap();
        (TcpStream::from_std(near), far)
    }

    #[test]
    fn a_long_read_stops_after_its_turn_and_resumes() {
        let (src, mut client) = connected();
        let (dst, mut server) = connected();
        let (done, _ended) = oneshot::channel();
        let mut pair = Pair {
            streams: [src, dst],
            pending: [Vec::new(), Vec::new()],
            eof: [false; 2],
            shut: [false; 2],
            traffic: test_traffic(),
            done,
        };
        const SENT: usize = 64 * 1024;
        client.write_all(&[7u8; SENT]).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; SENT];
            server.read_exact(&mut got).unwrap();
            got
        });
        std::thread::sleep(Duration::from_millis(200)); // all of it in the relay's receive queue
        // With 1 KiB reads a turn moves 16 KiB and says there is more.
        let mut buf = [0u8; 1024];
        assert!(pair.pump(CLIENT, &mut buf, true, Instant::now()).unwrap());
        assert_eq!(
            pair.traffic.service.bytes_in.load(Ordering::Relaxed),
            16 * 1024
        );
        let mut turns = 1;
        while pair.pump(CLIENT, &mut buf, true, Instant::now()).unwrap() {
            turns += 1;
            assert!(turns < 100, "never ran dry");
        }
        assert_eq!(turns, 4);
        assert_eq!(
            pair.traffic.service.bytes_in.load(Ordering::Relaxed),
            SENT as u64
        );
        assert_eq!(
            pair.traffic.real.counters.bytes_in.load(Ordering::Relaxed),
            SENT as u64
        );
        assert_eq!(reader.join().unwrap(), vec![7u8; SENT]);
    }
}
