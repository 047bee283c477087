//! The order in which a killed daemon's sockets close, and how the sockets that tell the peer "this daemon is gone"
//! are put first.
//!
//! When a process dies (SIGKILL, OOM), its kernel releases its descriptors through task work that runs last in, first
//! out: the **highest** descriptor number is released first. Releasing an AF_PACKET socket (the VIP announcements,
//! the duplicate-VIP check) waits for an RCU grace period (`packet_release` → `synchronize_net`, 10-25 ms measured
//! here), and every socket released after it waits too. Measured in the lab with ftrace: the sync session's FIN left
//! 22 ms after the kill, all of it spent in `packet_release`. So the heartbeat socket, the sync listeners and the sync
//! sessions move to descriptor numbers above the ones the daemon otherwise uses ([`release_first_floor`]), where they
//! are released before anything slow.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Highest floor used: the kernel sizes a process's descriptor table to its highest number, so a floor near a
/// `LimitNOFILE` of a million would cost megabytes of kernel memory.
const MAX_FLOOR: u64 = 16_384;

/// The lowest number of the release-first range: half the soft `RLIMIT_NOFILE`, at most [`MAX_FLOOR`]; `None` when
/// the limit is too small to spare a range (then descriptors stay where the kernel put them).
pub fn release_first_floor() -> Option<RawFd> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let floor = (limit.rlim_cur / 2).min(MAX_FLOOR);
    (floor >= 64).then_some(floor as RawFd)
}

/// A duplicate of `fd` (close-on-exec) numbered in the release-first range, or an ordinary duplicate when there is
/// no such range or it is full.
pub fn dup_release_first(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    if let Some(floor) = release_first_floor() {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor borrowed for the call; the result is checked before it is owned.
        let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
        if high >= 0 {
            // SAFETY: `high` is a fresh descriptor nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(high) });
        }
    }
    fd.try_clone_to_owned()
}

/// Moves `fd` into the release-first range (the original number is closed, which releases nothing: the duplicate
/// still holds the socket); keeps `fd` as it is if that fails.
pub fn release_first(fd: OwnedFd) -> OwnedFd {
    match release_first_floor() {
        Some(floor) if fd.as_raw_fd() < floor => {
            dup_release_first(std::os::fd::AsFd::as_fd(&fd)).unwrap_or(fd)
        }
        _ => fd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_a_socket_above_the_floor_and_keeps_it_working() {
        let Some(floor) = release_first_floor() else {
            return; // a tiny RLIMIT_NOFILE: nothing is moved, nothing to check
        };
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = socket.local_addr().expect("address");
        let moved = release_first(OwnedFd::from(socket));
        assert!(
            moved.as_raw_fd() >= floor,
            "{} < {floor}",
            moved.as_raw_fd()
        );
        let socket = std::net::UdpSocket::from(moved);
        assert_eq!(socket.local_addr().expect("address"), address);
        // SAFETY: fcntl F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
