//! Listening sockets: IP_FREEBIND (so a VIP can be bound before it is on the node), SO_REUSEADDR, a large backlog.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

/// Backlog asked of the kernel (capped by net.core.somaxconn). Connections over a service's limit wait here.
pub const BACKLOG: i32 = 4096;

/// Bind and listen on `addr` with the options every virtual service needs. Must run inside a tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
    TcpListener::from_std(socket.into())
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
