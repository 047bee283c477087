//! The sync session's round-trip time as the kernel measures it: `getsockopt(TCP_INFO)` on the session's socket,
//! field `tcpi_rtt` (the smoothed RTT, µs). The heartbeat carries no echo to time a round trip with, and the sync
//! session usually runs over the same link, so this is the pair's network round trip without a new message.

use std::os::fd::AsRawFd;

/// The kernel's smoothed round-trip time of the TCP connection `socket`, in microseconds; `None` if the kernel
/// does not say (not Linux, not a TCP socket, or the call failed).
pub fn tcp_rtt_us(socket: &impl AsRawFd) -> Option<u64> {
    read(socket.as_raw_fd())
}

#[cfg(target_os = "linux")]
fn read(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: `tcp_info` is plain integers, valid all-zero; getsockopt writes at most `len` bytes into it and
    // `fd` is borrowed from a live socket for the duration of the call.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    // Older kernels fill a shorter struct; `tcpi_rtt` has been in it since the beginning.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_rtt) + std::mem::size_of::<u32>();
    (rc == 0 && usize::try_from(len).is_ok_and(|len| len >= needed))
        .then(|| u64::from(info.tcpi_rtt))
}

#[cfg(not(target_os = "linux"))]
fn read(_fd: std::os::fd::RawFd) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};

    #[test]
    fn a_loopback_connection_has_a_small_rtt() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // A few exchanges, so the kernel has timed data segments and not only the handshake.
        let mut buf = [0u8; 4];
        for _ in 0..5 {
            client.write_all(b"ping").unwrap();
            server.read_exact(&mut buf).unwrap();
            server.write_all(b"pong").unwrap();
            client.read_exact(&mut buf).unwrap();
        }
        for side in [&client, &server] {
            let rtt = tcp_rtt_us(side).expect("TCP_INFO on a connected socket");
            assert!(rtt > 0 && rtt < 100_000, "loopback smoothed RTT {rtt} µs");
        }
        // Not TCP: the kernel refuses TCP_INFO, and the answer is "unknown", not 0.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(tcp_rtt_us(&udp), None);
    }
}
