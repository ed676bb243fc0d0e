//! Reading etcd's Prometheus metrics, to check server-side state (watch streams, watchers)
//! that the client API cannot show.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The value of the unlabelled metric `name` (a gauge or counter such as
/// `etcd_debugging_mvcc_watcher_total`), read from `http://<endpoint>/metrics` with a plain
/// HTTP/1.0 GET. Panics if the page cannot be fetched or does not have the metric.
pub fn metric(endpoint: &str, name: &str) -> f64 {
    let page = fetch(endpoint, "/metrics");
    let prefix = format!("{name} ");
    let value = page
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no metric {name} at http://{endpoint}/metrics"));
    value.trim().parse().unwrap_or_else(|e| panic!("metric {name} = {value:?}: {e}"))
}

/// Polls [`metric`] until it equals `want`, for server-side effects that happen after the
/// client has been told (e.g. etcd removes a watcher when it processes the cancel request,
/// which it never acknowledges in a way the caller can wait for). Panics with the last value
/// after `within`.
pub fn wait_for_metric(endpoint: &str, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = metric(endpoint, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metric {name} is {got}, expected {want} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The body of `GET path` on `endpoint`; panics unless the status is 200.
fn fetch(endpoint: &str, path: &str) -> String {
    let timeout = Some(Duration::from_secs(5));
    let mut s = TcpStream::connect(endpoint)
        .unwrap_or_else(|e| panic!("connecting to {endpoint} for metrics: {e}"));
    s.set_read_timeout(timeout).unwrap();
    s.set_write_timeout(timeout).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n")
        .unwrap_or_else(|e| panic!("sending GET {path} to {endpoint}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("reading GET {path} from {endpoint}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response from {endpoint}: {text:.200}"));
    let status = head.lines().next().unwrap_or("");
    assert!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET http://{endpoint}{path}: {status}"
    );
    body.to_owned()
}
