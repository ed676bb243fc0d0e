//! etcdctl 3.5.1's transport security flags, read as it reads them (`ctlv3/command/global.go`
//! and clientv3's endpoint rules):
//!
//! - `--cacert`, `--cert`, `--key`, `--insecure-transport` (default true) and
//!   `--insecure-skip-tls-verify`, each also from `ETCDCTL_<NAME>` when not given. An empty
//!   variable counts as unset; a boolean that does not parse counts as false (pflag sets it
//!   before failing, and etcdctl ignores the failure). A variable present along with its
//!   flag is fatal: a JSON log line and exit 1, before anything else is checked.
//! - An empty `--cert=`, `--key=` or `--cacert=` fails (exit 128), as do `--cert` without
//!   `--key` (and the reverse) and any file that cannot be read or holds the wrong PEM
//!   blocks: Go's messages, the key pair first, then the CA.
//! - TLS is configured when any of the three files is given or `--insecure-transport=false`;
//!   `--insecure-skip-tls-verify` only loosens that configuration, never turns it on. Without
//!   `--cacert` the server is checked against Go's system roots.
//! - An endpoint without a scheme uses TLS exactly when it is configured (so by default
//!   etcdctl speaks plaintext even to a TLS member); `https://` always does, with the system
//!   roots when nothing is configured.

use crate::args::{parse_go_bool, Args};
use crate::gopem::{self, Pool};
use crate::Failure;
use evetcd::Tls;

/// The five flags, after the environment.
pub struct TlsFlags {
    cacert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    insecure_transport: bool,
    skip_verify: bool,
}

/// etcdctl's flag names (in the order of `given` in [`TlsFlags::take`]).
const NAMES: [&str; 5] =
    ["cacert", "cert", "insecure-skip-tls-verify", "insecure-transport", "key"];

/// `flags.FlagToEnv("ETCDCTL", name)`.
fn env_name(flag: &str) -> String {
    format!("ETCDCTL_{}", flag.to_uppercase().replace('-', "_"))
}

impl TlsFlags {
    /// Takes the flags from `args`, then the environment for those not given.
    pub fn take(args: &mut Args) -> Result<TlsFlags, Failure> {
        let cacert = args.take_value("cacert");
        let cert = args.take_value("cert");
        let key = args.take_value("key");
        let skip_verify = args.take_given_bool("insecure-skip-tls-verify")?;
        let insecure_transport = args.take_given_bool("insecure-transport")?;
        let given = [
            cacert.is_some(),
            cert.is_some(),
            skip_verify.is_some(),
            insecure_transport.is_some(),
            key.is_some(),
        ];
        // verifyEnv: the first variable of the environment whose flag was given is fatal.
        for (var, _) in std::env::vars_os() {
            let conflict = NAMES.iter().zip(given).any(|(n, g)| g && var == *env_name(n));
            if conflict {
                return Err(Failure::log(format!(
                    "{{\"level\":\"fatal\",\"caller\":\"flags/flag.go:85\",\"msg\":\"conflicting \
                     environment variable is shadowed by corresponding command-line flag \
                     (either unset environment variable or disable flag))\",\
                     \"environment-variable\":\"{}\"}}",
                    var.to_string_lossy()
                )));
            }
        }
        let env = |name: &str| std::env::var(env_name(name)).ok().filter(|v| !v.is_empty());
        let env_bool = |name: &str| env(name).map(|v| parse_go_bool(&v).unwrap_or(false));
        Ok(TlsFlags {
            cacert: cacert.or_else(|| env("cacert")),
            cert: cert.or_else(|| env("cert")),
            key: key.or_else(|| env("key")),
            insecure_transport: insecure_transport
                .or_else(|| env_bool("insecure-transport"))
                .unwrap_or(true),
            skip_verify: skip_verify
                .or_else(|| env_bool("insecure-skip-tls-verify"))
                .unwrap_or(false),
        })
    }

    /// Fails on a file flag given empty (`keyAndCertFromCmd`).
    pub fn check_empty(&self) -> Result<(), Failure> {
        for (name, value) in [("cert", &self.cert), ("key", &self.key), ("cacert", &self.cacert)] {
            if value.as_deref() == Some("") {
                return Err(Failure::usage(format!("empty string is passed to --{name} option")));
            }
        }
        Ok(())
    }

    /// The TLS settings for a client of `endpoints`, `None` for plaintext (`newClientCfg`,
    /// then clientv3, where the first endpoint's scheme decides for all of them).
    pub fn client_tls(&self, endpoints: &[String]) -> Result<Option<Tls>, Failure> {
        let files = self.cert.is_some() || self.key.is_some() || self.cacert.is_some();
        if !files && self.insecure_transport {
            let first = endpoints.first().map(String::as_str).unwrap_or_default();
            let requires = first.starts_with("https://") || first.starts_with("unixs://");
            // clientv3's credentials for `https://` with none configured: the system roots.
            return Ok(requires.then(|| with_roots(Tls::new(), None)));
        }
        let mut tls = Tls::new();
        if let Some((cert, key)) = self.key_pair()? {
            tls = tls.identity_files(cert, key);
        }
        let pool = match &self.cacert {
            None => None,
            Some(path) => {
                let bytes = gopem::read_file(path).map_err(Failure::usage)?;
                Some((path.as_str(), gopem::check_ca(path, &bytes).map_err(Failure::usage)?))
            }
        };
        if self.skip_verify {
            // Any certificate goes: the CA was read only to fail as Go fails.
            return Ok(Some(tls.danger_accept_invalid_certs()));
        }
        Ok(Some(with_roots(tls, pool)))
    }

    /// `--cert` and `--key`, read and checked as `tls.LoadX509KeyPair` does.
    fn key_pair(&self) -> Result<Option<(&str, &str)>, Failure> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert.as_str(), key.as_str()),
            (cert, key) => {
                return Err(Failure::usage(format!(
                    "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                    key.as_deref().unwrap_or_default(),
                    cert.as_deref().unwrap_or_default()
                )))
            }
        };
        let cert_pem = gopem::read_file(cert).map_err(Failure::usage)?;
        let key_pem = gopem::read_file(key).map_err(Failure::usage)?;
        gopem::check_key_pair(&cert_pem, &key_pem).map_err(Failure::usage)?;
        Ok(Some((cert, key)))
    }
}

/// `tls` trusting the CA file, or Go's system roots; an empty pool trusts no server.
fn with_roots(tls: Tls, pool: Option<(&str, Pool)>) -> Tls {
    match pool {
        Some((path, Pool::Certificates)) => tls.ca_file(path),
        Some((_, Pool::Empty)) => tls.ca_pem(gopem::NOBODY_CA),
        None => match gopem::system_roots() {
            Some(path) => tls.ca_file(path),
            None => tls.ca_pem(gopem::NOBODY_CA),
        },
    }
}

/// etcdctl's message for a TLS setting the client refused when it was created (exit 128,
/// as `newClientCfg` fails): Go's words where they are known.
pub fn refused(message: &str) -> Failure {
    if message.contains("the private key does not match the certificate") {
        return Failure::usage("tls: private key does not match public key");
    }
    Failure::usage(message)
}
