//! How etcdctl (Go 1.16) reads certificate, key and CA files before it dials, with its
//! error wording: `os.ReadFile`'s `open PATH: ...` and `read PATH: ...`, the PEM block checks
//! of `tls.X509KeyPair`, `x509.CertPool` filling, and Go's system roots on Linux. Parsing the
//! DER inside the blocks is left to the client (`Client::new` names what it could not use).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

/// `os.ReadFile(path)`, failing as Go words it.
pub fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let mut file = File::open(path).map_err(|e| format!("open {path}: {}", errno(&e)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| format!("read {path}: {}", errno(&e)))?;
    Ok(bytes)
}

/// Go's `syscall.Errno` text: the C library's, without Rust's ` (os error N)`, lower case.
fn errno(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// The type of every PEM block in `bytes`, in order, as `pem.Decode` finds them: a
/// `-----BEGIN T-----` line closed by its `-----END T-----` line (an unclosed one is skipped).
pub fn block_types(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().map(str::trim_end);
    let mut types = Vec::new();
    while let Some(line) = lines.next() {
        let Some(kind) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {kind}-----");
        if lines.clone().any(|l| l == end) {
            lines.find(|l| *l == end);
            types.push(kind.to_string());
        }
    }
    types
}

/// `tls.X509KeyPair`'s checks of the blocks it is given: a `CERTIFICATE` in the certificate
/// input, then a `PRIVATE KEY` (of any kind) in the key input.
pub fn check_key_pair(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let skipped = block_types(cert);
    if !skipped.iter().any(|t| t == "CERTIFICATE") {
        return Err(match &skipped[..] {
            [] => "tls: failed to find any PEM data in certificate input".to_string(),
            [one] if one.ends_with("PRIVATE KEY") => {
                "tls: failed to find certificate PEM data \
                in certificate input, but did find a private key; PEM inputs may have been switched"
                    .to_string()
            }
            _ => format!(
                "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after \
                 skipping PEM blocks of the following types: [{}]",
                skipped.join(" ")
            ),
        });
    }
    let types = block_types(key);
    let is_key = |t: &String| t == "PRIVATE KEY" || t.ends_with(" PRIVATE KEY");
    let skipped = &types[..types.iter().position(is_key).unwrap_or(types.len())];
    match skipped {
        _ if types.iter().any(is_key) => Ok(()),
        [] => Err("tls: failed to find any PEM data in key input".to_string()),
        [one] if one == "CERTIFICATE" => {
            Err("tls: found a certificate rather than a key in the PEM for the private key"
                .to_string())
        }
        _ => Err(format!(
            "tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input \
             after skipping PEM blocks of the following types: [{}]",
            skipped.join(" ")
        )),
    }
}

/// What a CA file gives `x509.CertPool`: every block is parsed as a certificate, so any
/// other block fails (Go's message is the ASN.1 parser's; this one says what is wrong), and
/// a file without blocks gives an empty pool, which no server certificate chains to.
pub enum Pool {
    Certificates,
    Empty,
}

/// Checks the CA file at `path` (already read as `bytes`).
pub fn check_ca(path: &str, bytes: &[u8]) -> Result<Pool, String> {
    let types = block_types(bytes);
    if let Some(other) = types.iter().find(|t| *t != "CERTIFICATE") {
        return Err(format!("x509: {path}: a {other} PEM block is not a certificate"));
    }
    Ok(if types.is_empty() { Pool::Empty } else { Pool::Certificates })
}

/// The file Go takes its system roots from on Linux: `$SSL_CERT_FILE`, else the first of
/// its list that can be read. (Go also reads every file of `/etc/ssl/certs` or
/// `$SSL_CERT_DIR`; this example does not.) `None`: no file, an empty pool.
pub fn system_roots() -> Option<PathBuf> {
    const FILES: [&str; 6] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    let files = match std::env::var("SSL_CERT_FILE") {
        Ok(file) if !file.is_empty() => vec![file],
        _ => FILES.iter().map(|f| f.to_string()).collect(),
    };
    let bytes_and_path = files.into_iter().find_map(|f| read_file(&f).ok().map(|b| (b, f)))?;
    let (bytes, path) = bytes_and_path;
    block_types(&bytes).iter().any(|t| t == "CERTIFICATE").then(|| PathBuf::from(path))
}

/// A CA certificate whose private key was thrown away when it was made: trusting only it
/// is trusting no server, which is what Go does with an empty pool.
pub const NOBODY_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUGap0XWTdJ0BbeZtraMhh05g/d2cwCgYIKoZIzj0EAwIw
LDEqMCgGA1UEAwwhZXRjZGN0bCBleGFtcGxlOiB0cnVzdHMgbm8gc2VydmVyMCAX
DTI2MTIwNTAwMTI1OVoYDzIxMjYxMTExMDAxMjU5WjAsMSowKAYDVQQDDCFldGNk
Y3RsIGV4YW1wbGU6IHRydXN0cyBubyBzZXJ2ZXIwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAS+uJw/wTR7u06Oneczqy4U0M7EzzMiNmBM7ZDAVKdGfvGEvMRhIRZz
AI/7wvldwc8HnCa7yzNfxTFzlrFiObbVo1MwUTAdBgNVHQ4EFgQUSIYDCj0lGuLV
U2x9iTkFKpFPLpIwHwYDVR0jBBgwFoAUSIYDCj0lGuLVU2x9iTkFKpFPLpIwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiAgJPAjzty8QbgOuyNLzwg7
sqrTucKFM4U0Uo0CEOKkywIhAIxP6jbBF2P8VGNgyWuBGjDOjaMnBeOrDgjSGx3Q
P0w6
-----END CERTIFICATE-----
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_and_key_pair_checks_word_errors_as_go() {
        let cert = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let key = b"x\n-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(block_types(cert), ["CERTIFICATE"]);
        assert_eq!(block_types(b"-----BEGIN X-----\nAA==\n"), Vec::<String>::new());
        assert!(check_key_pair(cert, key).is_ok());
        assert!(check_key_pair(key, cert).unwrap_err().contains("may have been switched"));
        assert!(check_key_pair(cert, cert).unwrap_err().contains("found a certificate rather"));
        assert!(check_key_pair(b"", key).unwrap_err().ends_with("in certificate input"));
        assert!(check_key_pair(cert, b"").unwrap_err().ends_with("any PEM data in key input"));
        assert_eq!(errno(&std::io::Error::from_raw_os_error(2)), "no such file or directory");
    }
}
