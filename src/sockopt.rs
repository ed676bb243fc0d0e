//! Socket options that mio does not offer, set through `libc::setsockopt`: the crate's only
//! unsafe code, kept to this file.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// TCP keepalive as a second line behind the HTTP/2 PINGs: probes after `time` idle, and
/// `TCP_USER_TIMEOUT` so that data left unacknowledged for `time + timeout` (a peer that
/// vanished while we were writing, where PINGs would queue behind the data) kills the
/// connection too.
///
/// Every option is tried even if one fails; the first failure is returned.
pub(crate) fn set_tcp_keepalive(fd: RawFd, time: Duration, timeout: Duration) -> io::Result<()> {
    // Linux refuses TCP_KEEPIDLE and TCP_KEEPINTVL above this many seconds.
    const MAX_KEEPALIVE_SECS: u64 = 32_767;
    let secs = |d: Duration| d.as_secs().clamp(1, MAX_KEEPALIVE_SECS) as libc::c_int;
    let probes: libc::c_int = 3;
    let interval = secs(timeout / probes as u32);
    let user_ms = (time + timeout).as_millis().min(i32::MAX as u128) as libc::c_int;
    let mut first_error = None;
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(time)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, probes),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user_ms),
    ];
    for (level, name, value) in options {
        // SAFETY: `fd` is a live socket (the caller's); the value is a c_int whose size
        // is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            first_error.get_or_insert_with(io::Error::last_os_error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// One socket option's value.
    fn get(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live socket, a c_int-sized out buffer.
        let rc = unsafe {
            libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0);
        v
    }

    #[test]
    fn tcp_keepalive_options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        set_tcp_keepalive(fd, Duration::from_secs(10), Duration::from_secs(6)).unwrap();
        assert_eq!(get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 10);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 2);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 16_000);
    }

    #[test]
    fn a_keepalive_longer_than_linux_allows_is_clamped_and_every_option_set() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        let day = Duration::from_secs(24 * 3600);
        set_tcp_keepalive(fd, day, day).unwrap();
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 32_767);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
        assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 172_800_000);
    }
}
