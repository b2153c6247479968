//! Listening sockets: parsing `--bind` addresses and opening them in the master.
//!
//! Listeners are opened once, by the master, before any worker exists; every worker inherits the
//! same file descriptors through `fork()` and accepts on them. A unix socket that ferricorn
//! created itself is unlinked when the master exits; a socket it was handed (`fd://N`) never is.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::socket::{self, AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};

/// Port used when a bind address names only a host (Gunicorn's default).
pub const DEFAULT_PORT: u16 = 8000;

/// What `-b/--bind` accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BindAddr {
    /// `HOST:PORT`, `HOST`, `[IPv6]:PORT`, `[IPv6]`.
    Tcp { host: String, port: u16 },
    /// `unix:PATH` (or `unix://PATH`).
    Unix(PathBuf),
    /// `fd://N`: an already-open listening socket.
    Fd(RawFd),
}

const BIND_FORMS: &str = "expected HOST:PORT, HOST, [IPV6]:PORT, unix:PATH or fd://N";

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(format!("empty bind address ({BIND_FORMS})"));
        }
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(format!("'{s}' names no socket path ({BIND_FORMS})"));
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd://") {
            return match n.parse::<RawFd>() {
                Ok(fd) if fd >= 0 => Ok(BindAddr::Fd(fd)),
                _ => Err(format!("'{s}': fd:// takes a file descriptor number")),
            };
        }
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}': missing ']' ({BIND_FORMS})"))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| format!("'{s}': '{host}' is not an IPv6 address"))?;
            let port = match after {
                "" => DEFAULT_PORT,
                p => parse_port(s, p.strip_prefix(':').unwrap_or("x"))?,
            };
            return Ok(BindAddr::Tcp {
                host: host.to_string(),
                port,
            });
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Ok(BindAddr::Tcp {
                host: s.to_string(),
                port: DEFAULT_PORT,
            });
        }
        match s.rsplit_once(':') {
            Some((host, port)) => {
                if host.is_empty() {
                    return Err(format!("'{s}' names no host ({BIND_FORMS})"));
                }
                Ok(BindAddr::Tcp {
                    host: host.to_string(),
                    port: parse_port(s, port)?,
                })
            }
            None => Ok(BindAddr::Tcp {
                host: s.to_string(),
                port: DEFAULT_PORT,
            }),
        }
    }
}

fn parse_port(whole: &str, port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("'{whole}': '{port}' is not a port number 0-65535 ({BIND_FORMS})"))
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            BindAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            BindAddr::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

impl TryFrom<String> for BindAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<BindAddr> for String {
    fn from(b: BindAddr) -> String {
        b.to_string()
    }
}

/// Where a listener really is, read back from the socket itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Tcp(a) => write!(f, "http://{a}"),
            LocalAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// An open listening socket held by the master and inherited by every worker.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// The address it listens on.
    pub local: LocalAddr,
    /// The `--bind` entry that produced it, if any.
    pub bind: Option<BindAddr>,
    /// A unix socket file ferricorn created and must unlink on exit.
    owned_path: Option<PathBuf>,
    /// Handed over by systemd (or by the master this one upgraded from): never re-bound,
    /// never `listen()`ed again, never unlinked.
    pub inherited: bool,
    /// The name from `LISTEN_FDNAMES` (the socket unit's `FileDescriptorName=`).
    pub name: Option<String>,
}

impl Listener {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A duplicate of the descriptor, for a worker's event loop to own.
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Whether this listener serves `b` (same TCP address and port, or same unix path).
    pub fn matches(&self, b: &BindAddr) -> bool {
        match (b, &self.local) {
            (BindAddr::Unix(p), LocalAddr::Unix(q)) => p == q,
            (BindAddr::Fd(fd), _) => *fd == self.raw_fd(),
            (BindAddr::Tcp { host, port }, LocalAddr::Tcp(a)) => {
                *port == a.port()
                    && (host.parse::<IpAddr>().ok() == Some(a.ip())
                        || (host.as_str(), *port)
                            .to_socket_addrs()
                            .map(|mut it| it.any(|r| r.ip() == a.ip()))
                            .unwrap_or(false))
            }
            _ => false,
        }
    }

    /// The name to pass this socket under to an upgraded master (`LISTEN_FDNAMES`).
    pub fn handover_name(&self) -> String {
        match (&self.name, self.owned_path.is_some() || !self.inherited) {
            (Some(n), false) => n.clone(),
            _ => OWN_BIND_NAME.to_string(),
        }
    }

    /// Gives up ownership of the socket file: another master now serves it.
    pub fn disown(&mut self) {
        self.owned_path = None;
    }

    /// Closes the socket and removes the socket file if ferricorn created it.
    pub fn close_and_unlink(self) {
        let path = self.owned_path.clone();
        drop(self);
        if let Some(p) = path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Opens every address of `binds`, in order. On error nothing stays open.
pub fn bind_all(binds: &[BindAddr], backlog: i32) -> Result<Vec<Listener>, String> {
    let mut out: Vec<Listener> = Vec::new();
    for b in binds {
        let taken = match b {
            BindAddr::Fd(fd) => out.iter().any(|l| l.raw_fd() == *fd),
            _ => false,
        };
        let opened = if taken {
            // Owning one descriptor twice would close it twice.
            Err(format!("{b} is already one of the listeners"))
        } else {
            open(b, backlog)
        };
        match opened {
            Ok(l) => out.push(l),
            Err(e) => {
                for l in out {
                    l.close_and_unlink();
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn open(b: &BindAddr, backlog: i32) -> Result<Listener, String> {
    match b {
        BindAddr::Tcp { host, port } => open_tcp(b, host, *port, backlog),
        BindAddr::Unix(path) => open_unix(b, path, backlog),
        BindAddr::Fd(fd) => adopt_fd(b, *fd, backlog),
    }
}

fn open_tcp(b: &BindAddr, host: &str, port: u16, backlog: i32) -> Result<Listener, String> {
    let addr: SocketAddr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve bind address {b}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve bind address {b}: no address"))?,
    };
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)
        .map_err(|e| format!("cannot create a socket for {b}: {e}"))?;
    sock.set_reuse_address(true)
        .map_err(|e| format!("cannot set SO_REUSEADDR on {b}: {e}"))?;
    sock.bind(&addr.into())
        .map_err(|e| format!("cannot bind {b}: {e}"))?;
    sock.listen(backlog)
        .map_err(|e| format!("cannot listen on {b}: {e}"))?;
    let local = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    Ok(Listener {
        fd: sock.into(),
        local: LocalAddr::Tcp(local),
        bind: Some(b.clone()),
        owned_path: None,
        inherited: false,
        name: None,
    })
}

fn open_unix(b: &BindAddr, path: &Path, backlog: i32) -> Result<Listener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A live server answers on it: refuse. A dead one left its file: replace it.
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "cannot bind {b}: another process is listening on {}",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "cannot bind {b}: {} exists and is not a socket",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot bind {b}: {}: {e}", path.display())),
    }
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(|e| format!("cannot create a socket for {b}: {e}"))?;
    let addr = socket2::SockAddr::unix(path).map_err(|e| format!("cannot bind {b}: {e}"))?;
    sock.bind(&addr)
        .map_err(|e| format!("cannot bind {b}: {e}"))?;
    if let Err(e) = sock.listen(backlog) {
        let _ = std::fs::remove_file(path);
        return Err(format!("cannot listen on {b}: {e}"));
    }
    Ok(Listener {
        fd: sock.into(),
        local: LocalAddr::Unix(path.to_path_buf()),
        bind: Some(b.clone()),
        owned_path: Some(path.to_path_buf()),
        inherited: false,
        name: None,
    })
}

/// Takes over an already-open socket (`fd://N`). It must be a stream socket; one that is bound
/// but not yet listening is put into listening state, one that already listens is left as is.
fn adopt_fd(b: &BindAddr, fd: RawFd, backlog: i32) -> Result<Listener, String> {
    if !is_open(fd) {
        return Err(format!("{b}: file descriptor {fd} is not open"));
    }
    // SAFETY: the descriptor is open (checked above) and nothing closes it before the
    // `OwnedFd` below takes it over; it is only borrowed until then.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let local = inspect(borrowed).map_err(|e| format!("{b}: {e}"))?;
    // SAFETY: the user handed this descriptor to ferricorn (`fd://N`) to own from now on, and
    // nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listening = socket::getsockopt(&owned, sockopt::AcceptConn).unwrap_or(false);
    if !listening {
        let sock = socket2::SockRef::from(&owned);
        sock.listen(backlog)
            .map_err(|e| format!("cannot listen on {b}: {e}"))?;
    }
    Ok(Listener {
        fd: owned,
        local,
        bind: Some(b.clone()),
        owned_path: None,
        inherited: true,
        name: None,
    })
}

/// Whether `fd` is an open descriptor of this process. Asked with the raw number: a
/// `BorrowedFd` may only be made for a descriptor that is open, which is the question.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number only reads the descriptor table (EBADF if not open).
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// `LISTEN_FDNAMES` entry marking a socket a ferricorn master bound itself, when it hands its
/// sockets to the master it upgrades to (USR2): the new master keeps unlinking it at exit.
pub const OWN_BIND_NAME: &str = "ferricorn-bind";

/// The sockets passed by systemd's socket activation (`LISTEN_FDS` descriptors from 3, only
/// when `LISTEN_PID` is this process; names from `LISTEN_FDNAMES`). The `LISTEN_*` variables are
/// removed from the environment, so neither workers nor the app see them.
///
/// `binds` (the configured `--bind` list) decides which `ferricorn-bind` sockets handed over by
/// an upgrading master remain owned (unlinked at exit).
pub fn from_systemd(binds: &[BindAddr]) -> Result<Vec<Listener>, String> {
    let fds: Vec<(RawFd, String)> = match sd_notify::listen_fds_with_names() {
        Ok(it) => it.collect(),
        Err(e) => return Err(format!("invalid socket activation variables: {e}")),
    };
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called by the master at startup, before any thread exists.
        unsafe { std::env::remove_var(v) };
    }
    let mut out = Vec::new();
    for (fd, name) in fds {
        if !is_open(fd) {
            return Err(format!(
                "socket activation: descriptor {fd} ('{name}') is not open"
            ));
        }
        // SAFETY: open (checked above), passed to this process by systemd (LISTEN_PID is
        // ours), and taken over by the `OwnedFd` below before anything could close it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let local = inspect(borrowed).map_err(|e| format!("socket activation: {e}"))?;
        let listening = socket::getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false);
        if !listening {
            let connected = socket::getpeername::<SockaddrStorage>(fd).is_ok();
            return Err(if connected {
                format!(
                    "socket activation: descriptor {fd} ('{name}') is a connected socket; \
                     ferricorn needs the listening socket (Accept=no in the .socket unit)"
                )
            } else {
                format!("socket activation: descriptor {fd} ('{name}') is not listening")
            });
        }
        // SAFETY: as above; from now on this listener owns the descriptor (nothing else in the
        // process does: systemd's descriptors are handed to no other code).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut l = Listener {
            fd: owned,
            local,
            bind: None,
            owned_path: None,
            inherited: true,
            name: (!name.is_empty() && name != "unknown").then_some(name.clone()),
        };
        l.bind = binds.iter().find(|b| l.matches(b)).cloned();
        if name == OWN_BIND_NAME {
            l.name = None;
            if let (Some(BindAddr::Unix(p)), LocalAddr::Unix(_)) = (&l.bind, &l.local) {
                l.owned_path = Some(p.clone());
            }
            l.inherited = l.bind.is_none();
        }
        out.push(l);
    }
    Ok(out)
}

/// Describes a socket descriptor: a stream socket of family inet, inet6 or unix.
pub fn inspect(fd: BorrowedFd<'_>) -> Result<LocalAddr, String> {
    let ty = socket::getsockopt(&fd, sockopt::SockType)
        .map_err(|e| format!("descriptor {} is not a socket ({e})", fd.as_raw_fd()))?;
    if ty != SockType::Stream {
        return Err(format!(
            "descriptor {} is a {ty:?} socket; ferricorn serves stream sockets only",
            fd.as_raw_fd()
        ));
    }
    let addr: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).map_err(|e| {
        format!(
            "cannot read the address of descriptor {}: {e}",
            fd.as_raw_fd()
        )
    })?;
    match addr.family() {
        Some(AddressFamily::Inet) => {
            let a = addr.as_sockaddr_in().expect("inet");
            Ok(LocalAddr::Tcp(SocketAddr::new(
                IpAddr::V4(a.ip()),
                a.port(),
            )))
        }
        Some(AddressFamily::Inet6) => {
            let a = addr.as_sockaddr_in6().expect("inet6");
            Ok(LocalAddr::Tcp(SocketAddr::new(
                IpAddr::V6(a.ip()),
                a.port(),
            )))
        }
        Some(AddressFamily::Unix) => {
            let u = addr.as_unix_addr().expect("unix");
            let p = u
                .path()
                .map(Path::to_path_buf)
                .or_else(|| {
                    u.as_abstract()
                        .map(|a| PathBuf::from(format!("@{}", String::from_utf8_lossy(a))))
                })
                .unwrap_or_else(|| PathBuf::from("(unnamed)"));
            Ok(LocalAddr::Unix(p))
        }
        other => Err(format!(
            "descriptor {} has unsupported address family {other:?}",
            fd.as_raw_fd()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let t = |h: &str, p| BindAddr::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            "127.0.0.1:9000".parse::<BindAddr>().unwrap(),
            t("127.0.0.1", 9000)
        );
        assert_eq!(
            "localhost".parse::<BindAddr>().unwrap(),
            t("localhost", 8000)
        );
        assert_eq!("[::1]:81".parse::<BindAddr>().unwrap(), t("::1", 81));
        assert_eq!("[::1]".parse::<BindAddr>().unwrap(), t("::1", 8000));
        assert_eq!("::1".parse::<BindAddr>().unwrap(), t("::1", 8000));
        assert_eq!(
            "unix:/run/app/socket".parse::<BindAddr>().unwrap(),
            BindAddr::Unix("/run/app/socket".into())
        );
        assert_eq!(
            "unix:///tmp/x".parse::<BindAddr>().unwrap(),
            BindAddr::Unix("/tmp/x".into())
        );
        assert_eq!("fd://3".parse::<BindAddr>().unwrap(), BindAddr::Fd(3));
    }

    #[test]
    fn rejects_bad_addresses_with_the_accepted_forms() {
        for bad in [
            "",
            "host:notaport",
            "host:70000",
            "[::1",
            "[nope]:1",
            "fd://x",
            "unix:",
            ":80",
        ] {
            let e = bad.parse::<BindAddr>().unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(
            "h:99999"
                .parse::<BindAddr>()
                .unwrap_err()
                .contains("HOST:PORT")
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "127.0.0.1:9000",
            "[::1]:81",
            "unix:/tmp/a b",
            "fd://7",
            "example.org:80",
        ] {
            let b: BindAddr = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
            assert_eq!(b.to_string().parse::<BindAddr>().unwrap(), b);
        }
    }

    #[test]
    fn binds_tcp_port_zero_and_reads_the_port_back() {
        let ls = bind_all(&["127.0.0.1:0".parse().unwrap()], 16).unwrap();
        match &ls[0].local {
            LocalAddr::Tcp(a) => assert_ne!(a.port(), 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unix_socket_path_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let b = BindAddr::Unix(path.clone());
        let l = bind_all(std::slice::from_ref(&b), 16).unwrap();
        // A live socket is not stolen.
        let e = bind_all(std::slice::from_ref(&b), 16).unwrap_err();
        assert!(e.contains("another process is listening"), "{e}");
        // Closing without unlinking leaves a stale file, which is replaced.
        drop(l);
        assert!(path.exists());
        let l = bind_all(std::slice::from_ref(&b), 16).unwrap();
        l.into_iter().for_each(Listener::close_and_unlink);
        assert!(!path.exists());
        // A regular file is never removed.
        std::fs::write(&path, b"data").unwrap();
        let e = bind_all(std::slice::from_ref(&b), 16).unwrap_err();
        assert!(e.contains("is not a socket"), "{e}");
        assert!(path.exists());
    }

    #[test]
    fn an_fd_is_owned_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        // bind_all closes the first (it owns it) and refuses to own it a second time.
        let e = bind_all(&[BindAddr::Fd(fd), BindAddr::Fd(fd)], 16).unwrap_err();
        assert!(e.contains("already one of the listeners"), "{e}");
    }

    #[test]
    fn fd_must_be_an_open_stream_socket() {
        let e = bind_all(&[BindAddr::Fd(987)], 16).unwrap_err();
        assert!(e.contains("not open"), "{e}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = udp.as_raw_fd();
        let e = bind_all(&[BindAddr::Fd(fd)], 16).unwrap_err();
        assert!(e.contains("stream sockets only"), "{e}");
        drop(udp);
    }
}
