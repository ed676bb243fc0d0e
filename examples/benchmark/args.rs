//! The command line, read as etcd's `benchmark` (cobra + pflag) reads it: global flags before
//! or after the subcommand, the subcommand's own flags after it, `--flag value` or
//! `--flag=value`, booleans bare or as `--flag=true|false`. Anything else is a usage error
//! (exit 2), never a panic.

use std::time::Duration;

/// The five benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Put,
    Range,
    TxnPut,
    WatchLatency,
    LeaseKeepalive,
}

impl Command {
    fn from_name(name: &str) -> Option<Command> {
        Some(match name {
            "put" => Command::Put,
            "range" => Command::Range,
            "txn-put" => Command::TxnPut,
            "watch-latency" => Command::WatchLatency,
            "lease-keepalive" => Command::LeaseKeepalive,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Put => "put",
            Command::Range => "range",
            Command::TxnPut => "txn-put",
            Command::WatchLatency => "watch-latency",
            Command::LeaseKeepalive => "lease-keepalive",
        }
    }

    /// The subcommand's own flags: whether each takes a value.
    fn flags(self) -> &'static [(&'static str, bool)] {
        match self {
            Command::Put => &[
                ("total", true),
                ("rate", true),
                ("key-size", true),
                ("val-size", true),
                ("key-space-size", true),
                ("sequential-keys", false),
                ("prefix", true),
            ],
            Command::Range => &[
                ("total", true),
                ("rate", true),
                ("consistency", true),
                ("limit", true),
                ("count-only", false),
                ("keys-only", false),
                ("prefix", false),
            ],
            Command::TxnPut => &[
                ("total", true),
                ("rate", true),
                ("key-size", true),
                ("val-size", true),
                ("key-space-size", true),
                ("txn-ops", true),
                ("prefix", true),
            ],
            Command::WatchLatency => &[
                ("put-total", true),
                ("put-rate", true),
                ("streams", true),
                ("watchers-per-stream", true),
                ("prevkv", false),
                ("key-size", true),
                ("val-size", true),
            ],
            Command::LeaseKeepalive => &[("total", true), ("rate", true)],
        }
    }
}

/// Flags every subcommand takes (cobra's persistent flags): whether each takes a value.
const GLOBAL: &[(&str, bool)] = &[
    ("endpoints", true),
    ("conns", true),
    ("clients", true),
    ("cacert", true),
    ("cert", true),
    ("key", true),
    ("insecure-skip-tls-verify", false),
    ("user", true),
    ("dial-timeout", true),
    ("precise", false),
    ("json", false),
    ("help", false),
];

/// Everything the command line says, with etcd's defaults for what it does not.
#[derive(Clone, Debug)]
pub struct Options {
    pub command: Command,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub insecure_skip_verify: bool,
    pub user: Option<(String, String)>,
    pub dial_timeout: Option<Duration>,
    pub precise: bool,
    pub json: bool,
    /// Requests (put, range, txn-put, lease-keepalive).
    pub total: usize,
    /// Requests per second; 0: closed loop.
    pub rate: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space_size: u64,
    pub sequential_keys: bool,
    /// Put and txn-put: prepended to every key (an addition: etcd 3.6's put has none).
    pub key_prefix: String,
    pub txn_ops: usize,
    /// Range: the key, the optional end, and the options.
    pub range_key: String,
    pub range_end: Option<String>,
    pub serializable: bool,
    pub limit: i64,
    pub count_only: bool,
    pub keys_only: bool,
    pub range_prefix: bool,
    /// Watch-latency.
    pub put_total: usize,
    pub put_rate: u64,
    pub streams: usize,
    pub watchers_per_stream: usize,
    pub prevkv: bool,
}

/// What parsing decided.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Options>),
    /// `--help` (or `-h`): print the usage, exit 0.
    Help,
}

/// Reads `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut args = args.into_iter();
    let mut command = None;
    let mut positional_endpoint = None;
    let mut positionals = Vec::new();
    let mut given: Vec<(String, String)> = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "-h" {
            return Ok(Parsed::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if arg.starts_with('-') && arg.len() > 1 {
                return Err(format!("unknown shorthand flag: {arg:?}"));
            }
            match command {
                None => match Command::from_name(&arg) {
                    Some(c) => command = Some(c),
                    None if positional_endpoint.is_none() => positional_endpoint = Some(arg),
                    None => return Err(format!("unknown command {arg:?}")),
                },
                Some(_) => positionals.push(arg),
            }
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let takes_value = GLOBAL
            .iter()
            .chain(command.map_or(&[][..], Command::flags))
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| match command {
                None => format!("unknown flag --{name} (subcommand flags go after the subcommand)"),
                Some(c) => format!("unknown flag --{name} for {}", c.name()),
            })?;
        let value = match (takes_value, inline) {
            (_, Some(v)) => v,
            (true, None) => args.next().ok_or(format!("flag needs an argument: --{name}"))?,
            (false, None) => "true".into(),
        };
        if name == "help" && parse_bool(name, &value)? {
            return Ok(Parsed::Help);
        }
        given.push((name.to_string(), value));
    }
    let command = command
        .ok_or("no benchmark given (put, range, txn-put, watch-latency, lease-keepalive)")?;
    build(command, positional_endpoint, positionals, given).map(|o| Parsed::Run(Box::new(o)))
}

fn build(
    command: Command,
    positional_endpoint: Option<String>,
    positionals: Vec<String>,
    given: Vec<(String, String)>,
) -> Result<Options, String> {
    let watch = command == Command::WatchLatency;
    let mut o = Options {
        command,
        endpoints: vec!["127.0.0.1:2379".into()],
        conns: 1,
        clients: 1,
        cacert: None,
        cert: None,
        key: None,
        insecure_skip_verify: false,
        user: None,
        dial_timeout: None,
        precise: false,
        json: false,
        total: 10_000,
        rate: 0,
        key_size: if watch { 32 } else { 8 },
        val_size: if watch { 32 } else { 8 },
        key_space_size: 1,
        sequential_keys: false,
        key_prefix: String::new(),
        txn_ops: 1,
        range_key: String::new(),
        range_end: None,
        serializable: false,
        limit: 0,
        count_only: false,
        keys_only: false,
        range_prefix: false,
        put_total: 1000,
        put_rate: 100,
        streams: 10,
        watchers_per_stream: 10,
        prevkv: false,
    };
    if let Some(endpoint) = positional_endpoint {
        o.endpoints = vec![endpoint];
    }
    for (name, v) in &given {
        let name = name.as_str();
        match name {
            "endpoints" => {
                o.endpoints = v
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect();
                if o.endpoints.is_empty() {
                    return Err("--endpoints is empty".into());
                }
            }
            "conns" => o.conns = positive(name, v)?,
            "clients" => o.clients = positive(name, v)?,
            "cacert" => o.cacert = Some(v.clone()),
            "cert" => o.cert = Some(v.clone()),
            "key" => o.key = Some(v.clone()),
            "insecure-skip-tls-verify" => o.insecure_skip_verify = parse_bool(name, v)?,
            "user" => {
                let (user, password) = v.split_once(':').ok_or(
                    "--user needs user:password (this tool does not prompt for the password)",
                )?;
                o.user = Some((user.into(), password.into()));
            }
            "dial-timeout" => o.dial_timeout = Some(parse_duration(name, v)?),
            "precise" => o.precise = parse_bool(name, v)?,
            "json" => o.json = parse_bool(name, v)?,
            "total" => o.total = positive(name, v)?,
            "rate" => o.rate = number(name, v)?,
            "key-size" => o.key_size = number(name, v)?,
            "val-size" => o.val_size = number(name, v)?,
            "key-space-size" => o.key_space_size = positive(name, v)?,
            "sequential-keys" => o.sequential_keys = parse_bool(name, v)?,
            "prefix" if command == Command::Range => o.range_prefix = parse_bool(name, v)?,
            "prefix" => o.key_prefix = v.clone(),
            "txn-ops" => o.txn_ops = positive(name, v)?,
            "consistency" => {
                o.serializable = match v.as_str() {
                    "l" => false,
                    "s" => true,
                    _ => return Err(format!("--consistency is l or s, not {v:?}")),
                }
            }
            "limit" => o.limit = number(name, v)?,
            "count-only" => o.count_only = parse_bool(name, v)?,
            "keys-only" => o.keys_only = parse_bool(name, v)?,
            "put-total" => o.put_total = positive(name, v)?,
            "put-rate" => o.put_rate = positive(name, v)?,
            "streams" => o.streams = positive(name, v)?,
            "watchers-per-stream" => o.watchers_per_stream = positive(name, v)?,
            "prevkv" => o.prevkv = parse_bool(name, v)?,
            _ => unreachable!("--{name} is in a flag table but not handled"),
        }
    }
    if o.cert.is_some() != o.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    match command {
        Command::Range => {
            if positionals.len() > 2 || (positionals.is_empty() && !o.range_prefix) {
                return Err("range takes KEY [END] (KEY may be left out with --prefix)".into());
            }
            let mut p = positionals.into_iter();
            o.range_key = p.next().unwrap_or_default();
            o.range_end = p.next();
            if o.count_only && o.keys_only {
                return Err("--count-only and --keys-only cannot be set at the same time".into());
            }
            if o.range_prefix && o.range_end.is_some() {
                return Err("--prefix and an END key cannot be set at the same time".into());
            }
        }
        _ if !positionals.is_empty() => {
            return Err(format!("{} takes no argument, got {:?}", command.name(), positionals[0]));
        }
        Command::Put | Command::TxnPut => {
            if command == Command::TxnPut && o.txn_ops as u64 > o.key_space_size {
                return Err(format!(
                    "--txn-ops ({}) must not exceed --key-space-size ({})",
                    o.txn_ops, o.key_space_size
                ));
            }
            // Keys are the zigzag varint of a number below the key space, in key-size bytes.
            let needed = varint_len(2 * (o.key_space_size - 1));
            if o.key_size < needed {
                return Err(format!(
                    "--key-size {} is too small for --key-space-size {} (needs {needed} bytes)",
                    o.key_size, o.key_space_size
                ));
            }
        }
        _ => {}
    }
    Ok(o)
}

/// Bytes of the LEB128 encoding of `n`.
pub fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("invalid argument {v:?} for --{name}: not a non-negative integer"))
}

fn positive<T: std::str::FromStr + Default + PartialEq>(name: &str, v: &str) -> Result<T, String> {
    let n: T = number(name, v)?;
    if n == T::default() {
        return Err(format!("--{name} must be positive"));
    }
    Ok(n)
}

/// pflag's booleans (Go's `strconv.ParseBool`).
fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid argument {v:?} for --{name}: not a boolean")),
    }
}

/// A Go duration of one unit (`500ms`, `5s`, `1m`), or plain seconds.
fn parse_duration(name: &str, v: &str) -> Result<Duration, String> {
    let bad = || format!("invalid argument {v:?} for --{name}: not a duration such as 5s or 500ms");
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn flags_go_before_or_after_the_subcommand_in_both_spellings() {
        let o =
            run(&["--conns=2", "put", "--clients", "4", "--sequential-keys", "--total=7"]).unwrap();
        assert_eq!((o.conns, o.clients, o.total, o.sequential_keys), (2, 4, 7, true));
        let o = run(&["10.0.0.1:2379", "range", "a", "b", "--consistency", "s"]).unwrap();
        assert_eq!(o.endpoints, ["10.0.0.1:2379"]);
        assert_eq!(
            (o.range_key.as_str(), o.range_end.as_deref(), o.serializable),
            ("a", Some("b"), true)
        );
    }

    #[test]
    fn bad_command_lines_are_errors() {
        for bad in [
            &["put", "--bogus"][..],
            &["put", "--total"],
            &["put", "--total", "x"],
            &["put", "--total", "0"],
            &["--total", "3", "put"],
            &["range"],
            &["range", "--consistency", "x", "k"],
            &["put", "--key-space-size", "1000", "--key-size", "1"],
            &["txn-put", "--txn-ops", "3"],
            &["nothing"],
            &[],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
    }
}
