//! The fault-injecting TCP proxy of `evetcd::testing`, started with a panic instead of an
//! error.

use std::net::SocketAddr;
use std::ops::Deref;

use evetcd::testing;
pub use evetcd::testing::Mode;

/// A [`testing::Proxy`] (which it derefs to).
pub struct Proxy(testing::Proxy);

impl Proxy {
    /// See [`testing::Proxy::start`].
    pub fn start(target: SocketAddr) -> Proxy {
        Proxy(testing::Proxy::start(target).unwrap_or_else(|e| panic!("starting a proxy: {e}")))
    }

    /// See [`testing::Proxy::endpoint`] (here too for `Proxy::endpoint` paths).
    pub fn endpoint(&self) -> String {
        self.0.endpoint()
    }

    /// See [`testing::Proxy::accepted`] (here too for `Proxy::accepted` paths).
    pub fn accepted(&self) -> usize {
        self.0.accepted()
    }
}

impl Deref for Proxy {
    type Target = testing::Proxy;

    fn deref(&self) -> &testing::Proxy {
        &self.0
    }
}
