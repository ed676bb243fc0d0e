//! An etcdctl-compatible command line on the callback API: etcdctl v3's syntax, and its
//! default (simple) output byte for byte — `-w json` for get, put, del, member list and
//! endpoint status.
//!
//! ```text
//! cargo run --example etcdctl -- [--endpoints=a,b] [--user=u:p] [--dial-timeout=2s]
//!     [--command-timeout=5s] [-w simple|json] [--cacert=ca.crt] [--cert=c.crt --key=c.key]
//!     [--insecure-transport=false] [--insecure-skip-tls-verify] COMMAND [flags] [args]
//! ```
//!
//! Each command blocks on its calls with [`Ctx::wait`] (a nested `run()` of the one client):
//! a command line has nothing else to do meanwhile. Errors print as etcdctl prints them,
//! `Error: <message>` on stderr, with etcdctl's exit codes.

mod args;
mod auth;
mod cluster;
mod gopem;
mod gosyntax;
mod kv;
mod lease;
mod output;
mod tls;

use args::Args;
use evetcd::{Client, Config, EtcdError};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// etcdctl's exit codes.
pub const EXIT_ERROR: i32 = 1;
/// etcdctl cannot set up its client, which includes authenticating with `--user`.
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_BAD_ARGS: i32 = 128;

/// Why a command failed: the message etcdctl prints after `Error: `, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    pub kind: Kind,
}

/// How a failure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Error: <message>` on stderr.
    Error,
    /// A flag that does not parse: cobra reports it, then etcdctl again, so `Error:` twice
    /// (between them etcdctl prints the command's usage on stdout; this example has none).
    Flag,
    /// An unknown command: reported by cobra with a hint, then by etcdctl.
    UnknownCommand,
    /// A missing or unknown sub-command: etcdctl prints the command's help on stdout and
    /// exits 0; the message is this example's own short help.
    Help,
    /// A line of etcdctl's JSON log on stderr, without `Error:` (its fatal log exits 1).
    Log,
}

impl Failure {
    /// A failure with etcdctl's exit `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), kind: Kind::Error }
    }

    /// A flag that does not parse (exit 1, reported twice).
    pub fn flag(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_ERROR, message: message.into(), kind: Kind::Flag }
    }

    /// A command etcdctl does not have: cobra's error and hint, then etcdctl's error.
    pub fn unknown_command(command: &str) -> Failure {
        let message = format!("unknown command \"{command}\" for \"etcdctl\"");
        Failure { code: EXIT_ERROR, message, kind: Kind::UnknownCommand }
    }

    /// A command that needs a sub-command got none, or one it does not have: the
    /// sub-commands it has, on stdout, and exit 0, where etcdctl prints its help.
    pub fn help(command: &str, subcommands: &[&str]) -> Failure {
        let command = if command.is_empty() { String::new() } else { format!(" {command}") };
        let message = format!(
            "etcdctl{command} <subcommand> [flags]\n\nsubcommands: {}\n",
            subcommands.join(", ")
        );
        Failure { code: 0, message, kind: Kind::Help }
    }

    /// A fatal line of etcdctl's JSON log (exit 1, no `Error:`).
    pub fn log(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_ERROR, message: message.into(), kind: Kind::Log }
    }

    /// Wrong usage (exit 128).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_BAD_ARGS, message.into())
    }

    /// Any other failure (exit 1).
    pub fn error(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_ERROR, message.into())
    }
}

/// How the client words a failed Authenticate (made for `--user`) before the server's
/// message, which etcdctl prints alone.
pub const AUTH_FAILED: &str = "authentication failed: ";

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Failure {
        match e.message().strip_prefix(AUTH_FAILED) {
            // etcdctl authenticates while it sets up its client: exit 2.
            Some(server) => Failure::new(EXIT_BAD_CONNECTION, server.to_string()),
            None => Failure::error(etcdctl_message(&e)),
        }
    }
}

/// The message etcdctl shows for a client error: the server's text, or gRPC's wording for
/// the failures the client detects itself. etcdctl's gRPC dials in the background and keeps
/// retrying an endpoint it cannot reach until the call's deadline, so a refused or timed out
/// connection reads as the deadline; so does one it cannot secure (a TLS handshake that
/// fails: unknown CA, no client certificate) or that the server closes before speaking
/// HTTP/2 (plaintext sent to a TLS member), which gRPC keeps dialling again.
pub fn etcdctl_message(e: &EtcdError) -> String {
    let m = e.message();
    let local_connect_failure = e.code() == evetcd::Code::Unavailable
        && (m.starts_with("connect to ")
            || m.starts_with("resolve ")
            || m.starts_with("TLS handshake with ")
            || m.contains("then use https://"));
    if e.code() == evetcd::Code::DeadlineExceeded || local_connect_failure {
        return "context deadline exceeded".to_string();
    }
    m.to_string()
}

/// The commands, for the help printed when none is given.
const COMMANDS: [&str; 18] = [
    "alarm",
    "auth",
    "compaction",
    "defrag",
    "del",
    "elect",
    "endpoint",
    "get",
    "lease",
    "lock",
    "member",
    "move-leader",
    "put",
    "role",
    "snapshot",
    "txn",
    "user",
    "watch",
];

/// What every command gets: the client, the output format, the global settings.
pub struct Ctx {
    pub client: Client,
    /// The client's configuration, for commands that need a client per endpoint.
    pub config: Config,
    /// `-w json`.
    pub json: bool,
    pub endpoints: Vec<String>,
    pub command_timeout: Duration,
}

impl Ctx {
    /// Starts an operation and runs the client until its callback has run.
    pub fn wait<T: 'static>(
        &self,
        start: impl FnOnce(Box<dyn FnOnce(Result<T, EtcdError>)>),
    ) -> Result<T, EtcdError> {
        let slot: Rc<RefCell<Option<Result<T, EtcdError>>>> = Rc::default();
        let (s, c) = (slot.clone(), self.client.clone());
        start(Box::new(move |r| {
            *s.borrow_mut() = Some(r);
            c.stop(); // run() would go on while streams (a watch, a keepalive) are live
        }));
        while slot.borrow().is_none() {
            self.client.run();
        }
        let out = slot.borrow_mut().take().expect("set by the callback");
        out
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(argv) {
        Ok(()) => 0,
        Err(f) => {
            match f.kind {
                Kind::Error => eprintln!("Error: {}", f.message),
                Kind::Flag => eprintln!("Error: {}\n\nError: {}", f.message, f.message),
                Kind::Help => print!("{}", f.message),
                Kind::Log => eprintln!("{}", f.message),
                Kind::UnknownCommand => {
                    eprintln!("Error: {0}\nRun 'etcdctl --help' for usage.\nError: {0}", f.message)
                }
            }
            f.code
        }
    };
    std::process::exit(code);
}

fn run(argv: Vec<String>) -> Result<(), Failure> {
    let mut args = Args::parse(argv)?;
    let endpoints: Vec<String> = args
        .take_value("endpoints")
        .unwrap_or_else(|| "127.0.0.1:2379".into())
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let dial = args.take_duration("dial-timeout")?.unwrap_or(Duration::from_secs(2));
    let command_timeout = args.take_duration("command-timeout")?.unwrap_or(Duration::from_secs(5));
    let security = tls::TlsFlags::take(&mut args)?;
    security.check_empty()?;
    let json = match args.take_value("write-out").as_deref() {
        None | Some("simple") => false,
        Some("json") => true,
        Some(other) => return Err(Failure::usage(format!("unsupported output format {other}"))),
    };
    let mut config =
        Config::new().endpoints(endpoints.clone()).connect_timeout(dial).timeout(command_timeout);
    let password = args.take_value("password");
    if let Some(user) = args.take_value("user") {
        // As etcdctl: `--password` makes the whole of `--user` the name; else `name:password`,
        // or the password is asked for.
        let (name, password) = match (password, user.split_once(':')) {
            (Some(password), _) => (user.clone(), password),
            (None, Some((name, password))) => (name.to_string(), password.to_string()),
            (None, None) => (user.clone(), auth::ask("Password: ")?),
        };
        config = config.user(name, password);
    }
    if let Some(tls) = security.client_tls(&endpoints)? {
        config = config.tls(tls);
    }
    let client =
        Client::new(config.clone()).map_err(|e| match e.message().strip_prefix("TLS: ") {
            Some(refused) => tls::refused(refused),
            None => Failure::error(e.message().to_string()),
        })?;
    let ctx = Ctx { client, config, json, endpoints, command_timeout };
    let Some(command) = args.next_word() else {
        return Err(Failure::help("", &COMMANDS));
    };
    match command.as_str() {
        "put" | "get" | "del" | "txn" | "compaction" | "watch" => kv::run(&ctx, &command, args),
        "lease" | "lock" | "elect" => lease::run(&ctx, &command, args),
        "member" | "endpoint" | "alarm" | "defrag" | "snapshot" | "move-leader" => {
            cluster::run(&ctx, &command, args)
        }
        "auth" | "user" | "role" => auth::run(&ctx, &command, args),
        other => Err(Failure::unknown_command(other)),
    }
}
