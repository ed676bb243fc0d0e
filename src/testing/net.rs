//! Loopback ports and endpoints.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use super::Error;

/// A loopback port that was free a moment ago and has not been handed out before in this
/// process.
///
/// Bind-and-drop leaves a window in which another process may take the port (members that
/// then fail with "address already in use" are started again on fresh ports). Remembering
/// every port handed out closes it for members started concurrently in this process (the
/// kernel happily returns a just-released port again). Ports are never handed out twice, so
/// a stopped member can restart on its old ports without another member having taken them.
pub fn free_port() -> Result<u16, Error> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut handed_out =
        HANDED_OUT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
        let port = listener.local_addr().map_err(|e| Error::io("local_addr", e))?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}

/// `127.0.0.1:PORT` where nothing listens, so connecting is refused at once.
pub fn refused_endpoint() -> Result<String, Error> {
    Ok(format!("127.0.0.1:{}", free_port()?))
}
