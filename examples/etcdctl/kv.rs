//! The key-value commands: `put`, `get`, `del`, `txn`, `compaction` and `watch`.
//!
//! Each of put, get and del reads its flags the way cobra does (all of them first), then
//! checks its words and flags in etcdctl's order, so that the first complaint is etcdctl's.
//! `txn` reuses both steps for its request lines, as etcdctl does.

mod txn;
mod watch;

use crate::args::Args;
use crate::gosyntax::{parse_int, quote};
use crate::output::{self, Obj};
use crate::{Ctx, Failure};
use bytes::Bytes;
use evetcd::pb::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse};
use evetcd::{
    CompactOptions, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    TxnOpResponse,
};
use std::io::{self, Read};

/// etcdctl's exit codes beyond those of main.rs.
const EXIT_INVALID_INPUT: i32 = 3;
const EXIT_BAD_FEATURE: i32 = 4;
const EXIT_INTERRUPTED: i32 = 5;

pub fn run(ctx: &Ctx, command: &str, args: Args) -> Result<(), Failure> {
    match command {
        "put" => put(ctx, args),
        "get" => get(ctx, args),
        "del" => del(ctx, args),
        "txn" => txn::run(ctx, args),
        "compaction" => compaction(ctx, args),
        "watch" => watch::run(ctx, args),
        other => Err(Failure::unknown_command(other)),
    }
}

fn put(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let flags = flags(&mut args, PutFlags::take)?;
    let (key, value, options) = flags.op(args.rest(), Some(&mut io::stdin()))?;
    let resp = ctx.wait(|cb| ctx.client.put(key, value, options, cb))?;
    show(ctx, &resp, put_json, put_simple);
    Ok(())
}

fn get(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let flags = flags(&mut args, GetFlags::take)?;
    let (key, options) = flags.op(args.rest())?;
    let resp = ctx.wait(|cb| ctx.client.get(key, options, cb))?;
    // etcdctl checks these only once it has the answer.
    if flags.count_only {
        return Err(Failure::usage("--count-only is only for `--write-out=fields`"));
    }
    if flags.print_value_only && ctx.json {
        return Err(Failure::usage("print-value-only is only for `--write-out=simple`"));
    }
    show(ctx, &resp, range_json, |out, r| range_simple(out, r, flags.print_value_only));
    Ok(())
}

fn del(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let flags = flags(&mut args, DelFlags::take)?;
    let (key, options) = flags.op(args.rest())?;
    let resp = ctx.wait(|cb| ctx.client.delete(key, options, cb))?;
    show(ctx, &resp, del_json, del_simple);
    Ok(())
}

fn compaction(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let physical = flags(&mut args, |a| a.take_bool("physical"))?;
    let words = args.rest();
    let [rev] = words.as_slice() else {
        return Err(Failure::usage("compaction command needs 1 argument"));
    };
    let rev = parse_int(rev, 10).map_err(Failure::error)?;
    ctx.wait(|cb| ctx.client.compact(rev, CompactOptions::new().physical(physical), cb))?;
    // No JSON form: etcdctl prints this line whatever the output format.
    output::print(format!("compacted revision {rev}\n").as_bytes());
    Ok(())
}

/// Reads a command's flags with `take` and refuses any other, as cobra does before the
/// command runs.
fn flags<T>(args: &mut Args, take: fn(&mut Args) -> Result<T, Failure>) -> Result<T, Failure> {
    let flags = take(args)?;
    args.finish()?;
    Ok(flags)
}

fn failure(code: i32, message: impl Into<String>) -> Failure {
    Failure::new(code, message.into())
}

/// The flags of `put`.
struct PutFlags {
    /// Hexadecimal, parsed only after the words are checked.
    lease: String,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

impl PutFlags {
    fn take(args: &mut Args) -> Result<PutFlags, Failure> {
        Ok(PutFlags {
            lease: args.take_value("lease").unwrap_or_else(|| "0".into()),
            prev_kv: args.take_bool("prev-kv")?,
            ignore_value: args.take_bool("ignore-value")?,
            ignore_lease: args.take_bool("ignore-lease")?,
        })
    }

    /// Key, value and options for `words` (extra words are ignored, as etcdctl does). Without
    /// a value word the value is all of `stdin`, which must not be empty; a txn request has
    /// no stdin of its own (etcdctl's has been read already).
    fn op(
        self,
        words: Vec<String>,
        stdin: Option<&mut dyn Read>,
    ) -> Result<(Bytes, Bytes, PutOptions), Failure> {
        const NEEDS: &str = "put command needs 1 argument and input from stdin or 2 arguments";
        let Some(key) = words.first() else { return Err(Failure::usage(NEEDS)) };
        if self.ignore_value && words.len() > 1 {
            return Err(Failure::usage(
                "put command needs only 1 argument when 'ignore-value' is set",
            ));
        }
        let value = match (self.ignore_value, words.get(1)) {
            (true, _) => Bytes::new(),
            (false, Some(v)) => Bytes::from(v.clone()),
            (false, None) => read_all(stdin).ok_or_else(|| Failure::usage(NEEDS))?,
        };
        let lease = parse_int(&self.lease, 16)
            .map_err(|e| Failure::usage(format!("bad lease ID ({e}), expecting ID in Hex")))?;
        let options = PutOptions::new()
            .lease(lease)
            .prev_kv(self.prev_kv)
            .ignore_value(self.ignore_value)
            .ignore_lease(self.ignore_lease);
        Ok((Bytes::from(key.clone()), value, options))
    }
}

/// All of `input`, unless there is none or it cannot be read.
fn read_all(input: Option<&mut dyn Read>) -> Option<Bytes> {
    let mut buf = Vec::new();
    input?.read_to_end(&mut buf).ok()?;
    (!buf.is_empty()).then(|| Bytes::from(buf))
}

/// The flags of `get`.
struct GetFlags {
    consistency: String,
    order: String,
    sort_by: String,
    limit: i64,
    rev: i64,
    prefix: bool,
    from_key: bool,
    keys_only: bool,
    count_only: bool,
    print_value_only: bool,
}

impl GetFlags {
    fn take(args: &mut Args) -> Result<GetFlags, Failure> {
        Ok(GetFlags {
            consistency: args.take_value("consistency").unwrap_or_else(|| "l".into()),
            order: args.take_value("order").unwrap_or_default(),
            sort_by: args.take_value("sort-by").unwrap_or_default(),
            limit: args.take_i64("limit")?.unwrap_or(0),
            rev: args.take_i64("rev")?.unwrap_or(0),
            prefix: args.take_bool("prefix")?,
            from_key: args.take_bool("from-key")?,
            keys_only: args.take_bool("keys-only")?,
            count_only: args.take_bool("count-only")?,
            print_value_only: args.take_bool("print-value-only")?,
        })
    }

    /// Key and options for `words`: the key, then an optional range end (extra words are
    /// ignored, as etcdctl does).
    fn op(&self, words: Vec<String>) -> Result<(Bytes, GetOptions), Failure> {
        let Some(key) = words.first() else {
            return Err(Failure::usage(
                "get command needs one argument as key and an optional argument as range_end",
            ));
        };
        one_range_flag(self.prefix, self.from_key)?;
        if self.keys_only && self.count_only {
            return Err(Failure::usage(
                "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
            ));
        }
        let serializable = match self.consistency.as_str() {
            "s" => true,
            "l" => false,
            other => {
                let message = format!("unknown consistency flag {}", quote(other.as_bytes()));
                return Err(failure(EXIT_BAD_FEATURE, message));
            }
        };
        let end = range_end(&words, self.prefix, self.from_key)?;
        let (order, target) = sort(&self.order, &self.sort_by)?;
        let mut options = GetOptions::new()
            .prefix(self.prefix)
            .from_key(self.from_key)
            .limit(self.limit)
            .revision(self.rev.max(0)) // etcdctl sends only a positive --rev
            .keys_only(self.keys_only)
            .count_only(self.count_only)
            .serializable(serializable)
            .sort_order(order)
            .sort_target(target);
        if let Some(end) = end {
            options = options.range_end(end);
        }
        Ok((Bytes::from(key.clone()), options))
    }
}

/// `--order` and `--sort-by`, in any case. As etcdctl's client does, ascending by key is sent
/// as "no order": the server returns keys in that order anyway.
fn sort(order: &str, target: &str) -> Result<(SortOrder, SortTarget), Failure> {
    let sort_order = match order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => return Err(failure(EXIT_BAD_FEATURE, format!("bad sort order {order}"))),
    };
    let sort_target = match target.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => return Err(failure(EXIT_BAD_FEATURE, format!("bad sort target {target}"))),
    };
    match (sort_target, sort_order) {
        (SortTarget::Key, SortOrder::Ascend) => Ok((SortOrder::None, sort_target)),
        _ => Ok((sort_order, sort_target)),
    }
}

/// The flags of `del`.
struct DelFlags {
    prefix: bool,
    from_key: bool,
    prev_kv: bool,
}

impl DelFlags {
    fn take(args: &mut Args) -> Result<DelFlags, Failure> {
        Ok(DelFlags {
            prefix: args.take_bool("prefix")?,
            from_key: args.take_bool("from-key")?,
            prev_kv: args.take_bool("prev-kv")?,
        })
    }

    /// Key and options for `words`: the key and an optional range end.
    fn op(&self, words: Vec<String>) -> Result<(Bytes, DeleteOptions), Failure> {
        if words.is_empty() || words.len() > 2 {
            return Err(Failure::usage(
                "del command needs one argument as key and an optional argument as range_end",
            ));
        }
        one_range_flag(self.prefix, self.from_key)?;
        let end = range_end(&words, self.prefix, self.from_key)?;
        let mut options =
            DeleteOptions::new().prefix(self.prefix).from_key(self.from_key).prev_kv(self.prev_kv);
        if let Some(end) = end {
            options = options.range_end(end);
        }
        Ok((Bytes::from(words[0].clone()), options))
    }
}

/// `--prefix` and `--from-key` each say where the range ends: at most one may be given.
fn one_range_flag(prefix: bool, from_key: bool) -> Result<(), Failure> {
    if prefix && from_key {
        return Err(Failure::usage(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    Ok(())
}

/// The range end word, if any; not with `--prefix` or `--from-key`, which say where it ends.
fn range_end(words: &[String], prefix: bool, from_key: bool) -> Result<Option<String>, Failure> {
    match words.get(1) {
        Some(_) if prefix || from_key => Err(Failure::usage(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        )),
        end => Ok(end.cloned()),
    }
}

/// Prints a response in the output format asked for.
fn show<R>(ctx: &Ctx, resp: &R, json: fn(&R) -> String, simple: impl FnOnce(&mut Vec<u8>, &R)) {
    let mut out = Vec::new();
    if ctx.json {
        out.extend_from_slice(json(resp).as_bytes());
        out.push(b'\n');
    } else {
        simple(&mut out, resp);
    }
    output::print(&out);
}

fn line(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.push(b'\n');
}

/// A key-value pair in simple output: the key's line (unless only values are asked for),
/// then the value's, both as raw bytes.
fn kv_simple(out: &mut Vec<u8>, kv: &KeyValue, value_only: bool) {
    if !value_only {
        line(out, &kv.key);
    }
    line(out, &kv.value);
}

fn put_simple(out: &mut Vec<u8>, r: &PutResponse) {
    line(out, b"OK");
    if let Some(kv) = &r.prev_kv {
        kv_simple(out, kv, false);
    }
}

fn range_simple(out: &mut Vec<u8>, r: &RangeResponse, value_only: bool) {
    r.kvs.iter().for_each(|kv| kv_simple(out, kv, value_only));
}

fn del_simple(out: &mut Vec<u8>, r: &DeleteRangeResponse) {
    line(out, r.deleted.to_string().as_bytes());
    r.prev_kvs.iter().for_each(|kv| kv_simple(out, kv, false));
}

/// SUCCESS or FAILURE, then each request's output after a blank line.
fn txn_simple(out: &mut Vec<u8>, r: &TxnResponse) {
    line(out, if r.succeeded { b"SUCCESS" } else { b"FAILURE" });
    for op in r.responses.iter().filter_map(|op| op.response.as_ref()) {
        line(out, b"");
        match op {
            TxnOpResponse::ResponseRange(r) => range_simple(out, r, false),
            TxnOpResponse::ResponsePut(r) => put_simple(out, r),
            TxnOpResponse::ResponseDeleteRange(r) => del_simple(out, r),
            TxnOpResponse::ResponseTxn(r) => txn_simple(out, r),
        }
    }
}

fn kvs_json(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(output::kv).collect()
}

fn put_json(r: &PutResponse) -> String {
    Obj::new()
        .raw("header", output::header(r.header.as_ref()))
        .raw("prev_kv", r.prev_kv.as_ref().map(output::kv))
        .end()
}

fn range_json(r: &RangeResponse) -> String {
    Obj::new()
        .raw("header", output::header(r.header.as_ref()))
        .list("kvs", kvs_json(&r.kvs))
        .flag("more", r.more)
        .num("count", r.count)
        .end()
}

fn del_json(r: &DeleteRangeResponse) -> String {
    Obj::new()
        .raw("header", output::header(r.header.as_ref()))
        .num("deleted", r.deleted)
        .list("prev_kvs", kvs_json(&r.prev_kvs))
        .end()
}

/// Go marshals each request's result as its oneof wrapper: `{"Response":{"response_put":…}}`.
fn txn_json(r: &TxnResponse) -> String {
    let op_json = |op: &TxnOpResponse| {
        let (name, json) = match op {
            TxnOpResponse::ResponseRange(r) => ("response_range", range_json(r)),
            TxnOpResponse::ResponsePut(r) => ("response_put", put_json(r)),
            TxnOpResponse::ResponseDeleteRange(r) => ("response_delete_range", del_json(r)),
            TxnOpResponse::ResponseTxn(r) => ("response_txn", txn_json(r)),
        };
        format!("{{\"Response\":{{\"{name}\":{json}}}}}")
    };
    let ops = r.responses.iter().filter_map(|op| op.response.as_ref()).map(op_json).collect();
    Obj::new()
        .raw("header", output::header(r.header.as_ref()))
        .flag("succeeded", r.succeeded)
        .list("responses", ops)
        .end()
}
