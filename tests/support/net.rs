//! Loopback ports and endpoints for tests.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// A loopback port that was free a moment ago and has not been handed out
/// before in this process.
///
/// Bind-and-drop leaves a window in which someone else may take the port;
/// remembering every port handed out closes it for members started
/// concurrently in this process (the kernel happily returns a just-released
/// port again). Ports are never returned to the pool so a stopped member can
/// restart on its old ports without another member having taken them.
pub(crate) fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut handed_out =
        HANDED_OUT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}")).port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// `127.0.0.1:PORT` where nothing listens, so connecting is refused at once.
pub fn refused_endpoint() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A listener that is never accepted from: the kernel completes the TCP
/// handshake (up to the backlog) but no byte is ever read or written, which
/// is how a hung server looks to a client. Listens as long as it is alive.
pub struct SilentListener {
    listener: TcpListener,
}

impl SilentListener {
    pub fn new() -> SilentListener {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"));
        SilentListener { listener }
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        let addr = self.listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        format!("127.0.0.1:{}", addr.port())
    }
}

impl Default for SilentListener {
    fn default() -> Self {
        Self::new()
    }
}
