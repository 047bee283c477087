//! Tests of the io_uring relay.

use super::*;
use crate::relay::test_support::{loopback_pair as connected, test_traffic};
use std::io::{Read, Write};

/// A ring thread with `buffers` provided buffers; `None` where io_uring cannot be set up.
fn ring(buffers: u16) -> Option<(mpsc::Sender<Command>, Arc<EventFd>)> {
    let (commands, inbox) = mpsc::channel();
    let (ready, set_up) = mpsc::channel();
    // The ring is set up on its own thread, as in `RelayLoops::start_uring` (it is single-issuer).
    std::thread::spawn(
        move || match UringLoop::with_buffers(inbox, buffers, true) {
            Ok(ring) => {
                ready.send(Ok(ring.waker())).unwrap();
                ring.run();
            }
            Err(e) => ready.send(Err(e)).unwrap(),
        },
    );
    match set_up.recv().unwrap() {
        Ok(wake) => Some((commands, wake)),
        Err(e) => {
            eprintln!("io_uring cannot be set up here ({e}); nothing to test");
            None
        }
    }
}

/// Hands a client/server pair (the relay's ends) to the ring; returns the channel that tells how it ended.
fn relay(
    ring: &(mpsc::Sender<Command>, Arc<EventFd>),
    id: u64,
    client: TcpStream,
    server: TcpStream,
) -> tokio::sync::oneshot::Receiver<RelayEnd> {
    let (done, ended) = tokio::sync::oneshot::channel();
    client.set_nonblocking(false).unwrap(); // as accepted for an io_uring relay
    let job = crate::relay::Job {
        client,
        server,
        traffic: test_traffic(),
        done,
    };
    ring.0.send(Command::Add(id, job)).unwrap();
    ring.1.wake();
    ended
}

#[test]
fn servers_that_stop_reading_do_not_use_up_the_ring() {
    let Some(ring) = ring(4) else { return };
    // Six pairs (more than the ring's 4 buffers) whose servers never read and whose relay-side sockets are
    // already full: the first bytes each client sends find no room on the way to its server.
    let mut held = Vec::new();
    for id in 0..6 {
        let (client_near, mut client_far) = connected();
        let (mut server_near, server_far) = connected();
        socket2::SockRef::from(&server_far)
            .set_recv_buffer_size(4096)
            .unwrap();
        server_near.set_nonblocking(true).unwrap();
        let fill = [0u8; 64 * 1024];
        let mut quiet = 0;
        while quiet < 3 {
            match server_near.write(&fill) {
                Ok(n) if n > 0 => quiet = 0,
                _ => {
                    quiet += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let ended = relay(&ring, id, client_near, server_near);
        client_far.write_all(&[1u8; 100]).unwrap();
        held.push((client_far, server_far, ended));
    }
    std::thread::sleep(Duration::from_millis(200));
    // A seventh pair still gets its bytes through both ways.
    let (client_near, mut client_far) = connected();
    let (server_near, mut server_far) = connected();
    let _ended = relay(&ring, 6, client_near, server_near);
    let echo = std::thread::spawn(move || {
        let mut got = [0u8; 4];
        server_far.read_exact(&mut got).unwrap();
        server_far.write_all(&got).unwrap();
    });
    client_far
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client_far.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    client_far
        .read_exact(&mut got)
        .expect("a pair behind stalled ones got no buffer");
    assert_eq!(&got, b"ping");
    echo.join().unwrap();
    drop(held);
}

#[test]
fn a_slow_server_gets_every_byte_in_order_then_the_fin() {
    slow_server(BUFFERS);
}

#[test]
fn a_slow_server_gets_every_byte_with_buffers_running_out() {
    // Two buffers: reads keep finding none (their multishot ends with ENOBUFS) while sends still hold one.
    slow_server(2);
}

fn slow_server(buffers: u16) {
    let Some(ring) = ring(buffers) else { return };
    let (client_near, mut client_far) = connected();
    let (server_near, mut server_far) = connected();
    let ended = relay(&ring, 1, client_near, server_near);
    // 4 MiB, far more than the sockets hold: the relay's sends go partial and its reads are paused and resumed.
    let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let writer = std::thread::spawn(move || {
        client_far.write_all(&sent).unwrap();
        client_far.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        client_far.read_to_end(&mut answer).unwrap();
        answer
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut piece = [0u8; 1000];
    loop {
        let n = server_far.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&piece[..n]);
        if got.len() < 256 * 1024 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "bytes reordered or changed on the way");
    server_far.write_all(b"done").unwrap();
    drop(server_far);
    assert_eq!(writer.join().unwrap(), b"done");
    let end = ended.blocking_recv().unwrap();
    assert!(matches!(end, RelayEnd::Closed), "ended with {end:?}");
}
