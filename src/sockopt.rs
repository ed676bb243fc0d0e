//! Socket options that mio does not offer (TCP keepalive and `TCP_USER_TIMEOUT`), set
//! through socket2 on the connected stream: no unsafe code.

use socket2::{SockRef, TcpKeepalive};
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// Keepalive probes sent before the connection counts as dead.
const PROBES: u32 = 3;

/// TCP keepalive as a second line behind the HTTP/2 PINGs: probes after `time` idle, and
/// `TCP_USER_TIMEOUT` so that data left unacknowledged for `time + timeout` (a peer that
/// vanished while we were writing, where PINGs would queue behind the data) kills the
/// connection too.
///
/// Both are tried even if one fails; the first failure is returned.
pub(crate) fn set_tcp_keepalive(
    socket: &impl AsFd,
    time: Duration,
    timeout: Duration,
) -> io::Result<()> {
    // Linux refuses TCP_KEEPIDLE and TCP_KEEPINTVL above this many seconds.
    const MAX_KEEPALIVE_SECS: u64 = 32_767;
    let secs = |d: Duration| Duration::from_secs(d.as_secs().clamp(1, MAX_KEEPALIVE_SECS));
    let keepalive = TcpKeepalive::new()
        .with_time(secs(time))
        .with_interval(secs(timeout / PROBES))
        .with_retries(PROBES);
    let user_timeout = (time + timeout).min(Duration::from_millis(i32::MAX as u64));
    let socket = SockRef::from(socket);
    let keepalive = socket.set_tcp_keepalive(&keepalive);
    let user = socket.set_tcp_user_timeout(Some(user_timeout));
    keepalive.and(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected() -> (std::net::TcpListener, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener, stream)
    }

    #[test]
    fn tcp_keepalive_options_reach_the_socket() {
        let (_listener, stream) = connected();
        set_tcp_keepalive(&stream, Duration::from_secs(10), Duration::from_secs(6)).unwrap();
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(10));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(2));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(16)));
    }

    #[test]
    fn a_keepalive_longer_than_linux_allows_is_clamped_and_every_option_set() {
        let (_listener, stream) = connected();
        let day = Duration::from_secs(24 * 3600);
        set_tcp_keepalive(&stream, day, day).unwrap();
        let s = SockRef::from(&stream);
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(32_767));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(2 * day));
    }
}
