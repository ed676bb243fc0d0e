//! Coordination recipes, with Go's `clientv3/concurrency` key layout and algorithms so that
//! an evetcd program, a Go program and etcdctl share one lock or one election: a
//! [`Session`] (a lease kept alive), a [`Mutex`], an [`Election`] and software
//! transactional memory ([`stm`]). Everything is callback-style and never blocks: each
//! step is a call whose callback starts the next.

mod election;
mod error;
mod keys;
mod mutex;
mod session;
mod stm;
mod wait;

pub use election::{Election, Observer};
pub use error::{Error, Lost};
pub use mutex::Mutex;
pub use session::{Session, SessionOptions};
pub use stm::{stm, stm_with, Isolation, Miss, Stm, StmOptions, Stop};
pub(crate) use wait::later;
pub use wait::Wait;
