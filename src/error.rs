//! The one public error type, and the gRPC status codes it carries.
//!
//! Every failure reaches the caller as an [`EtcdError`] through the operation's callback: a
//! status the server sent, or a local failure mapped onto the gRPC code that says the same
//! thing (connect failure → `UNAVAILABLE`, deadline → `DEADLINE_EXCEEDED`, bad argument →
//! `INVALID_ARGUMENT`, undecodable response → `INTERNAL`).

use std::fmt;

/// A gRPC status code (see `grpc/doc/statuscodes.md`); etcd reports every error as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled (by the caller, or a watch by the server).
    Cancelled = 1,
    /// An error the server did not classify, or a code this client does not know.
    Unknown = 2,
    /// The request was malformed or not allowed in the current state.
    InvalidArgument = 3,
    /// The deadline expired before the operation completed.
    DeadlineExceeded = 4,
    /// A lease, member, user or role does not exist.
    NotFound = 5,
    /// The entity to create exists already.
    AlreadyExists = 6,
    /// The caller lacks the permission.
    PermissionDenied = 7,
    /// A quota or rate limit was hit ("too many requests", "database space exceeded").
    ResourceExhausted = 8,
    /// The system is not in a state the operation needs.
    FailedPrecondition = 9,
    /// The operation was aborted, usually by a concurrency conflict.
    Aborted = 10,
    /// A revision outside the valid range (compacted or in the future).
    OutOfRange = 11,
    /// The server does not implement the method.
    Unimplemented = 12,
    /// An invariant broke, on the server or while decoding its response.
    Internal = 13,
    /// The service is unreachable or has no leader; usually transient.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request carries no valid credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a `grpc-status` number; numbers beyond 16 read as [`Code::Unknown`].
    pub fn from_i32(n: i32) -> Code {
        use Code::*;
        match n {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// The code's number on the wire.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical upper-case name, e.g. `"UNAVAILABLE"`.
    pub fn name(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed operation: the gRPC status, the server's (percent-decoded) message and the
/// operation that failed.
///
/// `Clone`, so that one connection failure can be handed to every pending call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct EtcdError {
    code: Code,
    message: String,
    operation: &'static str,
    compact_revision: i64,
    /// Set for operations whose failure must never be retried as is (lock, campaign).
    no_retry: bool,
}

impl EtcdError {
    /// An error with `code` and `message` for `operation` (a client method name, e.g. `"put"`).
    pub fn new(code: Code, message: impl Into<String>, operation: &'static str) -> EtcdError {
        EtcdError { code, message: message.into(), operation, compact_revision: 0, no_retry: false }
    }

    /// A watch cancelled because its start revision was compacted away.
    pub fn compacted(compact_revision: i64, message: impl Into<String>) -> EtcdError {
        EtcdError {
            code: Code::Cancelled,
            message: message.into(),
            operation: "watch",
            compact_revision,
            no_retry: false,
        }
    }

    /// The same error, never retryable: a lock or campaign may still be acquired on the
    /// server after its call failed, so it must be retried with a fresh lease, not as is.
    pub(crate) fn not_retryable(mut self) -> EtcdError {
        self.no_retry = true;
        self
    }

    /// The same error, told as `operation`'s.
    pub(crate) fn with_operation(mut self, operation: &'static str) -> EtcdError {
        self.operation = operation;
        self
    }

    pub(crate) fn invalid(message: impl Into<String>, operation: &'static str) -> EtcdError {
        EtcdError::new(Code::InvalidArgument, message, operation)
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The status code's canonical name, e.g. `"DEADLINE_EXCEEDED"`.
    pub fn code_name(&self) -> &'static str {
        self.code.name()
    }

    /// The server's message (percent-decoded), or a description of the local failure.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The client method that failed, e.g. `"get"`, `"txn"`, `"watch"`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// For a watch whose start revision was compacted: the compaction revision (re-list at or
    /// after it). `None` for every other error.
    pub fn compact_revision(&self) -> Option<i64> {
        (self.compact_revision > 0).then_some(self.compact_revision)
    }

    /// Whether the failure is transient, so that the same request may succeed later:
    /// `UNAVAILABLE`, `ABORTED`, `DEADLINE_EXCEEDED`, and `RESOURCE_EXHAUSTED` only for
    /// etcd's "too many requests" (never for "database space exceeded").
    ///
    /// Transient is not "had no effect": a write whose deadline passed may still be applied.
    pub fn is_retryable(&self) -> bool {
        if self.no_retry {
            return false;
        }
        match self.code {
            Code::Unavailable | Code::Aborted | Code::DeadlineExceeded => true,
            Code::ResourceExhausted => self.message.contains("too many requests"),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_numbers_read_as_unknown() {
        for n in 0..=16 {
            assert_eq!(Code::from_i32(n).as_i32(), n);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::Unavailable.name(), "UNAVAILABLE");
    }

    #[test]
    fn retryable_follows_the_status_and_etcds_message() {
        let e = |c, m| EtcdError::new(c, m, "put");
        assert!(e(Code::Unavailable, "etcdserver: no leader").is_retryable());
        assert!(e(Code::DeadlineExceeded, "deadline").is_retryable());
        assert!(e(Code::Aborted, "").is_retryable());
        assert!(e(Code::ResourceExhausted, "etcdserver: too many requests").is_retryable());
        assert!(!e(Code::ResourceExhausted, "mvcc: database space exceeded").is_retryable());
        assert!(!e(Code::Internal, "").is_retryable());
        assert!(!e(Code::InvalidArgument, "").is_retryable());
    }

    #[test]
    fn display_names_operation_code_and_message() {
        let err = EtcdError::new(Code::NotFound, "etcdserver: requested lease not found", "get");
        assert_eq!(err.to_string(), "get: NOT_FOUND: etcdserver: requested lease not found");
        assert_eq!(err.compact_revision(), None);
        assert_eq!(EtcdError::compacted(42, "compacted").compact_revision(), Some(42));
    }
}
