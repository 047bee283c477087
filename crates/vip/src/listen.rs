//! The AF_PACKET socket duplicate-VIP detection listens and probes on: bound to the VIP interface, filtered in the
//! kernel by a classic BPF program to ARP and ICMPv6 neighbour solicitations/advertisements (everything else never
//! reaches user space), each frame cut to [`SNAP_LEN`] bytes, frames this host sent skipped.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::claim::{self, Claim};

/// Bytes kept of each frame: ARP is 42, a neighbour advertisement with a link-layer option 86.
pub const SNAP_LEN: u32 = 256;
/// Frames read per call of [`ClaimSocket::recv_claims`], so a flood cannot hold the task.
pub const MAX_FRAMES_PER_READ: usize = 64;

const ETH_P_ALL: u16 = 0x0003;
/// `PACKET_IGNORE_OUTGOING` (Linux 4.20): the kernel does not loop our own transmissions back to this socket.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

// Classic BPF opcodes (linux/filter.h).
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Accept ARP, and IPv6 whose next header is ICMPv6 (58) with type 135 or 136; drop everything else. Offsets are
/// from the Ethernet header: EtherType at 12, IPv6 next header at 14 + 6, ICMPv6 type at 14 + 40. An IPv6 packet
/// with extension headers before ICMPv6 is dropped: NDP does not use them.
const FILTER: [libc::sock_filter; 10] = [
    op(LD_H_ABS, 0, 0, 12),
    op(JEQ_K, 6, 0, 0x0806), // ARP -> accept
    op(JEQ_K, 0, 6, 0x86dd), // not IPv6 -> drop
    op(LD_B_ABS, 0, 0, 20),
    op(JEQ_K, 0, 4, 58), // not ICMPv6 -> drop
    op(LD_B_ABS, 0, 0, 54),
    op(JEQ_K, 1, 0, 135), // neighbour solicitation -> accept
    op(JEQ_K, 0, 1, 136), // neighbour advertisement -> accept, else drop
    op(RET_K, 0, 0, SNAP_LEN),
    op(RET_K, 0, 0, 0),
];

/// A packet socket on one interface that receives claims (filtered) and sends probes.
#[derive(Debug)]
pub struct ClaimSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

impl ClaimSocket {
    /// Opens the socket on interface `ifindex` in the calling thread's network namespace. Needs CAP_NET_RAW and a
    /// tokio runtime. The filter is attached before the socket is bound, so no unfiltered frame is ever queued.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        // SAFETY: plain socket(2) call; protocol 0 receives nothing until bound. The result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let program = libc::sock_fprog {
            len: FILTER.len() as u16,
            filter: FILTER.as_ptr().cast_mut(),
        };
        // SAFETY: the program points at a static array of FILTER.len() instructions; the kernel copies it.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const program).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        let one: libc::c_int = 1;
        // Older kernels lack it: outgoing frames are then skipped by their packet type in recv_claims.
        // SAFETY: an int option, passed by pointer with its size.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = ETH_P_ALL.to_be();
        address.sll_ifindex = ifindex;
        // SAFETY: the address is valid for the length passed.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same while it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Self { fd, ifindex })
    }

    /// Waits until frames arrive, then reads up to [`MAX_FRAMES_PER_READ`] of them and returns the claims among
    /// them (frames this host sent and frames that claim nothing are skipped) with the number of frames read.
    pub async fn recv_claims(&self) -> io::Result<(Vec<Claim>, usize)> {
        let mut claims = Vec::new();
        let mut frames = 0;
        let mut buffer = [0u8; SNAP_LEN as usize];
        loop {
            let mut guard = self.fd.readable().await?;
            while frames < MAX_FRAMES_PER_READ {
                match recv_frame(self.fd.get_ref(), &mut buffer) {
                    Ok(Some(len)) => {
                        frames += 1;
                        if let Some(claim) = buffer.get(..len).and_then(claim::parse_claim) {
                            claims.push(claim);
                        }
                    }
                    Ok(None) => frames += 1, // our own transmission
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if frames > 0 {
                return Ok((claims, frames));
            }
        }
    }

    /// Sends one probe for `vip` from `mac` (an ARP probe, or a DAD neighbour solicitation).
    pub fn send_probe(&self, mac: [u8; 6], vip: IpAddr) -> io::Result<()> {
        let (frame, destination, ethertype) = claim::probe(mac, vip);
        crate::packet::send_frame(&self.fd, self.ifindex, destination, ethertype, &frame)
    }
}

/// One frame into `buffer`: its length, `None` for a frame this host sent, or the error (`WouldBlock` when none).
fn recv_frame(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buffer and address are valid for the lengths passed; the kernel writes at most those.
    let read = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            0,
            (&raw mut from).cast(),
            &raw mut from_len,
        )
    };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    if from.sll_pkttype == libc::PACKET_OUTGOING {
        return Ok(None);
    }
    Ok(Some(usize::try_from(read).unwrap_or(0).min(buffer.len())))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The jump offsets land where the comments say (a wrong offset silently accepts or drops everything).
    #[test]
    fn filter_jumps_land_on_accept_and_drop() {
        let accept = FILTER.len() - 2;
        let drop = FILTER.len() - 1;
        let target = |pc: usize, offset: u8| pc + 1 + usize::from(offset);
        assert_eq!(target(1, FILTER[1].jt), accept);
        assert_eq!(target(2, FILTER[2].jf), drop);
        assert_eq!(target(4, FILTER[4].jf), drop);
        assert_eq!(target(6, FILTER[6].jt), accept);
        assert_eq!(target(7, FILTER[7].jt), accept);
        assert_eq!(target(7, FILTER[7].jf), drop);
        assert_eq!(FILTER[accept].k, SNAP_LEN);
        assert_eq!(FILTER[drop].k, 0);
    }
}
