//! A send-only AF_PACKET socket for announcement frames.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// EtherType of ARP.
pub(crate) const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;

/// A raw packet socket opened with protocol 0, so the kernel delivers nothing to it: it only sends whole Ethernet
/// frames to the interface named in each `send`. Non-blocking: a full transmit queue is an error for this round,
/// not a stall of the runtime.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket in the calling thread's network namespace. Needs CAP_NET_RAW.
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends one complete Ethernet frame out of interface `ifindex`.
    pub(crate) fn send(
        &self,
        ifindex: u32,
        destination: [u8; 6],
        ethertype: u16,
        frame: &[u8],
    ) -> io::Result<()> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        send_frame(&self.fd, ifindex, destination, ethertype, frame)
    }
}

/// Sends one complete Ethernet frame on `fd` (an AF_PACKET socket) out of interface `ifindex` to `destination`:
/// the announcement socket and the duplicate-VIP check's probes both send this way.
pub(crate) fn send_frame(
    fd: &impl AsRawFd,
    ifindex: i32,
    destination: [u8; 6],
    ethertype: u16,
    frame: &[u8],
) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ethertype.to_be();
    address.sll_ifindex = ifindex;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&destination);
    // SAFETY: the buffer and address pointers are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const address).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(sent).ok() != Some(frame.len()) {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", frame.len()),
        ));
    }
    Ok(())
}
