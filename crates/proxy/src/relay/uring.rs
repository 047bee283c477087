//! TCP-mode relay on io_uring: one ring per relay thread, the same pairs and semantics as [`super::poll`]
//! (full duplex, a FIN passed on after the last byte, idle timeouts, backpressure), with the system calls batched.
//!
//! Why: in TCP mode ~94% of the relay's CPU is the kernel's, and a poll loop pays a system call (entry, exit,
//! file lookup and reference counting) for every `recv` and `send` plus one `epoll_wait` per batch. Here every
//! `recv` and `send` is a queued entry: one `io_uring_enter` submits all the sends and receives that a batch of
//! completions produced and waits for the next batch.
//!
//! Each side starts with one multishot read: the kernel completes it once per arrival of bytes without it being
//! queued again, which suits request/response traffic. A direction whose peer does not keep up (a partial send, or
//! more than [`MAX_QUEUED`] chunks waiting) has that read cancelled and is from then on read one chunk at a time,
//! the next read only once the last chunk was sent, so TCP flow control holds the sender back, as in the poll loop.
//! (A multishot read cannot be held back so tightly: the kernel completes up to 32 reads in a row before a
//! cancellation is seen.) Reads land in a ring of provided buffers the kernel picks from only when bytes
//! arrive, so idle connections hold no buffer (10k idle pairs cost no memory beyond their sockets).
//!
//! The sockets stay owned by the pair (`std::net::TcpStream`) until every operation on them has completed; a
//! finished pair cancels what is in flight, waits for those completions, and only then closes its sockets and
//! reports how it ended.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

use super::local_yield::YieldGovernor;
use super::{CLIENT, Command, RelayEnd, SERVER, TICK, Traffic};
use crate::vip_conns::reset_on_close;

/// Submission queue size; completions are handled at most [`BATCH`] at a time so that what they queue always fits.
const ENTRIES: u32 = 4096;
const BATCH: usize = 1024;
/// Provided read buffers per ring (a power of two): 256 x 16 KiB = 4 MiB of address space, touched only as used.
/// A buffer is held only from a read until the send of its bytes, which is tried at once (see [`Held`]).
const BUFFERS: u16 = 256;
const BUF_SIZE: usize = 16 * 1024;
const BUF_GROUP: u16 = 0;
/// Chunks a direction may have queued behind the one being sent before its side stops being read.
const MAX_QUEUED: usize = 4;
/// `user_data` of the wake-up read and of cancellations; a pair's operations are `key << 2 | op`.
const WAKE: u64 = u64::MAX;
const CANCEL: u64 = u64::MAX - 1;
/// Ops: receive from side 0/1, send to side 0/1.
const RECV: u64 = 0;
const SEND: u64 = 2;

/// Wakes a ring's thread for new commands: an eventfd the ring always has a read pending on.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // Blocking on purpose: io_uring then waits for it by polling instead of failing the read with EAGAIN.
        // SAFETY: plain system call; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and belongs to no one else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. A failure (counter saturated) still leaves
        // the eventfd readable, which is all a wake-up needs.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The ring of provided buffers the kernel reads into (`IORING_REGISTER_PBUF_RING`).
///
/// Written by hand: the io-uring crate gives the entry type and the registration call but not the ring itself.
struct Buffers {
    entries: NonNull<types::BufRingEntry>,
    data: NonNull<u8>,
    /// Where `entries` and `data` live: anonymous mappings, so that buffers never used are never in memory.
    _maps: [memmap2::MmapMut; 2],
    /// Buffers in the ring (a power of two).
    count: u16,
    /// Buffers the kernel may pick now.
    free: usize,
    /// Our copy of the ring's tail; published to the kernel with [`Buffers::publish`].
    tail: u16,
}

impl Buffers {
    fn new(ring: &IoUring, count: u16) -> io::Result<Buffers> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two",
            ));
        }
        let entries_len = count as usize * std::mem::size_of::<types::BufRingEntry>();
        let mut entries_map = memmap2::MmapOptions::new().len(entries_len).map_anon()?;
        let mut data_map = memmap2::MmapOptions::new()
            .len(count as usize * BUF_SIZE)
            .map_anon()?;
        let entries = NonNull::new(entries_map.as_mut_ptr().cast::<types::BufRingEntry>())
            .ok_or_else(|| io::Error::other("empty mapping"))?;
        let data =
            NonNull::new(data_map.as_mut_ptr()).ok_or_else(|| io::Error::other("empty mapping"))?;
        let mut buffers = Buffers {
            entries,
            data,
            _maps: [entries_map, data_map],
            count,
            free: 0,
            tail: 0,
        };
        // SAFETY: the entries stay mapped (page-aligned, zeroed) until `buffers` is dropped, which `UringLoop`
        // does after the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                BUF_GROUP,
                0,
            )?;
        }
        for bid in 0..count {
            buffers.put(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    fn addr(&self, bid: u16, offset: u32) -> *const u8 {
        // SAFETY: `bid < count` and `offset <= BUF_SIZE`: inside the data allocation.
        unsafe {
            self.data
                .as_ptr()
                .add(bid as usize * BUF_SIZE + offset as usize)
        }
    }

    /// Queues buffer `bid` for the kernel again (seen once published).
    fn put(&mut self, bid: u16) {
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `slot < count`; the kernel reads only entries between its head and the published tail, and
        // this one is beyond the published tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(self.addr(bid, 0) as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
    }

    /// Bytes `start..end` of buffer `bid`.
    fn bytes(&self, bid: u16, start: u32, end: u32) -> &[u8] {
        // SAFETY: inside buffer `bid` (`end <= BUF_SIZE`), which the kernel filled and no longer writes to: it is
        // ours until given back.
        unsafe { std::slice::from_raw_parts(self.addr(bid, start), (end - start) as usize) }
    }

    fn publish(&self) {
        // SAFETY: the tail is a u16 in the first entry, which the kernel reads with acquire ordering.
        let tail =
            unsafe { &*types::BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

/// Bytes read from one side, being sent to the other: `start..end` of `bytes` still to send.
struct Chunk {
    bytes: Held,
    start: u32,
    end: u32,
}

/// Where a chunk's bytes are.
enum Held {
    /// In provided buffer `bid`, sent without waiting (`MSG_DONTWAIT`): the buffer is back in the ring as soon as
    /// that send completes.
    Ring(u16),
    /// Copied out of the ring because the peer did not take everything at once. A stalled direction thus keeps
    /// only its own copy, never one of the ring's shared buffers: peers that stop reading cannot use up the ring
    /// and stall every other pair of the thread.
    Owned(Box<[u8]>),
}

struct Pair {
    id: u64,
    /// `CLIENT`, `SERVER`.
    streams: [TcpStream; 2],
    /// What was read from side i and not yet all sent to the other side, oldest first. Only the first may be in a
    /// ring buffer (it is being sent); chunks queued behind it are copied out.
    queued: [VecDeque<Chunk>; 2],
    /// A read of side i is in flight (a multishot one until its last completion).
    reading: [bool; 2],
    /// Side i's peer fell behind once: its multishot read was cancelled, and it is read one chunk at a time.
    single: [bool; 2],
    /// Side i has sent its FIN.
    eof: [bool; 2],
    /// The FIN was passed on to side i.
    shut: [bool; 2],
    /// Side i's peer runs on this host (a backend on the same controller, a local client).
    local: [bool; 2],
    /// Operations submitted and not completed; the sockets are closed only at 0.
    inflight: u32,
    /// Set once the pair is finishing: why it ended.
    ending: Option<RelayEnd>,
    traffic: Traffic,
    done: tokio::sync::oneshot::Sender<RelayEnd>,
}

impl Pair {
    fn finished(&self) -> bool {
        self.eof[CLIENT] && self.eof[SERVER] && self.queued.iter().all(VecDeque::is_empty)
    }

    fn pass_fin(&mut self, to: usize) {
        // A side that sent its FIN too, with nothing of it left to deliver, gets ours from close(2) at once: the
        // pair finishes now (nothing is left unread on it, so the close sends a FIN, not a reset). One system call
        // less per connection. While its own bytes are still being delivered, it gets the FIN now, as before.
        let finishing = self.eof[to] && self.queued[to].is_empty();
        if !self.shut[to] && !finishing {
            self.shut[to] = true;
            let _ = self.streams[to].shutdown(Shutdown::Write);
        }
    }
}

/// The socket's peer is on this host: a loopback address or the socket's own local address.
fn on_this_host(stream: &TcpStream) -> bool {
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(peer)) => peer.ip().is_loopback() || peer.ip() == local.ip(),
        _ => false,
    }
}

pub(crate) struct UringLoop {
    // Field order matters: the ring goes first, then the buffers it read into.
    ring: IoUring,
    buffers: Buffers,
    wake: Arc<EventFd>,
    /// Where the pending eventfd read lands; leaked, so a read still in flight never writes into freed memory.
    wake_counter: &'static mut u64,
    inbox: mpsc::Receiver<Command>,
    pairs: Slab<Pair>,
    /// Pair id -> slab key, for [`Command::Close`].
    keys: HashMap<u64, usize>,
    /// Sides whose read found no free buffer: (key, pair id, side), read again as buffers come back.
    starved: VecDeque<(usize, u64, usize)>,
    completions: Vec<(u64, i32, u32)>,
    /// Whether to yield before sleeping (the caller's `ProxyOptions::relay_yield` turns it off).
    yields: YieldGovernor,
}

impl UringLoop {
    /// Sets up a ring with its buffers; fails where io_uring is missing or forbidden (kernel before 6.1,
    /// `kernel.io_uring_disabled`, a seccomp filter), and the caller falls back to the poll loop.
    /// `yields`: whether the ring may yield the CPU to a local process before it sleeps ([`YieldGovernor`]).
    pub(crate) fn new(inbox: mpsc::Receiver<Command>, yields: bool) -> io::Result<UringLoop> {
        Self::with_buffers(inbox, BUFFERS, yields)
    }

    fn with_buffers(
        inbox: mpsc::Receiver<Command>,
        buffers: u16,
        yields: bool,
    ) -> io::Result<UringLoop> {
        let ring = IoUring::builder()
            .setup_cqsize(ENTRIES * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            // Pending completion work shows in the queue's flags, so a plain submit runs it (see `yield_to_local`).
            .setup_taskrun_flag()
            .build(ENTRIES)?;
        if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks wait timeouts or no-drop completions (kernel too old)",
            ));
        }
        let buffers = Buffers::new(&ring, buffers)?;
        Ok(UringLoop {
            ring,
            buffers,
            wake: Arc::new(EventFd::new()?),
            wake_counter: Box::leak(Box::new(0)),
            inbox,
            pairs: Slab::new(),
            keys: HashMap::new(),
            starved: VecDeque::new(),
            completions: Vec::with_capacity(BATCH),
            yields: YieldGovernor::new(yields),
        })
    }

    pub(crate) fn waker(&self) -> Arc<EventFd> {
        self.wake.clone()
    }

    pub(crate) fn run(mut self) {
        self.arm_wake();
        let tick = types::Timespec::from(TICK);
        let mut last_scan = Instant::now();
        let mut closing = false;
        loop {
            match self.wait(&tick) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM)) => {
                    // The kernel is short of memory for now: try again shortly rather than give up the thread.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return self.abandon(e),
            }
            let now = Instant::now();
            self.complete(now);
            self.rearm_starved();
            if !closing && !self.take_commands() {
                closing = true;
                let keys: Vec<usize> = self.pairs.iter().map(|(key, _)| key).collect();
                for key in keys {
                    self.finish(key, RelayEnd::Closed);
                    self.settle(key);
                }
            }
            if closing && self.pairs.is_empty() {
                return;
            }
            if now.duration_since(last_scan) >= TICK {
                last_scan = now;
                self.close_idle(now);
            }
        }
    }

    /// The ring cannot be entered any more, so nothing in flight will complete: closes every connection and
    /// leaks only what the kernel may still write to or read from (the ring, its buffers, the bytes of sends).
    /// The command channel is dropped, so the handles' later jobs fail at once instead of waiting forever.
    fn abandon(self, e: io::Error) {
        tracing::error!(error = %e, "relay ring cannot submit; closing its connections");
        let UringLoop {
            ring,
            buffers,
            inbox,
            pairs,
            ..
        } = self;
        drop(inbox);
        for (_, pair) in pairs {
            let Pair {
                streams,
                queued,
                done,
                ..
            } = pair;
            std::mem::forget(queued);
            drop(streams);
            let _ = done.send(RelayEnd::Error(io::Error::new(e.kind(), e.to_string())));
        }
        std::mem::forget(ring);
        std::mem::forget(buffers);
    }

    /// Submits what is queued and waits until there are completions (at most [`TICK`] while pairs are open).
    fn wait(&mut self, tick: &types::Timespec) -> io::Result<()> {
        if self.pairs.is_empty() {
            return self.ring.submitter().submit_and_wait(1).map(drop);
        }
        // Most turns end here: the sends complete as they are submitted, and a plain submit also runs completion
        // work that is pending (the TASKRUN flag tells), so there is something to do without waiting.
        let pending_work = self.ring.submission().taskrun();
        if !self.ring.submission().is_empty() || pending_work {
            self.ring.submit()?;
        }
        if !self.ring.completion().is_empty() {
            return Ok(());
        }
        self.yield_to_local();
        let args = types::SubmitArgs::new().timespec(tick);
        self.ring.submitter().submit_with_args(1, &args).map(drop)
    }

    /// Before waiting: if bytes went to a process on this host (typically a backend sharing the core), let it
    /// run first instead of going to sleep and being woken by its answer. The answers of a whole batch are then
    /// taken in one go: on a core shared with the backend this cut the relay's CPU per request by ~17% and raised
    /// req/s by ~7% (docs/benchmarks.md). Where nothing else is runnable the yield returns at once, with no answer
    /// waiting, and [`YieldGovernor`] yields ever more rarely; where a CPU-bound process holds the core, it stops
    /// yielding for a while.
    fn yield_to_local(&mut self) {
        let started = Instant::now();
        let Some(budget) = self.yields.before_sleep(started) else {
            return;
        };
        // SAFETY: no arguments, no memory involved.
        unsafe { libc::sched_yield() };
        let back = Instant::now();
        // Answers that arrived meanwhile wait as deferred completion work (the TASKRUN flag) or completions.
        let answered = self.ring.submission().taskrun() || !self.ring.completion().is_empty();
        self.yields
            .yielded(budget, back.duration_since(started), answered, back);
    }

    /// Handles at most one batch of completions: what is left waits for the next turn, so commands, the idle scan
    /// and starved reads are seen between batches even under a load that never lets the queue empty.
    fn complete(&mut self, now: Instant) {
        self.completions.clear();
        for cqe in self.ring.completion().take(BATCH) {
            self.completions
                .push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        for i in 0..self.completions.len() {
            let (user_data, result, flags) = self.completions[i];
            self.on_completion(user_data, result, flags, now);
        }
    }

    fn on_completion(&mut self, user_data: u64, result: i32, flags: u32, now: Instant) {
        match user_data {
            WAKE => return self.arm_wake(),
            CANCEL => return,
            _ => {}
        }
        let key = (user_data >> 2) as usize;
        let op = user_data & 3;
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.buffers.free = self.buffers.free.saturating_sub(1);
        }
        let Some(pair) = self.pairs.get_mut(key) else {
            // Cannot happen (a pair stays until its last completion); never lose a buffer over it.
            if let Some(bid) = bid {
                self.give_back(bid);
            }
            return;
        };
        // A multishot read stays in flight until a completion without F_MORE.
        let last = op >= SEND || !cqueue::more(flags);
        if last {
            pair.inflight -= 1;
        }
        if op < SEND {
            if last {
                pair.reading[op as usize] = false;
            }
            self.on_received(key, op as usize, result, bid, last, now);
        } else {
            self.on_sent(key, (op - SEND) as usize, result, now);
        }
        self.settle(key);
    }

    /// A read of side `side` completed (`last`: its multishot read is over).
    fn on_received(
        &mut self,
        key: usize,
        side: usize,
        result: i32,
        bid: Option<u16>,
        last: bool,
        now: Instant,
    ) {
        if let Some(bid) = bid
            && (self.pairs[key].ending.is_some() || result <= 0)
        {
            self.give_back(bid);
        }
        let pair = &mut self.pairs[key];
        if pair.ending.is_some() {
            return;
        }
        match result {
            0 => {
                pair.eof[side] = true;
                if pair.queued[side].is_empty() {
                    pair.pass_fin(1 - side);
                }
            }
            n if n > 0 => {
                let Some(bid) = bid else {
                    return self.finish(
                        key,
                        RelayEnd::Error(io::Error::other("read without a buffer")),
                    );
                };
                pair.traffic.read(side, n as usize, now);
                let mut chunk = Chunk {
                    bytes: Held::Ring(bid),
                    start: 0,
                    end: n as u32,
                };
                if pair.queued[side].is_empty() {
                    pair.queued[side].push_back(chunk);
                    self.push_send(key, side);
                } else {
                    // Behind bytes still being sent: out of the ring, so the buffer is free again at once.
                    chunk.bytes = Held::Owned(self.buffers.bytes(bid, 0, n as u32).into());
                    pair.queued[side].push_back(chunk);
                    let too_much = pair.queued[side].len() > MAX_QUEUED;
                    // Some more come between a pause and its cancellation (the kernel completes up to 32 reads in
                    // a row), never many.
                    debug_assert!(
                        pair.queued[side].len() <= MAX_QUEUED + 48,
                        "a paused side is still being read"
                    );
                    self.give_back(bid);
                    if too_much {
                        self.pause_read(key, side);
                    }
                }
            }
            e if -e == libc::ENOBUFS => self.starved.push_back((key, pair.id, side)),
            e if -e == libc::ECANCELED || -e == libc::EINTR || -e == libc::EAGAIN => {}
            e => return self.finish(key, RelayEnd::Error(io::Error::from_raw_os_error(-e))),
        }
        // The read is over but the side goes on (the kernel ended it by itself, or a pause was cancelled after
        // the queue had drained): read again unless bytes are still queued, whose last send does it.
        if last && result != 0 && -result != libc::ENOBUFS {
            self.read_on(key, side);
        }
    }

    /// A send to side `to` completed: the rest of the chunk goes next (copied out of the ring first), then the
    /// next chunk; once all is sent, the FIN follows if one came, or the side is read again if it was paused.
    fn on_sent(&mut self, key: usize, to: usize, result: i32, now: Instant) {
        let from = 1 - to;
        let pair = &mut self.pairs[key];
        let Some(chunk) = pair.queued[from].front_mut() else {
            return;
        };
        if result > 0 {
            chunk.start += result as u32;
            // Waiting for the peer to take bytes counts as activity: bytes are still moving.
            pair.traffic.last_activity = now;
        }
        // A partial send, or none at all (EAGAIN: the peer's window is full): the rest waits for the peer.
        let goes_on = result > 0 || result == -libc::EAGAIN || result == -libc::EINTR;
        if pair.ending.is_none() && goes_on && chunk.start < chunk.end {
            if let Held::Ring(bid) = chunk.bytes {
                let rest = self.buffers.bytes(bid, chunk.start, chunk.end);
                chunk.bytes = Held::Owned(rest.into());
                chunk.end -= chunk.start;
                chunk.start = 0;
                self.give_back(bid);
            }
            // The peer is not keeping up: stop reading the other side until it has taken everything.
            self.pause_read(key, from);
            return self.push_send(key, from);
        }
        let pair = &mut self.pairs[key];
        let ending = pair.ending.is_some();
        if let Some(Chunk {
            bytes: Held::Ring(bid),
            ..
        }) = pair.queued[from].pop_front()
        {
            self.give_back(bid);
        }
        let pair = &mut self.pairs[key];
        match result {
            _ if ending => {}
            e if e < 0 => self.finish(key, RelayEnd::Error(io::Error::from_raw_os_error(-e))),
            0 => self.finish(key, RelayEnd::Error(io::ErrorKind::WriteZero.into())),
            _ if !pair.queued[from].is_empty() => self.push_send(key, from),
            _ if pair.eof[from] => pair.pass_fin(to),
            _ => {
                self.read_on(key, from);
            }
        }
    }

    /// Starts reading side `side` again if it is not being read, has not ended and has nothing queued. `true` if
    /// a read was armed.
    fn read_on(&mut self, key: usize, side: usize) -> bool {
        let pair = &self.pairs[key];
        pair.ending.is_none()
            && !pair.eof[side]
            && !pair.reading[side]
            && pair.queued[side].is_empty()
            && self.push_recv(key, side)
    }

    /// Side `side`'s peer is not keeping up: the side is read one chunk at a time from now on, and a multishot
    /// read still armed is cancelled (its completion without F_MORE follows; the side is read again once what it
    /// holds is sent).
    fn pause_read(&mut self, key: usize, side: usize) {
        let pair = &mut self.pairs[key];
        if pair.single[side] {
            return;
        }
        pair.single[side] = true;
        if !pair.reading[side] {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(
            (key as u64) << 2 | (RECV + side as u64),
        ))
        .build()
        .user_data(CANCEL);
        if !self.push(cancel) {
            self.finish(key, RelayEnd::Error(io::ErrorKind::OutOfMemory.into()));
        }
    }

    /// Removes a pair whose last operation completed, or starts finishing one that is done.
    fn settle(&mut self, key: usize) {
        let Some(pair) = self.pairs.get(key) else {
            return;
        };
        if pair.ending.is_none() && pair.finished() {
            self.finish(key, RelayEnd::Closed);
        }
        let pair = &self.pairs[key];
        if pair.ending.is_some() && pair.inflight == 0 {
            let Pair {
                id,
                streams,
                queued,
                ending,
                done,
                ..
            } = self.pairs.remove(key);
            self.keys.remove(&id);
            drop(streams);
            // Bytes read but never sent (the pair ended first): their buffers go back to the ring.
            for chunk in queued.into_iter().flatten() {
                if let Held::Ring(bid) = chunk.bytes {
                    self.give_back(bid);
                }
            }
            if let Some(end) = ending {
                let _ = done.send(end);
            }
        }
    }

    /// Ends a pair: cancels what is in flight; [`Self::settle`] closes it once all of that has completed.
    fn finish(&mut self, key: usize, end: RelayEnd) {
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        if pair.ending.is_some() {
            return;
        }
        pair.ending = Some(end);
        self.cancel_inflight(key);
    }

    /// Cancels every operation of pair `key` still in flight; their completions then come at once.
    fn cancel_inflight(&mut self, key: usize) {
        let pair = &self.pairs[key];
        if pair.inflight > 0 {
            let fds = [
                pair.streams[CLIENT].as_raw_fd(),
                pair.streams[SERVER].as_raw_fd(),
            ];
            for fd in fds {
                let cancel =
                    opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                        .build()
                        .user_data(CANCEL);
                let _ = self.push(cancel);
            }
        }
    }

    /// Ends pairs idle past their timeout. Also looks after ended pairs, which normally go within a turn: one
    /// with nothing in flight (a failed push ended it where no completion follows to settle it) is removed, and
    /// one still waiting for completions has its operations cancelled again (in case a cancellation did not fit
    /// in the queue).
    fn close_idle(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.ending.is_some() || p.traffic.idle(p.eof, now))
            .map(|(key, _)| key)
            .collect();
        for key in due {
            if self.pairs[key].ending.is_some() {
                self.cancel_inflight(key);
            } else {
                self.finish(key, RelayEnd::Idle);
            }
            self.settle(key);
        }
    }

    /// Applies queued commands. `false` once every handle is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Add(id, job)) => {
                    // Blocking sockets: io_uring waits for them by polling (an O_NONBLOCK file may fail with
                    // EAGAIN instead). The client comes blocking from accept (`listener::Listener::accept`).
                    debug_assert!(
                        !socket2::SockRef::from(&job.client)
                            .nonblocking()
                            .unwrap_or(true),
                        "a client handed to an io_uring relay must be blocking"
                    );
                    if let Err(e) = job.server.set_nonblocking(false) {
                        let _ = job.done.send(RelayEnd::Error(e));
                        continue;
                    }
                    let local = [on_this_host(&job.client), on_this_host(&job.server)];
                    let key = self.pairs.insert(Pair {
                        id,
                        streams: [job.client, job.server],
                        queued: [VecDeque::new(), VecDeque::new()],
                        reading: [false; 2],
                        single: [false; 2],
                        eof: [false; 2],
                        shut: [false; 2],
                        local,
                        inflight: 0,
                        ending: None,
                        traffic: job.traffic,
                        done: job.done,
                    });
                    self.keys.insert(id, key);
                    self.read_on(key, CLIENT);
                    self.read_on(key, SERVER);
                    self.settle(key);
                }
                Ok(Command::Close { id, reset }) => {
                    if let Some(&key) = self.keys.get(&id) {
                        // The pair keeps its sockets until its operations completed: the option lands on an
                        // open socket, and the close in `settle` sends the RST.
                        if reset {
                            reset_on_close(&self.pairs[key].streams[CLIENT]);
                        }
                        self.finish(key, RelayEnd::Closed);
                        self.settle(key);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn give_back(&mut self, bid: u16) {
        self.buffers.put(bid);
        self.buffers.publish();
    }

    /// Reads again the sides that found no free buffer, as many as there are free buffers now.
    fn rearm_starved(&mut self) {
        let mut free = self.buffers.free;
        while free > 0 {
            let Some((key, id, side)) = self.starved.pop_front() else {
                return;
            };
            // A side that has bytes queued, or was read again meanwhile, is left to `on_sent`, which reads it
            // once they are sent.
            if self.pairs.get(key).is_some_and(|p| p.id == id) && self.read_on(key, side) {
                free -= 1;
            }
            if self.pairs.get(key).is_some_and(|p| p.id == id) {
                self.settle(key);
            }
        }
    }

    /// Arms a read of side `side` into a ring buffer: a multishot one (one completion per arrival of bytes, until
    /// it is cancelled or the side ends), or a single one once the side's peer fell behind.
    fn push_recv(&mut self, key: usize, side: usize) -> bool {
        let pair = &self.pairs[key];
        // Two reads armed on one side would each deliver bytes, and a pause would stop only one of them.
        debug_assert!(!pair.reading[side], "a second read armed on one side");
        if pair.ending.is_some() || pair.reading[side] {
            return false;
        }
        let fd = types::Fd(pair.streams[side].as_raw_fd());
        let recv = if pair.single[side] {
            opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BUF_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::RecvMulti::new(fd, BUF_GROUP).build()
        }
        .user_data((key as u64) << 2 | (RECV + side as u64));
        if self.push(recv) {
            let pair = &mut self.pairs[key];
            pair.inflight += 1;
            pair.reading[side] = true;
            true
        } else {
            self.finish(key, RelayEnd::Error(io::ErrorKind::OutOfMemory.into()));
            false
        }
    }

    /// Sends (the rest of) what was read from side `from` to the other side.
    fn push_send(&mut self, key: usize, from: usize) {
        let pair = &mut self.pairs[key];
        if pair.ending.is_some() {
            return;
        }
        let Some(chunk) = pair.queued[from].front() else {
            return;
        };
        let to = 1 - from;
        if pair.local[to] {
            self.yields.sent_local();
        }
        let (data, flags) = match &chunk.bytes {
            // Never wait while holding a ring buffer: `on_sent` copies what the peer did not take.
            Held::Ring(bid) => (
                self.buffers.addr(*bid, chunk.start),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            ),
            // SAFETY (of the pointer's use by the kernel): the boxed bytes stay where they are until this send
            // completes; the pair, and with it the chunk, goes only when nothing of it is in flight.
            Held::Owned(bytes) => (bytes[chunk.start as usize..].as_ptr(), libc::MSG_NOSIGNAL),
        };
        let send = opcode::Send::new(
            types::Fd(pair.streams[to].as_raw_fd()),
            data,
            chunk.end - chunk.start,
        )
        .flags(flags)
        .build()
        .user_data((key as u64) << 2 | (SEND + to as u64));
        self.push_for(key, send);
    }

    /// Queues an operation of pair `key`, which then stays until it completes.
    fn push_for(&mut self, key: usize, entry: squeue::Entry) {
        if self.push(entry) {
            self.pairs[key].inflight += 1;
        } else {
            self.finish(key, RelayEnd::Error(io::ErrorKind::OutOfMemory.into()));
        }
    }

    fn arm_wake(&mut self) {
        let read = opcode::Read::new(
            types::Fd(self.wake.0.as_raw_fd()),
            (self.wake_counter as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(WAKE);
        if !self.push(read) {
            tracing::error!(
                "relay ring cannot wait for commands; new connections wait for the next completion"
            );
        }
    }

    /// Queues an entry, first handing a full queue to the kernel. `false` if it still does not fit (the kernel
    /// took nothing: out of memory).
    fn push(&mut self, entry: squeue::Entry) -> bool {
        if self.ring.submission().is_full() {
            let _ = self.ring.submit();
        }
        // SAFETY: every buffer an entry points at (the provided buffers, the wake counter) lives as long as the
        // ring, and a sent chunk's buffer is not given back before its send completed.
        let pushed = unsafe { self.ring.submission().push(&entry) }.is_ok();
        if !pushed {
            tracing::error!("relay ring's submission queue stays full");
        }
        pushed
    }
}
#[cfg(test)]
#[path = "uring_tests.rs"]
mod tests;
