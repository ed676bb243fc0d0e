//! `auth enable|disable|status`, `user ...` and `role ...`: etcdctl's argument checks, its
//! texts, and `-w json` as the JSON printer marshals the auth responses.
//!
//! Passwords are read as etcdctl reads them: `--interactive=false` scans one word from stdin
//! (Go's `fmt.Scanf("%s")`), the default asks twice on the terminal with echo off (one line
//! each, `stty` as speakeasy does, so a pipe works too).

use crate::args::Args;
use crate::output::{header, print, quote, Obj};
use crate::{Ctx, Failure};
use evetcd::pb::authpb::Permission;
use evetcd::pb::etcdserverpb::ResponseHeader;
use evetcd::{prefix_range_end, Client, EtcdError, PermissionType};
use std::io::{BufRead, Read};
use std::process::Command;

/// The server's answer to `auth enable` while root lacks the root role; etcdctl then
/// creates the role, grants it and tries again.
const ROOT_ROLE_MISSING: &str = "etcdserver: root user does not have root role";

/// The sub-commands of `auth`, `user` or `role`.
fn subcommands(command: &str) -> &'static [&'static str] {
    match command {
        "auth" => &["disable", "enable", "status"],
        "user" => &["add", "delete", "get", "grant-role", "list", "passwd", "revoke-role"],
        _ => &["add", "delete", "get", "grant-permission", "list", "revoke-permission"],
    }
}

/// Runs `auth|user|role SUB-COMMAND [flags] [args]`.
pub fn run(ctx: &Ctx, command: &str, mut args: Args) -> Result<(), Failure> {
    let sub = args.next_word().unwrap_or_default();
    match (command, sub.as_str()) {
        ("auth", "enable") => auth_enable(ctx, args),
        ("auth", "disable") => auth_disable(ctx, args),
        ("auth", "status") => auth_status(ctx, args),
        ("user", "add") => user_add(ctx, args),
        ("user", "delete") => user_delete(ctx, args),
        ("user", "get") => user_get(ctx, args),
        ("user", "list") => user_list(ctx, args),
        ("user", "passwd") => user_passwd(ctx, args),
        ("user", "grant-role") => user_grant_role(ctx, args),
        ("user", "revoke-role") => user_revoke_role(ctx, args),
        ("role", "add") => role_add(ctx, args),
        ("role", "delete") => role_delete(ctx, args),
        ("role", "get") => role_get(ctx, args),
        ("role", "list") => role_list(ctx, args),
        ("role", "grant-permission") => role_grant_permission(ctx, args),
        ("role", "revoke-permission") => role_revoke_permission(ctx, args),
        _ => Err(Failure::help(command, subcommands(command))),
    }
}

// ---- auth ----

fn auth_enable(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    no_words(args, "auth enable command does not accept any arguments")?;
    if let Err(f) = call(ctx, |c, cb| c.auth_enable(cb)) {
        if f.message != ROOT_ROLE_MISSING {
            return Err(f);
        }
        call(ctx, |c, cb| c.role_add("root", cb))?;
        call(ctx, |c, cb| c.user_grant_role("root", "root", cb))?;
        call(ctx, |c, cb| c.auth_enable(cb))?;
    }
    print(b"Authentication Enabled\n"); // in every output format
    Ok(())
}

fn auth_disable(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    no_words(args, "auth disable command does not accept any arguments")?;
    call(ctx, |c, cb| c.auth_disable(cb))?;
    print(b"Authentication Disabled\n");
    Ok(())
}

fn auth_status(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    no_words(args, "auth status command does not accept any arguments")?;
    let r = call(ctx, |c, cb| c.auth_status(cb))?;
    let simple =
        format!("Authentication Status: {}\nAuthRevision: {}\n", r.enabled, r.auth_revision);
    let json = || {
        with_header(r.header.as_ref())
            .flag("enabled", r.enabled)
            .num("authRevision", r.auth_revision)
            .end()
    };
    print(&render(ctx, simple.into_bytes(), json));
    Ok(())
}

// ---- user ----

fn user_add(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let interactive = take_interactive(&mut args)?;
    let from_flag = args.take_value("new-user-password").unwrap_or_default();
    let no_password = args.take_bool("no-password")?;
    let [arg] = words(args, "user add command requires user name as its argument")?;
    if no_password {
        let r = call(ctx, |c, cb| c.user_add_no_password(arg.as_str(), cb))?;
        print_done(ctx, format!("User {arg} created\n"), r.header.as_ref());
        return Ok(());
    }
    let (name, password) = if !from_flag.is_empty() {
        (arg, from_flag)
    } else if let Some((name, password)) = arg.split_once(':') {
        if name.is_empty() {
            return Err(Failure::usage("empty user name is not allowed"));
        }
        (name.to_string(), password.to_string())
    } else {
        let password = read_password(interactive, &arg)?;
        (arg, password)
    };
    let r = call(ctx, |c, cb| c.user_add(name.as_str(), password, cb))?;
    print_done(ctx, format!("User {name} created\n"), r.header.as_ref());
    Ok(())
}

fn user_delete(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let [name] = words(args, "user delete command requires user name as its argument")?;
    let r = call(ctx, |c, cb| c.user_delete(name.as_str(), cb))?;
    print_done(ctx, format!("User {name} deleted\n"), r.header.as_ref());
    Ok(())
}

/// `--detail` prints each granted role as `role get` does, after a blank line.
fn user_get(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let detail = args.take_bool("detail")?;
    let [name] = words(args, "user get command requires user name as its argument")?;
    let r = call(ctx, |c, cb| c.user_get(name.as_str(), cb))?;
    if detail {
        print(format!("User: {name}\n").as_bytes());
        for role in &r.roles {
            print(b"\n");
            let perms = call(ctx, |c, cb| c.role_get(role.as_str(), cb))?;
            print(&role_text(ctx, role, &perms.perm, perms.header.as_ref()));
        }
        return Ok(());
    }
    let roles: String = r.roles.iter().map(|role| format!(" {role}")).collect();
    let simple = format!("User: {name}\nRoles:{roles}\n");
    let json = || with_header(r.header.as_ref()).list("roles", quoted(&r.roles)).end();
    print(&render(ctx, simple.into_bytes(), json));
    Ok(())
}

fn user_list(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    no_words(args, "user list command requires no arguments")?;
    let r = call(ctx, |c, cb| c.user_list(cb))?;
    print_names(ctx, "users", &r.users, r.header.as_ref());
    Ok(())
}

fn user_passwd(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let interactive = take_interactive(&mut args)?;
    let [name] = words(args, "user passwd command requires user name as its argument")?;
    let password = read_password(interactive, &name)?;
    let r = call(ctx, |c, cb| c.user_change_password(name.as_str(), password, cb))?;
    print_done(ctx, "Password updated\n".into(), r.header.as_ref());
    Ok(())
}

fn user_grant_role(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let [user, role] =
        words(args, "user grant command requires user name and role name as its argument")?;
    let r = call(ctx, |c, cb| c.user_grant_role(user.as_str(), role.as_str(), cb))?;
    print_done(ctx, format!("Role {role} is granted to user {user}\n"), r.header.as_ref());
    Ok(())
}

fn user_revoke_role(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let [user, role] =
        words(args, "user revoke-role requires user name and role name as its argument")?;
    let r = call(ctx, |c, cb| c.user_revoke_role(user.as_str(), role.as_str(), cb))?;
    print_done(ctx, format!("Role {role} is revoked from user {user}\n"), r.header.as_ref());
    Ok(())
}

// ---- role ----

fn role_add(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let [name] = words(args, "role add command requires role name as its argument")?;
    let r = call(ctx, |c, cb| c.role_add(name.as_str(), cb))?;
    print_done(ctx, format!("Role {name} created\n"), r.header.as_ref());
    Ok(())
}

fn role_delete(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let [name] = words(args, "role delete command requires role name as its argument")?;
    let r = call(ctx, |c, cb| c.role_delete(name.as_str(), cb))?;
    print_done(ctx, format!("Role {name} deleted\n"), r.header.as_ref());
    Ok(())
}

fn role_get(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    let [name] = words(args, "role get command requires role name as its argument")?;
    let r = call(ctx, |c, cb| c.role_get(name.as_str(), cb))?;
    print(&role_text(ctx, &name, &r.perm, r.header.as_ref()));
    Ok(())
}

fn role_list(ctx: &Ctx, args: Args) -> Result<(), Failure> {
    no_words(args, "role list command requires no arguments")?;
    let r = call(ctx, |c, cb| c.role_list(cb))?;
    print_names(ctx, "roles", &r.roles, r.header.as_ref());
    Ok(())
}

/// `ROLE TYPE KEY [END]`; words past those are ignored, as etcdctl does.
fn role_grant_permission(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let flags = RangeFlags::take(&mut args)?;
    let words = at_least(
        args,
        3,
        "role grant command requires role name, permission type, and key [endkey] as its argument",
    )?;
    let perm = permission_type(&words[1])?;
    let (key, end) = flags.range(&words[2..])?;
    let role = words[0].as_str();
    let r = call(ctx, |c, cb| c.role_grant_permission(role, perm, key, end, cb))?;
    print_done(ctx, format!("Role {role} updated\n"), r.header.as_ref());
    Ok(())
}

/// `ROLE KEY [END]`; the message names the key as given (not the `\0` sent for "").
fn role_revoke_permission(ctx: &Ctx, mut args: Args) -> Result<(), Failure> {
    let flags = RangeFlags::take(&mut args)?;
    let words = at_least(
        args,
        2,
        "role revoke-permission command requires role name and key [endkey] as its argument",
    )?;
    let (key, end) = flags.range(&words[1..])?;
    let (role, shown) = (words[0].as_str(), words[1].as_str());
    let r = call(ctx, |c, cb| c.role_revoke_permission(role, key, end.clone(), cb))?;
    let mut simple = Vec::new();
    if end.is_empty() {
        simple.extend_from_slice(format!("Permission of key {shown}").as_bytes());
    } else {
        simple.extend_from_slice(b"Permission of range ");
        push_range(&mut simple, shown.as_bytes(), &end);
    }
    simple.extend_from_slice(format!(" is revoked from role {role}\n").as_bytes());
    let json = || with_header(r.header.as_ref()).end();
    print(&render(ctx, simple, json));
    Ok(())
}

/// `--prefix` and `--from-key` of the permission commands.
struct RangeFlags {
    prefix: bool,
    from_key: bool,
}

impl RangeFlags {
    fn take(args: &mut Args) -> Result<RangeFlags, Failure> {
        Ok(RangeFlags { prefix: args.take_bool("prefix")?, from_key: args.take_bool("from-key")? })
    }

    /// The key and range end to send for `KEY [END]`, as etcdctl's `permRange`: an empty
    /// key is `\0` (the server's ranges are affine intervals), and with either flag covers
    /// every key.
    fn range(&self, words: &[String]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
        let key = words[0].as_bytes();
        let exclusive = || Failure::usage("--from-key and --prefix flags are mutually exclusive");
        if key.is_empty() {
            if self.prefix && self.from_key {
                return Err(exclusive());
            }
            let end = if self.prefix || self.from_key { b"\0".to_vec() } else { Vec::new() };
            return Ok((b"\0".to_vec(), end));
        }
        let end = match (words.get(1), self.prefix, self.from_key) {
            (None, true, true) => return Err(exclusive()),
            (None, true, false) => prefix_range_end(key).to_vec(),
            (None, false, true) => b"\0".to_vec(),
            (None, false, false) => Vec::new(),
            (Some(_), true, _) => {
                return Err(Failure::usage("unexpected endkey argument with --prefix flag"))
            }
            (Some(_), false, true) => {
                return Err(Failure::usage("unexpected endkey argument with --from-key flag"))
            }
            (Some(end), false, false) => end.as_bytes().to_vec(),
        };
        Ok((key.to_vec(), end))
    }
}

/// `read`, `write` or `readwrite`, in any case.
fn permission_type(word: &str) -> Result<PermissionType, Failure> {
    match word.to_uppercase().as_str() {
        "READ" => Ok(PermissionType::Read),
        "WRITE" => Ok(PermissionType::Write),
        "READWRITE" => Ok(PermissionType::Readwrite),
        _ => Err(Failure::usage(format!("invalid permission type: {word}"))),
    }
}

/// A role as `role get` prints it: the readable keys, then the writable ones.
fn role_text(ctx: &Ctx, name: &str, perms: &[Permission], h: Option<&ResponseHeader>) -> Vec<u8> {
    let allows = |p: &Permission, t: PermissionType| {
        p.perm_type == t as i32 || p.perm_type == PermissionType::Readwrite as i32
    };
    let mut simple = format!("Role {name}\nKV Read:\n").into_bytes();
    for p in perms.iter().filter(|p| allows(p, PermissionType::Read)) {
        perm_line(&mut simple, p);
    }
    simple.extend_from_slice(b"KV Write:\n");
    for p in perms.iter().filter(|p| allows(p, PermissionType::Write)) {
        perm_line(&mut simple, p);
    }
    let json = || {
        let perms = perms
            .iter()
            .map(|p| {
                Obj::new()
                    .num("permType", p.perm_type)
                    .bytes("key", &p.key)
                    .bytes("range_end", &p.range_end)
                    .end()
            })
            .collect();
        with_header(h).list("perm", perms).end()
    };
    render(ctx, simple, json)
}

/// One permission: `\tkey`, or the range and ` (prefix key)` when the range is exactly the
/// key's prefix range. Keys are written as raw bytes.
fn perm_line(out: &mut Vec<u8>, p: &Permission) {
    let (key, end) = (&p.key[..], &p.range_end[..]);
    out.push(b'\t');
    if end.is_empty() {
        out.extend_from_slice(key);
    } else {
        push_range(out, key, end);
        if prefix_range_end(key) == end {
            out.extend_from_slice(b" (prefix ");
            out.extend_from_slice(key);
            out.push(b')');
        }
    }
    out.push(b'\n');
}

/// `[key, end)`, or `[key, <open ended>` (sic) for `\0`.
fn push_range(out: &mut Vec<u8>, key: &[u8], end: &[u8]) {
    out.push(b'[');
    out.extend_from_slice(key);
    if end == b"\0" {
        out.extend_from_slice(b", <open ended>");
    } else {
        out.extend_from_slice(b", ");
        out.extend_from_slice(end);
        out.push(b')');
    }
}

// ---- shared ----

/// Runs one call to its end; failing to authenticate (a wrong password) fails as etcdctl
/// fails to set up its client, which authenticates first: exit 2.
fn call<T: 'static>(
    ctx: &Ctx,
    start: impl FnOnce(&Client, Box<dyn FnOnce(Result<T, EtcdError>)>),
) -> Result<T, Failure> {
    ctx.wait(|cb| start(&ctx.client, cb)).map_err(Failure::from)
}

/// Exactly `N` words after the flags (none unknown), else `usage` (exit 128).
fn words<const N: usize>(mut args: Args, usage: &str) -> Result<[String; N], Failure> {
    args.finish()?;
    args.rest().try_into().map_err(|_| Failure::usage(usage))
}

/// No words after the flags.
fn no_words(args: Args, usage: &str) -> Result<(), Failure> {
    words::<0>(args, usage).map(|_| ())
}

/// At least `n` words after the flags.
fn at_least(mut args: Args, n: usize, usage: &str) -> Result<Vec<String>, Failure> {
    args.finish()?;
    let words = args.rest();
    if words.len() < n {
        return Err(Failure::usage(usage));
    }
    Ok(words)
}

/// `--interactive`, which defaults to true: absent or bare is true, `=v` is parsed as
/// the boolean flags are.
fn take_interactive(args: &mut Args) -> Result<bool, Failure> {
    match args.take_value("interactive") {
        None => Ok(true),
        Some(v) => Args::parse(vec![format!("--interactive={v}")])?.take_bool("interactive"),
    }
}

/// A password from stdin: one word, or asked twice on the terminal.
fn read_password(interactive: bool, name: &str) -> Result<String, Failure> {
    if !interactive {
        return Ok(scan_word());
    }
    let first = ask(&format!("Password of {name}: "))?;
    if first.is_empty() {
        return Err(Failure::usage("empty password"));
    }
    let second = ask(&format!("Type password of {name} again for confirmation: "))?;
    if first != second {
        return Err(Failure::usage("given passwords are different"));
    }
    Ok(first)
}

/// Go's `fmt.Scanf("%s")` on stdin: spaces skipped, then one word; a newline or the end
/// of input first gives "".
fn scan_word() -> String {
    let mut word = Vec::new();
    let mut byte = [0u8];
    let mut stdin = std::io::stdin().lock();
    while stdin.read(&mut byte).unwrap_or(0) == 1 {
        match byte[0] {
            b'\n' => break,
            b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c' if word.is_empty() => continue,
            b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c' => break,
            b => word.push(b),
        }
    }
    String::from_utf8_lossy(&word).into_owned()
}

/// speakeasy's prompt: the prompt on stdout, echo off (`stty`, whose complaint about a
/// stdin that is no terminal goes to stderr), one line, echo on, a newline.
pub fn ask(prompt: &str) -> Result<String, Failure> {
    print(prompt.as_bytes());
    let stty = |arg: &str| Command::new("/bin/stty").arg(arg).status();
    stty("-echo").map_err(|e| Failure::usage(format!("failed to ask password: {e}")))?;
    let mut line = Vec::new();
    let read = std::io::stdin().lock().read_until(b'\n', &mut line);
    let _ = stty("echo");
    print(b"\n");
    read.map_err(|e| Failure::usage(format!("failed to ask password: {e}")))?;
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(String::from_utf8_lossy(line).into_owned())
}

/// A JSON object starting with the response header.
fn with_header(h: Option<&ResponseHeader>) -> Obj {
    Obj::new().raw("header", header(h))
}

/// Names as JSON strings.
fn quoted(names: &[String]) -> Vec<String> {
    names.iter().map(|n| quote(n)).collect()
}

/// etcdctl's simple text, or with `-w json` the response as one JSON line.
fn render(ctx: &Ctx, simple: Vec<u8>, json: impl FnOnce() -> String) -> Vec<u8> {
    if ctx.json {
        format!("{}\n", json()).into_bytes()
    } else {
        simple
    }
}

/// A confirmation line, or the (header-only) response as JSON.
fn print_done(ctx: &Ctx, simple: String, h: Option<&ResponseHeader>) {
    print(&render(ctx, simple.into_bytes(), || with_header(h).end()));
}

/// One name a line, or the response as JSON with the names under `field`.
fn print_names(ctx: &Ctx, field: &str, names: &[String], h: Option<&ResponseHeader>) {
    let simple: String = names.iter().map(|n| format!("{n}\n")).collect();
    print(&render(ctx, simple.into_bytes(), || with_header(h).list(field, quoted(names)).end()));
}
