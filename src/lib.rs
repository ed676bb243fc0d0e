//! evetcd: a callback-style etcd v3 client for event loops (work in progress).
#![forbid(unsafe_code)]
