//! Command-line parsing with etcdctl's (cobra's) rules: flags anywhere, `--name=value` or
//! `--name value`, boolean flags bare or `=true|false`, `-w` for `--write-out`, and `--`
//! ending the flags. A flag that cannot be parsed fails as cobra fails: exit 1 (etcdctl also
//! prints the command's usage, which this example does not have).

use crate::Failure;
use std::time::Duration;

/// Flags that take a value (all others are boolean).
const VALUE_FLAGS: &[&str] = &[
    "endpoints",
    "user",
    "dial-timeout",
    "command-timeout",
    "write-out",
    "lease",
    "limit",
    "rev",
    "sort-by",
    "order",
    "peer-urls",
    "ttl",
    "consistency",
    "new-user-password",
    "password",
    "cacert",
    "cert",
    "key",
];

/// Short flags and the long flag each stands for.
const SHORT: &[(&str, &str)] = &[("w", "write-out"), ("i", "interactive"), ("l", "listen")];

/// The words and flags of a command line, consumed as the command reads them.
#[derive(Debug, Default)]
pub struct Args {
    words: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    /// Splits `argv` into words and flags.
    pub fn parse(argv: Vec<String>) -> Result<Args, Failure> {
        let mut out = Args::default();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.words.extend(it.by_ref());
                break;
            }
            let name = if let Some(long) = a.strip_prefix("--") {
                long.to_string()
            } else if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
                let (key, rest) = short.split_at(1);
                let long = SHORT.iter().find(|(s, _)| *s == key).map(|(_, l)| *l);
                let Some(long) = long else {
                    // Not a flag we know: a word (say, a negative number or a key).
                    out.words.push(a);
                    continue;
                };
                match rest.strip_prefix('=').or((!rest.is_empty()).then_some(rest)) {
                    Some(v) => format!("{long}={v}"),
                    None => long.to_string(),
                }
            } else {
                out.words.push(a);
                continue;
            };
            let (key, value) = match name.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None if VALUE_FLAGS.contains(&name.as_str()) => {
                    let v = it.next().ok_or_else(|| {
                        Failure::flag(format!("flag needs an argument: --{name}"))
                    })?;
                    (name, Some(v))
                }
                None => (name, None),
            };
            out.flags.push((key, value));
        }
        Ok(out)
    }

    /// The next word (command, sub-command or argument).
    pub fn next_word(&mut self) -> Option<String> {
        (!self.words.is_empty()).then(|| self.words.remove(0))
    }

    /// The words left.
    pub fn rest(&mut self) -> Vec<String> {
        std::mem::take(&mut self.words)
    }

    /// The value of flag `name` (the last one given), removed.
    pub fn take_value(&mut self, name: &str) -> Option<String> {
        let mut found = None;
        self.flags.retain(|(k, v)| {
            if k == name {
                found = v.clone();
                false
            } else {
                true
            }
        });
        found
    }

    /// Whether boolean flag `name` is set (`--name`, `--name=true`); false when not given.
    pub fn take_bool(&mut self, name: &str) -> Result<bool, Failure> {
        Ok(self.take_given_bool(name)?.unwrap_or(false))
    }

    /// Boolean flag `name` if given (the last one), removed: bare is true, else its value
    /// as Go's `strconv.ParseBool` reads it.
    pub fn take_given_bool(&mut self, name: &str) -> Result<Option<bool>, Failure> {
        let mut found = None;
        let mut bad = None;
        self.flags.retain(|(k, v)| {
            if k != name {
                return true;
            }
            match v.as_deref().map_or(Some(true), parse_go_bool) {
                Some(b) => found = Some(b),
                None => bad = v.clone(),
            }
            false
        });
        match bad {
            Some(v) => Err(Failure::flag(format!(
                "invalid argument \"{v}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax"
            ))),
            None => Ok(found),
        }
    }

    /// Flag `name` as a number.
    pub fn take_i64(&mut self, name: &str) -> Result<Option<i64>, Failure> {
        match self.take_value(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Failure::flag(format!(
                    "invalid argument \"{v}\" for \"--{name}\" flag: strconv.ParseInt: parsing \"{v}\": invalid syntax"
                ))
            }),
        }
    }

    /// Flag `name` as a Go duration (`500ms`, `5s`, `1m30s`).
    pub fn take_duration(&mut self, name: &str) -> Result<Option<Duration>, Failure> {
        match self.take_value(name) {
            None => Ok(None),
            Some(v) => parse_go_duration(&v).map(Some).ok_or_else(|| {
                Failure::flag(format!(
                    "invalid argument \"{v}\" for \"--{name}\" flag: time: invalid duration \"{v}\""
                ))
            }),
        }
    }

    /// Fails on a flag nobody read (etcdctl: "unknown flag").
    pub fn finish(&self) -> Result<(), Failure> {
        match self.flags.first() {
            Some((k, _)) => Err(Failure::flag(format!("unknown flag: --{k}"))),
            None => Ok(()),
        }
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A Go duration: a sequence of number+unit (ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 = num.parse().ok()?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    Some(Duration::from_secs_f64(total))
}
