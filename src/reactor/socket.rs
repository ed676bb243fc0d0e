//! The link's socket: TCP or a Unix-domain socket, both non-blocking, behind one type.

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A connecting or connected socket.
#[derive(Debug)]
pub(crate) enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Io {
    /// Starts a non-blocking TCP connect.
    pub(crate) fn tcp(addr: SocketAddr) -> io::Result<Io> {
        TcpStream::connect(addr).map(Io::Tcp)
    }

    /// Starts a non-blocking connect to a Unix-domain socket.
    pub(crate) fn unix(path: &Path) -> io::Result<Io> {
        UnixStream::connect(path).map(Io::Unix)
    }

    /// The connect's outcome once readiness was signalled: `Ok(true)` connected,
    /// `Ok(false)` still connecting (a spurious wake-up), `Err` failed.
    pub(crate) fn connect_result(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Io::Tcp(s) => (s.take_error(), s.peer_addr().map(|_| ())),
            Io::Unix(s) => (s.take_error(), s.peer_addr().map(|_| ())),
        };
        match error {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match peer {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// TCP_NODELAY (without it, Nagle and delayed ACKs turn 100 µs calls into 40 ms) and
    /// TCP keepalive; nothing for a Unix socket.
    pub(crate) fn tune(&self, keepalive: Option<(Duration, Duration)>) {
        if let Io::Tcp(s) = self {
            let _ = s.set_nodelay(true);
            if let Some((time, timeout)) = keepalive {
                let _ = crate::sockopt::set_tcp_keepalive(s, time, timeout);
            }
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Unix(s) => s.read(buf),
        }
    }
}

/// Only `write`: it is `send` with MSG_NOSIGNAL, where mio's `write_vectored` is `writev`,
/// which raises SIGPIPE on a reset socket and kills a host that did not ignore it.
impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Io {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.register(r, t, i),
            Io::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.reregister(r, t, i),
            Io::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.deregister(r),
            Io::Unix(s) => s.deregister(r),
        }
    }
}
