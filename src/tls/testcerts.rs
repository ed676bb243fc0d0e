//! Certificates made at test time with rcgen (ring): a CA, a server certificate with the SANs
//! 127.0.0.1, ::1 and localhost, client certificates named by their CN, an unrelated second
//! CA, and the odd ones (expired, for another name). Used by unit tests and, through
//! `#[path]`, by the end-to-end tests; it refers to nothing of the crate.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A certificate authority that can issue certificates.
pub struct Authority {
    cert: Certificate,
    key: KeyPair,
    pub cert_pem: String,
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let cert_pem = cert.pem();
        Authority { cert, key, cert_pem }
    }

    /// A certificate for `sans` (IP literals become IP SANs), named `cn`, good for server
    /// and client use, valid from yesterday for a year unless `expired`.
    pub fn issue(&self, cn: &str, sans: &[&str], expired: bool) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        self.issue_for_key(cn, sans, expired, &key, key.serialize_pem())
    }

    /// As [`issue`](Self::issue) for a given key, whose PEM (in any format) is `key_pem`.
    pub fn issue_for_key(
        &self,
        cn: &str,
        sans: &[&str],
        expired: bool,
        key: &KeyPair,
        key_pem: String,
    ) -> Issued {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let at = |secs: i64| {
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs as u64)
        };
        if expired {
            params.not_before = at(now - 30 * 86400);
            params.not_after = at(now - 86400);
        } else {
            params.not_before = at(now - 86400);
            params.not_after = at(now + 365 * 86400);
        }
        let cert = params.signed_by(key, &self.cert, &self.key).expect("sign leaf");
        Issued { cert_pem: cert.pem(), key_pem }
    }
}

/// The certificates of one test setup.
pub struct Pki {
    pub ca: Authority,
    /// SANs 127.0.0.1, ::1, localhost.
    pub server: Issued,
    /// CN `root`.
    pub client: Issued,
    /// An unrelated CA, trusted by nobody.
    pub other_ca: Authority,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Authority::new("evetcd test CA");
        let server = ca.issue("etcd", &["127.0.0.1", "::1", "localhost"], false);
        let client = ca.issue("root", &[], false);
        Pki { ca, server, client, other_ca: Authority::new("evetcd unrelated CA") }
    }

    /// A client certificate whose key is PKCS#1 (`RSA PRIVATE KEY`).
    pub fn rsa_pkcs1_client(&self, cn: &str) -> Issued {
        let key = KeyPair::from_pem_and_sign_algo(RSA_PKCS8, &rcgen::PKCS_RSA_SHA256)
            .expect("fixture RSA key");
        self.ca.issue_for_key(cn, &[], false, &key, RSA_PKCS1.to_string())
    }

    /// A client certificate whose key is SEC1 (`EC PRIVATE KEY`).
    pub fn ec_sec1_client(&self, cn: &str) -> Issued {
        let key = KeyPair::from_pem(EC_PKCS8).expect("fixture EC key");
        self.ca.issue_for_key(cn, &[], false, &key, EC_SEC1.to_string())
    }

    pub fn rsa_pkcs1_key_pem(&self) -> String {
        RSA_PKCS1.to_string()
    }

    pub fn ec_sec1_key_pem(&self) -> String {
        EC_SEC1.to_string()
    }
}

// Fixed keys: ring cannot generate RSA keys, nor write SEC1. Test fixtures only.
const RSA_PKCS1: &str = r"-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA63b5QARrql+pwkufRASXrJX3k+othXI8TO1MfEoIaYNkypX9
xDZmqpXnsIUVrLwY3yKNQkNo2xkurc9s4qNYFgpSTMHfwx2O+Ud8g35Tssg1JBwR
7lv4tBJTDRQWysapqJsGVgqJrwXaXggDu/8m7QNIiMgIBLr+YTS8oWxBwaqtzWqY
m1vKpx5ch5fZcPVupX0dBPjHBIViaVX0AJqO556ygjAhRpQBeV9N+QR8+7lJ2C2N
+K1GeN9fl1iTqPuyXBz4tGd4kEuLuOe5gxDyH6w930J7VN4P1YM/UydBnhBDNe41
NwdZDe15FFEs95LThVPZifV4a1CfQFBxoLKREQIDAQABAoIBAA7xeihbv3YiDmok
FiOhGPvHzrJb78SizHyN/hx7Lvp8mhEYoMYVimwetFlUW4eerli8NB51nGTJ6IJO
V4OF80lUIVykBy6LpIRhyt9QzUCw37J+zOKFgrdG3G9y4W7ABIoMle6Fn670Xk3j
u1JF2J4SZxrgevsgij6is//t7g8QxeWPOSKC8gRFp8PiGBfQK/mLjOL6i6+JF1qK
LOwMDP/pKalRc/0gFpy3ZvYSZEDUYxbFwps2Nz5XCo+mLA/SyuQmXx2UtmFereq8
KkJnGbCNQ/pPZddHDJ2JzMDc2FhYhTMlw/qs/1CIvvwztbiZor2kGJtmNH7xmSKV
t4GoBEMCgYEA/g5OGFs6UY1MTLn9chEwmfKZ5gExktvNMffjNHoSA2/DO8rT826d
QpRqQhEQacqEDhn6dsl6uDhmdrAmm8OZfD4rsRYa/V4UIcm/TvLr5x2V4bQzHKgX
r+VQEk8pV1pfX/zAOIRpnwgG7imMa+7QUK/MMaNGNZ5F/I09TRkA5McCgYEA7UQ/
onAS6iAhEfR9y157A4PsOd1lJ0o6I9kT1DQBdV0Sm9pivGFR6IZkz9Lm33H2A/U2
+ckLXF8rKr2P7uOt77oXSALXoSMcwUJw+Yf3kmE3g3lW/DFvElE9bTacf4iqus4Q
GK0ZN/l77Nua1RnpF7qciX7MZsSqM3yKJUGGU2cCgYEAwZYA6ApLy+yRIT3v48U5
dXUo09xA/BjEqLisxkXmB/xXle4dxzaYWi1hMmpySUppiZ09/tnTyyAe432iTbqj
78on3M5tTncre/uQ7QWpv/gJR2zaLZHgSsW/V9Q+OjPAzRF5Hxe2q9mf/kZmm6/j
yDfMrl4tl5m81o6BEYhl5+0CgYBOt5jhHIu572TpXxMpGLR5Sxhhbkl0CpVVdVy1
x3dAZ9uXp5GgbC1Plt71cEQ2l8mGMKHHp2LEh7J7oJ6TJCh942B7/K1rgYm1uIRg
1TJW9zgCv4wTaZcvHZLim/659S6ngVwnw64dOwFZaNZqowkJXVk36MCJy++n20a9
64pUOwKBgQDzLn6NguXQt5hT6KarpQcGMBZC8EAD881WWw1Z/e54denYAbxnpqZk
JO/LY2r54xHs/haG0JewbR7XmEKGNGHW9yorojYcyNfJb2f8nCYf+WbjSkGLFaZD
0qjHNWx1l0OWJYtOZ8fQ7QQtgFuUnzNZ2fT7ZgTxkqZrIZAGe6zW8g==
-----END RSA PRIVATE KEY-----
";
const RSA_PKCS8: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDrdvlABGuqX6nC
S59EBJeslfeT6i2FcjxM7Ux8Sghpg2TKlf3ENmaqleewhRWsvBjfIo1CQ2jbGS6t
z2zio1gWClJMwd/DHY75R3yDflOyyDUkHBHuW/i0ElMNFBbKxqmomwZWComvBdpe
CAO7/ybtA0iIyAgEuv5hNLyhbEHBqq3NapibW8qnHlyHl9lw9W6lfR0E+McEhWJp
VfQAmo7nnrKCMCFGlAF5X035BHz7uUnYLY34rUZ431+XWJOo+7JcHPi0Z3iQS4u4
57mDEPIfrD3fQntU3g/Vgz9TJ0GeEEM17jU3B1kN7XkUUSz3ktOFU9mJ9XhrUJ9A
UHGgspERAgMBAAECggEADvF6KFu/diIOaiQWI6EY+8fOslvvxKLMfI3+HHsu+nya
ERigxhWKbB60WVRbh56uWLw0HnWcZMnogk5Xg4XzSVQhXKQHLoukhGHK31DNQLDf
sn7M4oWCt0bcb3LhbsAEigyV7oWfrvReTeO7UkXYnhJnGuB6+yCKPqKz/+3uDxDF
5Y85IoLyBEWnw+IYF9Ar+YuM4vqLr4kXWoos7AwM/+kpqVFz/SAWnLdm9hJkQNRj
FsXCmzY3PlcKj6YsD9LK5CZfHZS2YV6t6rwqQmcZsI1D+k9l10cMnYnMwNzYWFiF
MyXD+qz/UIi+/DO1uJmivaQYm2Y0fvGZIpW3gagEQwKBgQD+Dk4YWzpRjUxMuf1y
ETCZ8pnmATGS280x9+M0ehIDb8M7ytPzbp1ClGpCERBpyoQOGfp2yXq4OGZ2sCab
w5l8PiuxFhr9XhQhyb9O8uvnHZXhtDMcqBev5VASTylXWl9f/MA4hGmfCAbuKYxr
7tBQr8wxo0Y1nkX8jT1NGQDkxwKBgQDtRD+icBLqICER9H3LXnsDg+w53WUnSjoj
2RPUNAF1XRKb2mK8YVHohmTP0ubfcfYD9Tb5yQtcXysqvY/u463vuhdIAtehIxzB
QnD5h/eSYTeDeVb8MW8SUT1tNpx/iKq6zhAYrRk3+Xvs25rVGekXupyJfsxmxKoz
fIolQYZTZwKBgQDBlgDoCkvL7JEhPe/jxTl1dSjT3ED8GMSouKzGReYH/FeV7h3H
NphaLWEyanJJSmmJnT3+2dPLIB7jfaJNuqPvyifczm1Odyt7+5DtBam/+AlHbNot
keBKxb9X1D46M8DNEXkfF7ar2Z/+Rmabr+PIN8yuXi2XmbzWjoERiGXn7QKBgE63
mOEci7nvZOlfEykYtHlLGGFuSXQKlVV1XLXHd0Bn25enkaBsLU+W3vVwRDaXyYYw
ocenYsSHsnugnpMkKH3jYHv8rWuBibW4hGDVMlb3OAK/jBNply8dkuKb/rn1LqeB
XCfDrh07AVlo1mqjCQldWTfowInL76fbRr3rilQ7AoGBAPMufo2C5dC3mFPopqul
BwYwFkLwQAPzzVZbDVn97nh16dgBvGempmQk78tjavnjEez+FobQl7BtHteYQoY0
Ydb3KiuiNhzI18lvZ/ycJh/5ZuNKQYsVpkPSqMc1bHWXQ5Yli05nx9DtBC2AW5Sf
M1nZ9PtmBPGSpmshkAZ7rNby
-----END PRIVATE KEY-----
";
const EC_SEC1: &str = r"-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIKUy3Lmle5YGzMTNQg09W6aknAlGLCPoiWel9wtESpF0oAoGCCqGSM49
AwEHoUQDQgAEZmsbJiEn3txjf6tz/qPoqzwt75HZrqVg09DQhFL7vqOJI8MTeixt
Z00pMZj2rpYB17H96G2HqK5eje59vOVdIg==
-----END EC PRIVATE KEY-----
";
const EC_PKCS8: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgpTLcuaV7lgbMxM1C
DT1bpqScCUYsI+iJZ6X3C0RKkXShRANCAARmaxsmISfe3GN/q3P+o+irPC3vkdmu
pWDT0NCEUvu+o4kjwxN6LG1nTSkxmPaulgHXsf3obYeorl6N7n285V0i
-----END PRIVATE KEY-----
";
