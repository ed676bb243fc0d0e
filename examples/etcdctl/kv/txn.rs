//! `txn`: etcdctl's transaction syntax on stdin. Three sections, each ended by a blank line:
//! compares (`mod("k") > "5"`), the requests to run if all hold, the requests to run
//! otherwise (`put k v`, `get k`, `del k`, with their command-line flags).

use super::{failure, EXIT_INVALID_INPUT};
use super::{flags, show, txn_json, txn_simple, DelFlags, GetFlags, PutFlags};
use crate::args::Args;
use crate::gosyntax::{argify, parse_int, quote, scan_compare};
use crate::output;
use crate::{Ctx, Failure};
use bytes::Bytes;
use evetcd::{Compare, CompareOp, Txn, TxnOp};
use std::io::{self, BufRead};

/// Go's exit status for an unrecovered panic.
const EXIT_PANIC: i32 = 2;

pub fn run(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let interactive = flags(&mut args, |a| a.take_bool("interactive"))?;
    if !args.rest().is_empty() {
        return Err(Failure::usage("txn command does not accept argument"));
    }
    // etcdctl prompts on stdout whether or not stdin is a terminal.
    let prompt = |text: &str| {
        if interactive {
            output::print(format!("{text}\n").as_bytes());
        }
    };
    let mut input = io::stdin().lock();
    prompt("compares:");
    let compares = read_section(&mut input, parse_compare)?;
    prompt("success requests (get, put, del):");
    let success = read_section(&mut input, parse_request)?;
    prompt("failure requests (get, put, del):");
    let failure = read_section(&mut input, parse_request)?;
    let txn = Txn::new().when(compares).and_then(success).or_else(failure);
    let resp = ctx.wait(|cb| ctx.client.txn(txn, cb))?;
    show(ctx, &resp, txn_json, txn_simple);
    Ok(())
}

fn invalid_input(message: impl Into<String>) -> Failure {
    failure(EXIT_INVALID_INPUT, message)
}

/// Parses lines up to a blank one. Each line must end with a newline: etcdctl fails with
/// "EOF" when the input ends first, even right after a last line without one.
fn read_section<T>(
    input: &mut impl BufRead,
    parse: fn(&str) -> Result<T, Failure>,
) -> Result<Vec<T>, Failure> {
    let mut items = Vec::new();
    loop {
        let mut raw = Vec::new();
        input.read_until(b'\n', &mut raw).map_err(|e| invalid_input(e.to_string()))?;
        if raw.last() != Some(&b'\n') {
            return Err(invalid_input("EOF"));
        }
        let line = String::from_utf8_lossy(&raw);
        match line.trim() {
            "" => return Ok(items),
            line => items.push(parse(line)?),
        }
    }
}

/// `TARGET("key") OP "value"`: TARGET is ver[sion], c[reate], m[od] or val[ue] (lease
/// compares make etcdctl 3.5.1 panic, and so they do here); OP is =, !=, < or >.
fn parse_compare(line: &str) -> Result<Compare, Failure> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid_input(format!("malformed comparison: {line}")));
    };
    let scan = scan_compare(rest);
    if scan.n != 3 {
        let (key, value) = (quote(&scan.key), quote(&scan.value));
        let got = format!("{target}({key}) {} {value}", scan.op);
        return Err(invalid_input(format!("malformed comparison: {line}; got {got}")));
    }
    let key = Bytes::from(scan.key);
    let value = scan.value;
    // A number is checked before the operator, as etcdctl does.
    let numeric = |make: fn(Bytes, CompareOp, i64) -> Compare| {
        let n = std::str::from_utf8(&value).ok().and_then(|v| parse_int(v, 10).ok());
        let n = n.ok_or_else(|| invalid_input(format!("invalid txn compare request: {line}")))?;
        Ok(make(key.clone(), op(&scan.op), n))
    };
    match target {
        "ver" | "version" => numeric(Compare::version),
        "c" | "create" => numeric(Compare::create_revision),
        "m" | "mod" => numeric(Compare::mod_revision),
        "val" | "value" => Ok(Compare::value(key.clone(), op(&scan.op), value.clone())),
        "lease" => {
            op(&scan.op);
            go_panic("bad value")
        }
        _ => Err(invalid_input(format!("malformed comparison: {line} (unknown target {target})"))),
    }
}

/// A compare operator; etcdctl's client panics on any other.
fn op(op: &str) -> CompareOp {
    match op {
        "=" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        ">" => CompareOp::Greater,
        "<" => CompareOp::Less,
        _ => go_panic("Unknown result op"),
    }
}

/// Ends the process as a Go panic does (exit 2, no `Error:` line): etcdctl 3.5.1 panics on
/// a few inputs, and a script that checks the exit status should see the same.
fn go_panic(message: &str) -> ! {
    eprintln!("panic: {message}\n\ngoroutine 1 [running]:");
    std::process::exit(EXIT_PANIC)
}

/// A request line: `put`, `get` or `del` with that command's words and flags. A flag the
/// command does not have makes the line invalid; the command's own checks fail as on the
/// command line (exit 128, say).
fn parse_request(line: &str) -> Result<TxnOp, Failure> {
    let words = argify(line).ok_or_else(|| invalid_input("invalid syntax"))?;
    if words.len() < 2 {
        return Err(invalid_input(format!("invalid txn compare request: {line}")));
    }
    let mut args = Args::parse(words).map_err(|_| invalid_request(line))?;
    match args.next_word().as_deref() {
        Some("put") => {
            let flags = request_flags(&mut args, PutFlags::take, line)?;
            let (key, value, options) = flags.op(args.rest(), None)?;
            Ok(TxnOp::put(key, value, options))
        }
        Some("get") => {
            let (key, options) = request_flags(&mut args, GetFlags::take, line)?.op(args.rest())?;
            Ok(TxnOp::get(key, options))
        }
        Some("del") => {
            let (key, options) = request_flags(&mut args, DelFlags::take, line)?.op(args.rest())?;
            Ok(TxnOp::delete(key, options))
        }
        _ => Err(invalid_request(line)),
    }
}

/// A request's flags: one its command does not have, or a bad value, makes the line invalid.
fn request_flags<T>(
    args: &mut Args,
    take: fn(&mut Args) -> Result<T, Failure>,
    line: &str,
) -> Result<T, Failure> {
    flags(args, take).map_err(|_| invalid_request(line))
}

fn invalid_request(line: &str) -> Failure {
    invalid_input(format!("invalid txn request: {line}"))
}
