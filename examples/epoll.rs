//! evetcd in a raw `epoll(7)` loop that also serves a UDP socket: a tiny command front end
//! to etcd. A helper thread (standing in for a remote peer) sends one command at a time and
//! waits for its reply; the loop reads the command from its socket, starts the etcd call, and
//! replies from the call's callback. Socket events and client callbacks alternate in one
//! thread, with one `epoll_wait` whose timeout comes from `next_timeout()`.
//!
//! `cargo run --example epoll -- [ENDPOINT]` (default `127.0.0.1:2379`).

use evetcd::{Client, Config, DeleteOptions, EtcdError, GetOptions, PutOptions};
use std::cell::Cell;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

/// What the peer sends, in order; it sends the next only once the previous one is answered.
const COMMANDS: [&str; 5] =
    ["put epoll/a 1", "put epoll/b 2", "get epoll/", "delete epoll/", "quit"];

/// epoll's data for each fd.
const CLIENT: u64 = 1;
const SOCKET: u64 = 2;

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:2379".into());
    let client = Client::new(Config::new().endpoints([endpoint.clone()])).expect("config");
    println!("epoll example against {endpoint}");

    let socket = Rc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
    socket.set_nonblocking(true).expect("non-blocking");
    let peer = spawn_peer(socket.local_addr().expect("address"));

    let epoll = Epoll::new();
    epoll.add(client.as_raw_fd(), CLIENT); // the client's epoll fd: readable when it has news
    epoll.add(socket.as_raw_fd(), SOCKET);

    let quit = Cell::new(false);
    let mut buf = [0u8; 1500];
    // Until the peer said quit and every call it started has called back.
    while !(quit.get() && client.is_idle()) {
        // Re-read after every process() and after starting operations (the commands below).
        let timeout = client.next_timeout();
        for token in epoll.wait(timeout) {
            if token == SOCKET {
                // Level-triggered, but read until WouldBlock all the same.
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let command = String::from_utf8_lossy(&buf[..n]).into_owned();
                    println!("udp <- {command}");
                    let reply = Reply { socket: socket.clone(), to: from };
                    serve(&client, &command, reply, &quit);
                }
            }
        }
        // Whatever woke us (the client's fd, its timeout, or the socket): one non-blocking
        // turn, which runs the client's due callbacks here, on this thread.
        client.process();
    }
    peer.join().expect("the peer got every reply");
    println!(
        "done: the peer got {} replies; client idle: {}",
        COMMANDS.len() - 1,
        client.is_idle()
    );
}

/// Where a command's answer goes: sent from the etcd call's callback.
struct Reply {
    socket: Rc<UdpSocket>,
    to: std::net::SocketAddr,
}

impl Reply {
    fn send(self, text: String) {
        println!("udp -> {text}");
        self.socket.send_to(text.as_bytes(), self.to).expect("reply");
    }

    fn failed(self, e: EtcdError) {
        eprintln!("etcd call failed: {e} (is etcd running at that endpoint?)");
        self.send(format!("error {e}"));
    }
}

/// Starts the etcd call a command asks for; its callback prints and replies.
fn serve(client: &Client, command: &str, reply: Reply, quit: &Cell<bool>) {
    let words: Vec<&str> = command.split(' ').collect();
    match words[..] {
        ["put", key, value] => {
            let key = key.to_string();
            client.put(key.clone(), value.to_string(), PutOptions::new(), move |res| match res {
                Ok(put) => {
                    let revision = put.header.map_or(0, |h| h.revision);
                    println!("etcd: put {key} at revision {revision}");
                    reply.send(format!("OK {revision}"));
                }
                Err(e) => reply.failed(e),
            })
        }
        ["get", prefix] => {
            client.get(prefix.to_string(), GetOptions::new().prefix(true), |res| match res {
                Ok(got) => {
                    println!("etcd: get: {} keys", got.count);
                    let kvs = got.kvs.iter().map(|kv| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(&kv.key),
                            String::from_utf8_lossy(&kv.value)
                        )
                    });
                    reply.send(kvs.collect::<Vec<_>>().join(" "));
                }
                Err(e) => reply.failed(e),
            })
        }
        ["delete", prefix] => {
            client.delete(prefix.to_string(), DeleteOptions::new().prefix(true), |res| match res {
                Ok(del) => {
                    println!("etcd: deleted {} keys", del.deleted);
                    reply.send(format!("deleted {}", del.deleted));
                }
                Err(e) => reply.failed(e),
            })
        }
        ["quit"] => quit.set(true),
        _ => reply.send(format!("unknown command {command:?}")),
    }
}

/// The peer: sends each command and waits (at most 10 s) for its reply before the next.
fn spawn_peer(server: std::net::SocketAddr) -> std::thread::JoinHandle<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the peer");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for command in COMMANDS {
            socket.send_to(command.as_bytes(), server).expect("send");
            if command != "quit" {
                let (n, _) = socket.recv_from(&mut buf).expect("a reply within 10 s");
                assert!(!buf[..n].starts_with(b"error"), "{}", String::from_utf8_lossy(&buf[..n]));
            }
        }
    })
}

/// The few epoll calls the loop needs. libc's epoll functions are `unsafe`: each call below
/// passes an fd this program owns and a buffer of the length it states.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> Epoll {
        // SAFETY: no pointers; a negative result is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
        Epoll(fd)
    }

    /// Watches `fd` for readability, level-triggered, reporting `token`.
    fn add(&self, fd: RawFd, token: u64) {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut event) };
        assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    /// Waits at most `timeout` (`None`: without limit; rounded up to whole milliseconds, so
    /// the client's timers are due when it returns) and returns the tokens of ready fds.
    fn wait(&self, timeout: Option<Duration>) -> Vec<u64> {
        let ms =
            timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `events` holds 8 entries, and the kernel writes at most that many.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), 8, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "epoll_wait: {e}");
            return Vec::new();
        }
        events[..n as usize].iter().map(|e| e.u64).collect()
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}
