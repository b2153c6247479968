//! sd_notify: telling systemd (or any supervisor that sets `NOTIFY_SOCKET`) what the master does.
//!
//! Messages are formatted with the `sd-notify` crate's [`NotifyState`]; they are sent here rather
//! than with `sd_notify::notify` because that function re-reads `NOTIFY_SOCKET` from the
//! environment on every call (and ferricorn removes it before the app starts, so the app cannot
//! talk to systemd in the master's name) and it treats `@name` as a file path instead of an
//! abstract socket.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub use sd_notify::NotifyState;

/// The environment variables of the notify protocol, removed from the environment at startup.
pub const NOTIFY_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    /// The `NOTIFY_SOCKET` value, kept to hand over to an upgraded master.
    pub socket: String,
    addr: SocketAddr,
    sock: UnixDatagram,
}

impl Notifier {
    /// From a `NOTIFY_SOCKET` value: a path, or `@name` for an abstract socket.
    pub fn new(socket: &str) -> io::Result<Notifier> {
        let addr = match socket.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None if socket.starts_with('/') => SocketAddr::from_pathname(socket)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET={socket} is neither an absolute path nor @abstract"),
                ));
            }
        };
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier {
            socket: socket.to_string(),
            addr,
            sock,
        })
    }

    /// The socket's descriptor (workers close it: they never speak for the master).
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Sends the states in one datagram (so `RELOADING=1` and `MONOTONIC_USEC=` arrive together).
    pub fn send(&self, states: &[NotifyState<'_>]) {
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::warn!("sd_notify to {} failed: {e}", self.socket);
        }
    }
}

/// What the environment said about notification, read once at startup.
#[derive(Debug, Default)]
pub struct NotifyEnv {
    pub notifier: Option<Notifier>,
    /// `WATCHDOG_USEC`, when `WATCHDOG_PID` is absent or ours.
    pub watchdog: Option<Duration>,
}

impl NotifyEnv {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID` from `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, pid: u32) -> NotifyEnv {
        let notifier = get("NOTIFY_SOCKET")
            .filter(|s| !s.is_empty())
            .and_then(|s| {
                Notifier::new(&s)
                    .map_err(|e| tracing::warn!("ignoring NOTIFY_SOCKET={s}: {e}"))
                    .ok()
            });
        let pid_ok = get("WATCHDOG_PID").is_none_or(|p| p.trim().parse::<u32>() == Ok(pid));
        let watchdog = get("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        NotifyEnv { notifier, watchdog }
    }

    pub fn send(&self, states: &[NotifyState<'_>]) {
        if let Some(n) = &self.notifier {
            n.send(states);
        }
    }

    /// How often to send `WATCHDOG=1`: a quarter of the interval, so a late loop turn still
    /// keeps us inside half of it (systemd asks for at least every half).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket_in_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.send(&[NotifyState::Reloading, NotifyState::MonotonicUsec(42)]);
        assert_eq!(recv_all(&rx), "RELOADING=1\nMONOTONIC_USEC=42\n");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("ferricorn-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.send(&[NotifyState::Ready, NotifyState::MainPid(7)]);
        assert_eq!(recv_all(&rx), "READY=1\nMAINPID=7\n");
    }

    #[test]
    fn watchdog_honours_watchdog_pid() {
        let vars = |pid: &'static str| {
            move |k: &str| match k {
                "WATCHDOG_USEC" => Some("400000".to_string()),
                "WATCHDOG_PID" => Some(pid.to_string()),
                _ => None,
            }
        };
        let e = NotifyEnv::from_vars(vars("10"), 10);
        assert_eq!(e.watchdog, Some(Duration::from_millis(400)));
        assert_eq!(e.watchdog_every(), Some(Duration::from_millis(100)));
        assert_eq!(NotifyEnv::from_vars(vars("11"), 10).watchdog, None);
        assert!(NotifyEnv::from_vars(|_| None, 1).notifier.is_none());
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(Notifier::new("relative/sock").is_err());
    }
}
