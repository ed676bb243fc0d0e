//! The TLS hook of the reactor: [`Secure`] is the TLS layer with the `tls` feature and an
//! empty type without it, so the reactor's turn reads the same either way.

use crate::endpoint::Endpoint;

#[cfg(feature = "tls")]
mod imp {
    use super::Endpoint;
    pub(crate) use crate::tls::connector::Connector;
    pub(crate) use crate::tls::layer::TlsLayer as Secure;

    /// The TLS side of a new connection to `endpoint`, or why there is none.
    pub(crate) fn start(
        connector: Option<&mut Connector>,
        endpoint: &Endpoint,
    ) -> Result<Box<Secure>, String> {
        match connector {
            Some(c) => c.connect(endpoint).map(Box::new),
            None => Err(format!("{endpoint}: TLS is not configured")),
        }
    }
}

#[cfg(not(feature = "tls"))]
mod imp {
    use super::Endpoint;

    /// Never made: without the feature no endpoint uses TLS (`Config` refuses them).
    #[derive(Debug)]
    pub(crate) enum Connector {}

    /// Never made (see [`Connector`]).
    #[derive(Debug)]
    pub(crate) enum Secure {}

    pub(crate) fn start(_: Option<&mut Connector>, e: &Endpoint) -> Result<Box<Secure>, String> {
        Err(format!("{e}: TLS support is not compiled in (feature `tls`)"))
    }

    #[allow(clippy::unused_self)]
    impl Secure {
        pub(crate) fn receive(
            &mut self,
            _: &[u8],
            _: &mut dyn FnMut(&[u8]),
        ) -> Result<bool, String> {
            match *self {}
        }
        pub(crate) fn ready(&self) -> Result<bool, String> {
            match *self {}
        }
        pub(crate) fn take_early(&mut self) -> Vec<u8> {
            match *self {}
        }
        pub(crate) fn heard(&self) -> bool {
            match *self {}
        }
        pub(crate) fn send(&mut self, _: &[u8]) -> usize {
            match *self {}
        }
        pub(crate) fn pending(&mut self) -> &[u8] {
            match *self {}
        }
        pub(crate) fn advance(&mut self, _: usize) {
            match *self {}
        }
        pub(crate) fn close(&mut self) {
            match *self {}
        }
    }
}

pub(crate) use imp::{start, Connector, Secure};
