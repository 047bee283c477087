//! Listening sockets: IP_FREEBIND (so a VIP can be bound before it is on the node), SO_REUSEADDR, a large backlog;
//! accepted connections left unregistered until they reach the thread that serves them.

use std::io;
use std::net::{Shutdown, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// Backlog asked of the kernel (capped by net.core.somaxconn). Connections over a service's limit wait here.
pub const BACKLOG: i32 = 4096;

/// A listening socket. Connections are accepted without registering them with this runtime's reactor: TCP mode
/// hands them to the relay threads and HTTP mode to its own threads, which register them where they are served.
/// (tokio's `TcpListener` would register each one here first: an epoll add and delete per connection for nothing.)
#[derive(Debug)]
pub struct Listener {
    io: AsyncFd<Socket>,
}

impl Listener {
    /// Waits for the next connection. `blocking`: leave the accepted socket blocking (io_uring relays want that);
    /// otherwise it is non-blocking, ready for `TcpStream::from_std`.
    pub async fn accept(&self, blocking: bool) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        let flags = libc::SOCK_CLOEXEC | if blocking { 0 } else { libc::SOCK_NONBLOCK };
        loop {
            let mut ready = self.io.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept4(flags)) {
                let (socket, addr) = accepted?;
                let peer = addr.as_socket().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "accepted a peer without an IP address",
                    )
                })?;
                return Ok((socket.into(), peer));
            }
        }
    }

    /// Takes the socket out of LISTEN at once (the address can be bound again while an accept is still pending).
    pub fn shutdown(&self) {
        let _ = self.io.get_ref().shutdown(Shutdown::Both);
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "listening on a non-IP address")
        })
    }
}

/// Bind and listen on `addr` with the options every virtual service needs. Must run inside a tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // SAFETY: the AsyncFd owns the socket, so the descriptor stays open and the same while it is registered.
    let io = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }?;
    Ok(Listener { io })
}

/// Connect to a real server with TCP_NODELAY, bounded by `timeout`.
pub async fn connect(addr: SocketAddr, timeout: std::time::Duration) -> std::io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timeout",
            ));
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_are_blocking_only_when_asked_and_carry_the_peer() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        for blocking in [true, false] {
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, peer) = listener.accept(blocking).await.unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            let nonblocking = socket2::SockRef::from(&accepted).nonblocking().unwrap();
            assert_eq!(nonblocking, !blocking, "asked for blocking = {blocking}");
        }
    }
}
