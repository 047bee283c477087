//! `tnd-backend`: an OpenStack controller stand-in for the netns lab.
//!
//! Listens on every port of the guide's VIP table at `--address`. HTTP-mode ports (80 horizon, 8004 heat_api)
//! answer any HTTP/1.1 request with `200` and a body naming the controller, keeping the connection alive; every
//! other port writes a banner line naming the controller on connect, then echoes what it receives.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};
use tandem_lab::{HTTP_PORTS, OPENSTACK_PORTS, banner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(about = "Serve the OpenStack example's ports, naming this controller in every answer")]
struct Args {
    /// controller name put in banners and HTTP bodies (e.g. ctl1)
    #[arg(long)]
    name: String,
    /// address to listen on
    #[arg(long, default_value = "0.0.0.0")]
    address: IpAddr,
    /// ports to serve (comma-separated); default: every port of the OpenStack example
    #[arg(long, value_delimiter = ',')]
    ports: Option<Vec<u16>>,
    /// ports to leave free for a real server (comma-separated), e.g. 3306 for a MariaDB in the same namespace
    #[arg(long, value_delimiter = ',')]
    skip_port: Vec<u16>,
    /// which of those ports speak HTTP (comma-separated)
    #[arg(long, value_delimiter = ',', default_values_t = HTTP_PORTS)]
    http_ports: Vec<u16>,
    /// bind even when the address is not (yet) local (IP_FREEBIND)
    #[arg(long)]
    freebind: bool,
    /// file to create once every listener is bound
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

fn listener(addr: SocketAddr, freebind: bool) -> Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if freebind {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Banner, then echo until the peer closes.
async fn serve_tcp(mut stream: TcpStream, name: Arc<str>, port: u16) {
    let _ = stream.set_nodelay(true);
    if stream
        .write_all(banner(&name, port).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve_http(stream: TcpStream, name: Arc<str>, port: u16, served: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let name = name.clone();
        let served = served.clone();
        async move {
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            let body = format!(
                "{}{} port={} path={} request={}\n",
                tandem_lab::CONTROLLER_TOKEN,
                name,
                port,
                req.uri().path(),
                n
            );
            let response = Response::builder()
                .header("content-type", "text/plain")
                .header("x-controller", name.as_ref())
                .body(Full::new(Bytes::from(body)));
            Ok::<_, Infallible>(
                response
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"error\n")))),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let name: Arc<str> = Arc::from(args.name.as_str());
    let ports = args
        .ports
        .clone()
        .unwrap_or_else(|| OPENSTACK_PORTS.to_vec())
        .into_iter()
        .filter(|port| !args.skip_port.contains(port))
        .collect::<Vec<_>>();
    let served = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for port in ports {
        let listener = listener(SocketAddr::new(args.address, port), args.freebind)?;
        let http = args.http_ports.contains(&port);
        let name = name.clone();
        let served = served.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // out of descriptors or similar: back off a little rather than spin
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                if http {
                    tokio::spawn(serve_http(stream, name.clone(), port, served.clone()));
                } else {
                    tokio::spawn(serve_tcp(stream, name.clone(), port));
                }
            }
        });
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n").with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!(
        "tnd-backend {}: serving {} ports on {}",
        args.name,
        tasks.len(),
        args.address
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = tasks.join_next() => {}
    }
    Ok(())
}
