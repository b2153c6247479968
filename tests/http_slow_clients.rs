//! Clients that read slowly or never (review findings 1 and 2): `--send-timeout` cuts a client
//! that stops reading and frees the Python thread and the memory behind it.

mod common;
mod http_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use common::client::{Addr, is_timeout};
use http_support::*;

const WAIT: Duration = Duration::from_secs(15);

/// A loopback TCP connection with a 16 KiB receive buffer (set before the connect, so the
/// window stays small): a client that reads slowly fills the server's queue quickly.
fn small_window(addr: &Addr) -> TcpStream {
    let Addr::Tcp(sa) = addr else {
        panic!("a TCP address, got {addr}")
    };
    let SocketAddr::V4(v4) = sa else {
        panic!("an IPv4 address, got {sa}")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until from_raw_fd.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 16384;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }
}

/// Reads until the server closes (or resets) the connection, at most `limit`; returns the bytes
/// read and whether the connection ended within `limit`.
fn read_to_end_within(s: &mut TcpStream, limit: Duration) -> (usize, bool) {
    let until = Instant::now() + limit;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (total, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (total, true),
            Err(e) if is_timeout(&e) => return (total, false),
            Err(e) => panic!("reading: {e}"),
        }
    }
}

fn pid_of(server: &common::server::Server, addr: &Addr) -> i32 {
    let mut c = connect(server, addr, WAIT);
    let r = c
        .request("GET", "/pid", &[], None)
        .unwrap_or_else(|e| panic!("GET /pid: {e}\n{}", server.report()));
    assert_eq!(r.status, 200, "{r:?}");
    r.text().trim().parse().expect("a pid")
}

/// Finding 1: with one Python thread, a client that never reads an endless generator reply used
/// to hold that thread for ever (every other request waited; the master's `--timeout` then
/// killed the worker). Now the connection is cut after `--send-timeout` and the thread is free.
#[test]
fn a_client_that_never_reads_frees_its_python_thread() {
    let (server, addr) = start_app(
        "review:app",
        &["--threads", "1", "--send-timeout", "2", "--timeout", "120"],
    );
    let before = pid_of(&server, &addr);
    let mut stuck = small_window(&addr);
    stuck
        .write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Let the reply fill every queue between the generator and the client.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let after = pid_of(&server, &addr);
    assert_eq!(
        after,
        before,
        "the worker was replaced\n{}",
        server.report()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "another request waited {:?} for the thread\n{}",
        t0.elapsed(),
        server.report()
    );
    // The stuck connection was cut: reading now reaches its end (a reset or EOF), not an endless
    // stream.
    let (_, ended) = read_to_end_within(&mut stuck, Duration::from_secs(10));
    assert!(
        ended,
        "the never-reading client was not cut\n{}",
        server.report()
    );
    assert!(!server.has_exited(), "{}", server.report());
}

/// Finding 2: a large list reply to a client that never reads used to be held in memory for
/// ever (100 such clients: +400 MiB); `--send-timeout` now cuts the connection and frees it.
#[test]
fn a_list_reply_to_a_client_that_never_reads_is_cut() {
    let (server, addr) = start_app("review:app", &["--send-timeout", "2"]);
    let mb = 16;
    let mut s = small_window(&addr);
    s.write_all(format!("GET /big-list?mb={mb} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (got, ended) = read_to_end_within(&mut s, Duration::from_secs(20));
    assert!(ended, "the connection was still open after 25 s");
    assert!(
        got < mb << 20,
        "the whole {mb} MiB reply arrived ({got} bytes) after 5 s of not reading\n{}",
        server.report()
    );
    assert_serves_review(&server, &addr);
}

fn assert_serves_review(server: &common::server::Server, addr: &Addr) {
    let mut c = connect(server, addr, WAIT);
    let r = c
        .request("GET", "/", &[], None)
        .unwrap_or_else(|e| panic!("GET /: {e}\n{}", server.report()));
    assert_eq!((r.status, r.text().as_str()), (200, "review app\n"));
}
