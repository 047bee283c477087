//! Many datagrams per system call: `recvmmsg(2)` for the heartbeat socket. Under a flood the per-call cost, not the
//! per-datagram checks, dominated the heartbeat task's time; one call now reads up to [`RECV_BATCH`] datagrams.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use super::RECV_BATCH;
use crate::wire::MAX_DATAGRAM;

/// One byte more than the largest heartbeat: anything longer arrives cut to this and is counted as oversize.
const SLOT: usize = MAX_DATAGRAM + 1;

/// Buffers for one `recvmmsg` call and what it returned. Holds no pointers (they are built on the stack for each
/// call), so it can live in the driver task.
pub(super) struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; RECV_BATCH],
    addr_lens: [libc::socklen_t; RECV_BATCH],
    count: usize,
}

impl RecvBatch {
    pub(super) fn new() -> Self {
        Self {
            bufs: vec![0u8; SLOT * RECV_BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
            addrs: (0..RECV_BATCH).map(|_| unsafe { zeroed() }).collect(),
            lens: [0; RECV_BATCH],
            addr_lens: [0; RECV_BATCH],
            count: 0,
        }
    }

    /// Reads what the socket holds, up to [`RECV_BATCH`] datagrams, without blocking: `WouldBlock` when none.
    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain C structs; zeroed is a valid starting value for both.
        let mut iovecs: [libc::iovec; RECV_BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { zeroed() };
        for ((iov, msg), (buf, addr)) in iovecs
            .iter_mut()
            .zip(msgs.iter_mut())
            .zip(self.bufs.chunks_exact_mut(SLOT).zip(self.addrs.iter_mut()))
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = SLOT;
            msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every message points at its own iovec, buffer slot and address storage, all alive and not
        // otherwise borrowed for the duration of the call; the kernel writes at most iov_len / msg_namelen bytes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = usize::try_from(n).unwrap_or(0).min(RECV_BATCH);
        for (i, msg) in msgs.iter().take(self.count).enumerate() {
            self.lens[i] = (msg.msg_len as usize).min(SLOT);
            self.addr_lens[i] = msg.msg_hdr.msg_namelen;
        }
        Ok(self.count)
    }

    /// The `i`-th datagram of the last call and its source (None for an address family other than IPv4/IPv6).
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let from = socket_addr(&self.addrs[i], self.addr_lens[i])?;
        let start = i * SLOT;
        Some((&self.bufs[start..start + self.lens[i]], from))
    }
}

fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, and it is large enough for one.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6, and it is large enough for one.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_many_datagrams_with_their_sources_in_one_call() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..10u8 {
            tx.send_to(&vec![i; usize::from(i) + 1], rx.local_addr().unwrap())
                .unwrap();
        }
        tx.send_to(&[7u8; 2000], rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 11);
        for i in 0..10u8 {
            let (data, from) = batch.get(usize::from(i)).unwrap();
            assert_eq!(data, &vec![i; usize::from(i) + 1][..]);
            assert_eq!(from, tx.local_addr().unwrap());
        }
        let (cut, _) = batch.get(10).unwrap();
        assert_eq!(
            cut.len(),
            SLOT,
            "a datagram over the limit arrives cut to one byte more than it"
        );
        assert!(batch.get(11).is_none());
    }
}
