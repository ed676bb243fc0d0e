//! Async forms of the recipes' session calls (feature `futures`), resolved by their
//! callbacks as the client's are.

use super::{call, kick, CallFuture};
use crate::concurrency::{Error, Session, SessionOptions};
use crate::Client;

impl Session {
    /// [`Session::new`] as a future (feature `futures`). Dropped before it resolves, the
    /// session it would have given is dropped too (its lease then expires after its TTL).
    pub fn new_async(client: &Client, options: SessionOptions) -> CallFuture<Session, Error> {
        let future = call(|done| Session::new(client, options, done));
        kick(client);
        future
    }

    /// [`Session::close`] as a future (feature `futures`): revokes the session's lease.
    pub fn close_async(&self) -> CallFuture<(), Error> {
        let future = call(|done| self.close(done));
        kick(self.client());
        future
    }
}
