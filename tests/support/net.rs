//! Loopback endpoints for tests: `evetcd::testing`'s, and a listener that never answers.

use std::net::{Ipv4Addr, TcpListener};

/// `127.0.0.1:PORT` where nothing listens, so connecting is refused at once.
pub fn refused_endpoint() -> String {
    evetcd::testing::refused_endpoint().unwrap_or_else(|e| panic!("{e}"))
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
