//! `init`, `keys show`, `log` and `verify`: the ledger commands.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kling_audit_ledger::verify::{self, Report, VerifyOptions};
use kling_audit_ledger::{AppendError, Details, Durability, Entry, Ledger, LedgerOptions, Receipt};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Exit, Global};

/// Options shared by commands that write to the ledger.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    /// Durability mode: `sync` acknowledges after fdatasync; `buffered` after write(2).
    #[arg(long, default_value = "sync", env = "KLING_AUDIT_DURABILITY")]
    pub durability: Durability,
    /// Start a new segment once the current one would pass this size.
    #[arg(long, default_value_t = kling_audit_ledger::DEFAULT_MAX_SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_segment_bytes: u64,
    /// Push checkpoints to a witness: `URL=VKEY`, its add-checkpoint URL and cosigner verifier
    /// key (or `URL=@FILE`). Repeatable. At exit, waits up to 5 s for the final checkpoint's
    /// cosignatures; exit 1 if a witness refuses it (a rolled-back or forked ledger).
    #[arg(long = "witness", value_name = "URL=VKEY")]
    pub witnesses: Vec<String>,
}

impl WriteArgs {
    pub fn options(&self, g: &Global) -> LedgerOptions {
        let mut o = LedgerOptions::new(&g.dir);
        o.keys_dir = g.keys_dir.clone();
        o.durability = self.durability;
        o.max_segment_bytes = self.max_segment_bytes.max(1);
        o
    }
}

/// What to do about a failed write, for the operator of a command.
const FIX_STORAGE: &str = "Fix the storage (free space, or raise the file size limit)";

/// The storage failure behind `e`, without the writer's advice, which is for long-running
/// writers: each command says itself what the failure means for its records.
fn storage_cause(e: &AppendError) -> String {
    match e {
        AppendError::Poisoned { cause } => cause.clone(),
        other => other.to_string(),
    }
}

/// Prints a record's acknowledgement and flushes it, so that it is out before anything else
/// can fail.
fn print_ack(r: &Receipt) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{{\"seq\":{},\"hash\":\"{}\"}}",
        r.seq,
        hex::encode(r.hash)
    )?;
    out.flush()?;
    Ok(())
}

/// The error of a record that is durable but whose acknowledgement could not be printed (a
/// full disk, a closed pipe): the acknowledgement goes into the message instead, since a
/// retry would write the record twice. `closed` is the close that followed.
fn ack_not_printed(
    r: &Receipt,
    e: &anyhow::Error,
    closed: Result<kling_audit_ledger::Head, AppendError>,
) -> anyhow::Error {
    let mut message = format!(
        "record seq {} (hash {}) is durable and must not be written again, but its \
         acknowledgement could not be written to standard output: {e}",
        r.seq,
        hex::encode(r.hash)
    );
    if let Err(c) = closed {
        message.push_str(&close_also_failed(&c));
    }
    anyhow::anyhow!(message)
}

/// What a failed close after an unprinted acknowledgement means, as the end of a message.
fn close_also_failed(e: &AppendError) -> String {
    format!(
        ". Closing the ledger then failed too: {}, so no signed checkpoint covers the newest \
         records yet; the next command that writes to this ledger signs one",
        storage_cause(e)
    )
}

/// The error of a close that failed after records were acknowledged. They are durable, so a
/// script that retried the command would write them twice: the message leads with that.
fn close_failed(acked: &str, e: &AppendError) -> anyhow::Error {
    anyhow::anyhow!(
        "{acked} durable and must not be written again, but closing the ledger then failed: \
         {}, so no signed checkpoint covers the newest records yet. {FIX_STORAGE}; the next \
         command that writes to this ledger signs one",
        storage_cause(e)
    )
}

/// Opens the ledger for writing, telling the operator about created keys and repairs.
pub fn open_ledger(opts: LedgerOptions) -> Result<Ledger> {
    let (ledger, report) = Ledger::open(opts)?;
    if let Some(secrets) = &report.created_keys {
        eprintln!(
            "note: created a new ledger with keys in {}\n      verifier key: {}\n      \
             the MAC root key is stored beside them; run `kling-audit init` to keep it offline instead",
            report.keys_dir.display(),
            secrets.verifier_key
        );
    }
    if let Some(t) = &report.torn_tail {
        eprintln!(
            "warning: cut a torn tail of {} from {} at offset {} into {} (recorded as a ledger.recovery record)",
            crate::plural(t.len, "byte"), t.segment, t.offset, t.quarantine
        );
    }
    Ok(ledger)
}

pub fn init(g: &Global, origin: Option<String>) -> Result<Exit> {
    let keys_dir = g
        .keys_dir
        .clone()
        .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&g.dir));
    kling_audit_ledger::check_keys_outside(&g.dir, &keys_dir)?;
    if kling_audit_ledger::keys::exists(&keys_dir) {
        bail!(
            "keys already exist in {}; a ledger is initialised once. Use `kling-audit keys show` to see its public key",
            keys_dir.display()
        );
    }
    if g.dir.is_file() {
        bail!(
            "{} is a file, not a directory; choose another --dir",
            g.dir.display()
        );
    }
    let (segments, _) = kling_audit_ledger::segment::list_segments(&g.dir).unwrap_or_default();
    if !segments.is_empty() {
        bail!(
            "{} already holds a ledger whose keys are not in {}; pass its keys with --keys-dir. \
             New keys would mix two origins in one ledger",
            g.dir.display(),
            keys_dir.display()
        );
    }
    let origin = origin.unwrap_or_else(kling_audit_ledger::random_origin);
    let (_, secrets) =
        kling_audit_ledger::KeySet::create(&keys_dir, &origin, false).map_err(|e| {
            anyhow::anyhow!(
                "{e}. No key was shown and no record written: fix the cause (free space, \
                 permissions, the file size limit), delete {} if it exists, and run \
                 `kling-audit init` again",
                keys_dir.display()
            )
        })?;
    // The MAC root key exists nowhere else once this returns, so it is printed and flushed
    // before anything else can fail or be interrupted; an error of the first record follows.
    let shown = (|| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ledger directory: {}", g.dir.display())?;
        writeln!(out, "keys directory:   {}", keys_dir.display())?;
        writeln!(out, "origin:           {origin}")?;
        writeln!(out, "verifier key:     {}", secrets.verifier_key)?;
        writeln!(out, "MAC root key:     {}", &*secrets.mac_root_hex)?;
        writeln!(out)?;
        writeln!(
            out,
            "Give the verifier key to your auditors. Store the MAC root key offline now:"
        )?;
        writeln!(
            out,
            "it is shown only this once and is not kept on this machine."
        )?;
        out.flush()
    })();
    if let Err(e) = shown {
        bail!(
            "cannot write the keys to standard output ({e}), so the MAC root key was not shown \
             and is lost. No record was written: delete {} and run `kling-audit init` again \
             with an output that can be written",
            keys_dir.display()
        );
    }
    write_first_record(g, &keys_dir, &origin)?;
    Ok(Exit::Ok)
}

/// Type of the record `init` starts every ledger with.
const INIT_RECORD_TYPE: &str = "ledger.init";

/// Writes record 0, `ledger.init`, and the signed checkpoint of size 1 that closing makes. A
/// ledger thus always holds records, so a directory without any can only have been wiped and
/// `verify` rightly calls it truncated (docs/format.md, "An empty ledger").
fn write_first_record(g: &Global, keys_dir: &Path, origin: &str) -> Result<()> {
    let not_written = "the keys above were created, but the ledger's first record could not be \
                       written; once the cause is fixed, `kling-audit log` starts the ledger with \
                       these keys";
    let mut opts = LedgerOptions::new(&g.dir);
    opts.keys_dir = Some(keys_dir.to_path_buf());
    opts.create_keys = false;
    let details = Details::from_value(&serde_json::json!({ "origin": origin }))?;
    let entry = Entry::new(INIT_RECORD_TYPE, "kling-audit", details)?;
    let (ledger, _) = Ledger::open(opts).context(not_written)?;
    let receipt = ledger
        .append(entry)
        .map_err(|e| anyhow::anyhow!(storage_cause(&e)))
        .context(not_written)?;
    let printed = print_ack(&receipt);
    let closed = ledger.close();
    if let Err(e) = printed {
        return Err(ack_not_printed(&receipt, &e, closed));
    }
    closed.map_err(|e| close_failed(&format!("record seq {} is", receipt.seq), &e))?;
    Ok(())
}

pub fn keys_show(g: &Global) -> Result<Exit> {
    let keys_dir = g
        .keys_dir
        .clone()
        .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&g.dir));
    let path = keys_dir.join(kling_audit_ledger::keys::VERIFIER_FILE);
    let key = std::fs::read_to_string(&path).with_context(|| {
        // `init` refuses a directory that holds records: its keys are elsewhere, or lost.
        let has_records = kling_audit_ledger::segment::list_segments(&g.dir)
            .is_ok_and(|(segments, _)| !segments.is_empty());
        if has_records {
            format!(
                "no verifier key at {}, but {} holds a ledger: pass the keys directory it was \
                 written with via --keys-dir",
                path.display(),
                g.dir.display()
            )
        } else {
            format!(
                "no verifier key at {}; run `kling-audit init` first",
                path.display()
            )
        }
    })?;
    println!("keys directory: {}", keys_dir.display());
    println!("verifier key:   {}", key.trim());
    Ok(Exit::Ok)
}

pub fn log_one(
    g: &Global,
    w: &WriteArgs,
    kind: String,
    actor: String,
    details: Option<String>,
) -> Result<Exit> {
    let details = match details {
        Some(text) => Details::parse(&text).context("--details is not usable")?,
        None => Details::empty(),
    };
    let entry = Entry::new(kind, actor, details)?;
    let mut opts = w.options(g);
    let pusher = crate::witness_cmd::attach_pusher(&mut opts, &w.witnesses)?;
    let ledger = open_ledger(opts)?;
    let receipt = match ledger.append(entry) {
        Ok(r) => r,
        Err(e @ AppendError::Entry(_)) => return Err(e.into()),
        Err(e) => bail!(
            "the record was not written: {}. {FIX_STORAGE}, then run the command again",
            storage_cause(&e)
        ),
    };
    // Acknowledged before closing: a close that fails leaves the record durable, and must not
    // read as a lost record that a retry would write twice.
    let printed = print_ack(&receipt);
    let closed = ledger.close();
    if let Err(e) = printed {
        return Err(ack_not_printed(&receipt, &e, closed));
    }
    let head = closed.map_err(|e| close_failed(&format!("record seq {} is", receipt.seq), &e))?;
    if pusher.is_some_and(|p| p.finish(head.checkpoint_size)) {
        return Ok(Exit::Fault);
    }
    Ok(Exit::Ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StdinEntry<'a> {
    #[serde(rename = "type")]
    kind: String,
    actor: String,
    #[serde(borrow)]
    details: Option<&'a RawValue>,
}

fn parse_stdin_line(line: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not valid UTF-8 ({e})"))?;
    let e: StdinEntry<'_> = serde_json::from_str(text).map_err(|e| {
        format!("expected a JSON object with `type`, `actor` and optional `details`: {e}")
    })?;
    let details = match e.details {
        Some(raw) => Details::parse(raw.get()).map_err(|e| e.to_string())?,
        None => Details::empty(),
    };
    Entry::new(e.kind, e.actor, details).map_err(|e| e.to_string())
}

/// Appends one record per input line, printing each acknowledgement once it is durable.
pub fn log_stdin(g: &Global, w: &WriteArgs) -> Result<Exit> {
    let mut opts = w.options(g);
    let pusher = crate::witness_cmd::attach_pusher(&mut opts, &w.witnesses)?;
    // The ledger is opened at the first valid line: input without one must not leave a new,
    // empty ledger behind, which `verify` would rightly call wiped.
    let mut opts = Some(opts);
    let mut ledger: Option<Ledger> = None;
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<(usize, kling_audit_ledger::PendingAppend)>(8192);
    // Set once standard output fails: input is read no further.
    let output_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let output_failed_in_printer = Arc::clone(&output_failed);
    // Acknowledgements are printed in input order by a second thread, so input keeps flowing
    // into the writer's queue while earlier records are being synced.
    let printer = std::thread::spawn(move || -> Result<Printed> {
        let mut refused = 0;
        // After a storage failure every later line fails the same way: it is said once, with
        // the range of lines it cost at the end.
        let mut failed: Option<(usize, usize)> = None;
        // Records made durable after standard output failed: said once, at the end.
        let mut unprinted: Option<Unprinted> = None;
        for (line_no, pending) in rx {
            match pending.wait() {
                Ok(r) => match &mut unprinted {
                    Some(u) => (u.last_line, u.last_seq) = (line_no, r.seq),
                    None => {
                        if let Err(e) = print_ack(&r) {
                            output_failed_in_printer
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            unprinted = Some(Unprinted {
                                cause: e.to_string(),
                                first_line: line_no,
                                last_line: line_no,
                                first_seq: r.seq,
                                last_seq: r.seq,
                            });
                        }
                    }
                },
                // The entry itself was refused (too large once stamped): bad input, not a
                // storage failure.
                Err(AppendError::Entry(e)) => {
                    eprintln!("error: line {line_no}: {e}; this line was not recorded");
                    refused += 1;
                }
                Err(e) => match &mut failed {
                    None => {
                        eprintln!("error: line {line_no}: not recorded: {}", storage_cause(&e));
                        failed = Some((line_no, line_no));
                    }
                    Some((_, last)) => *last = line_no,
                },
            }
        }
        Ok(Printed {
            refused,
            failed,
            unprinted,
        })
    });
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut buf = Vec::new();
    let mut bad = 0usize;
    let mut line_no = 0usize;
    while let Some(complete) = read_bounded_line(&mut reader, &mut buf, MAX_INPUT_LINE)
        .context("cannot read standard input")?
    {
        if output_failed.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        line_no += 1;
        if !complete {
            eprintln!(
                "error: line {line_no}: longer than {MAX_INPUT_LINE} bytes, more than any record \
                 can hold; this line was not recorded"
            );
            bad += 1;
            continue;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_stdin_line(line) {
            Ok(entry) => {
                if let Some(o) = opts.take() {
                    ledger = Some(open_ledger(o)?);
                }
                let Some(l) = &ledger else { break };
                let pending = l.submit(entry)?;
                if tx.send((line_no, pending)).is_err() {
                    break;
                }
            }
            Err(reason) => {
                eprintln!("error: line {line_no}: {reason}; this line was not recorded");
                bad += 1;
            }
        }
    }
    drop(tx);
    let Printed {
        refused: refused_entries,
        failed,
        unprinted,
    } = printer
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))??;
    let bad = bad + refused_entries;
    let closed = ledger.map(|l| l.close());
    if let Some(u) = unprinted {
        let mut message = format!(
            "acknowledgements could not be written to standard output from line {} on ({}); \
             the records of lines {} to {} are durable nonetheless (seq {} to {}) and must not \
             be sent again. Input after line {} was not recorded: send it again with an output \
             that can be written",
            u.first_line, u.cause, u.first_line, u.last_line, u.first_seq, u.last_seq, u.last_line
        );
        if let Some(Err(e)) = &closed {
            message.push_str(&close_also_failed(e));
        }
        bail!(message);
    }
    if let Some((first, last)) = failed {
        // Closing failed too, for the cause already shown with line {first}.
        bail!(
            "input lines {first} to {last} were not recorded (the lines after {first} only if \
             they were valid); lines before {first} were, as their acknowledgements show. \
             {FIX_STORAGE}, then send lines {first} to {last} again"
        );
    }
    if bad > 0 {
        eprintln!(
            "{bad} input line{} refused; every other line was recorded",
            if bad == 1 { " was" } else { "s were" }
        );
    }
    let refused = match closed {
        Some(Ok(head)) => pusher.is_some_and(|p| p.finish(head.checkpoint_size)),
        Some(Err(e)) => return Err(close_failed("every record acknowledged above is", &e)),
        None => false,
    };
    Ok(if refused || bad > 0 {
        Exit::Fault
    } else {
        Exit::Ok
    })
}

/// What the output thread of `log --stdin` saw.
struct Printed {
    /// Lines whose entry the ledger refused (too large once stamped).
    refused: usize,
    /// The first and last line a storage failure cost.
    failed: Option<(usize, usize)>,
    unprinted: Option<Unprinted>,
}

/// Records made durable whose acknowledgements could not be printed.
struct Unprinted {
    cause: String,
    first_line: usize,
    last_line: usize,
    first_seq: u64,
    last_seq: u64,
}

/// Longest input line `log --stdin` reads; longer lines are skipped without being buffered.
const MAX_INPUT_LINE: usize = kling_audit_ledger::record::MAX_RECORD_BYTES + 64 * 1024;

/// Reads one line into `buf`, keeping at most `max` bytes of it. Returns `None` at the end of
/// the input, `Some(false)` for a line that was too long (its rest is skipped, not stored).
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(!too_long));
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        reader.consume(take);
        if done {
            return Ok(Some(!too_long));
        }
    }
}

/// Output format of `verify`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The checkpoint verifier key (`<name>+<id>+<base64>`), or `@FILE` to read it from a file.
    #[arg(long, env = "KLING_AUDIT_VERIFIER_KEY")]
    pub key: Option<String>,
    /// The MAC root key in hex, or `@FILE`.
    #[arg(long, env = "KLING_AUDIT_MAC_KEY", hide_env_values = true)]
    pub mac_key: Option<String>,
    /// A signed checkpoint kept from earlier; the ledger must extend it.
    #[arg(long)]
    pub trusted_checkpoint: Option<PathBuf>,
    /// Stop listing faults after this many (all are still counted).
    #[arg(long, default_value_t = verify::DEFAULT_MAX_FAULTS)]
    pub max_faults: usize,
    /// A witness's cosigner verifier key (`<name>+<id>+<base64>` or `@FILE`); repeatable. Each
    /// must have cosigned a checkpoint of this ledger (see docs/witness.md). Needs --key.
    #[arg(long = "witness-key", value_name = "KEY")]
    pub witness_keys: Vec<String>,
}

/// Reads `@FILE` arguments, or returns the text itself.
pub fn arg_or_file(value: &str) -> Result<String> {
    match value.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {path}"))?
            .trim()
            .to_owned()),
        None => Ok(value.trim().to_owned()),
    }
}

/// A 32-byte key given on the command line as 64 hex digits, or as `@FILE` holding them;
/// `like` says where such a key is seen ("as `kling-audit init` printed it"). Errors say what
/// form the value must take and what it was like, never the value itself, which is a secret.
pub fn key_arg(flag: &str, value: &str, what: &str, like: &str) -> Result<[u8; 32]> {
    let text = arg_or_file(value)?;
    let mut key = [0u8; 32];
    if hex::decode_to_slice(&text, &mut key).is_ok() {
        return Ok(key);
    }
    let n = text.chars().count();
    let found = if text.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("found {}", crate::plural(n as u64, "hex digit"))
    } else {
        format!(
            "found {}, not all of them hex digits",
            crate::plural(n as u64, "character")
        )
    };
    match value.strip_prefix('@') {
        Some(file) => bail!(
            "the {what} in {file} (from {flag}) is malformed: it must be 64 hex digits, \
             {like}; {found}"
        ),
        None => bail!(
            "the value of {flag} is malformed: give the {what} as 64 hex digits, {like}, or as \
             @FILE naming a file that holds them; {found}"
        ),
    }
}

/// Verification options from `--key` and `--mac-key`; with `from_keys_dir`, keys not given
/// are taken from the ledger's keys directory when it has them (the operator's own view).
pub fn verify_options(
    g: &Global,
    key: &Option<String>,
    mac_key: &Option<String>,
    from_keys_dir: bool,
) -> Result<VerifyOptions> {
    let mut opts = VerifyOptions::default();
    let keys_dir = g
        .keys_dir
        .clone()
        .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&g.dir));
    if let Some(k) = key {
        opts.verifier_key = Some(arg_or_file(k)?);
    } else if from_keys_dir {
        let path = keys_dir.join(kling_audit_ledger::keys::VERIFIER_FILE);
        opts.verifier_key = std::fs::read_to_string(path)
            .ok()
            .map(|k| k.trim().to_owned());
    }
    if let Some(k) = mac_key {
        opts.mac_root = Some(key_arg(
            "--mac-key",
            k,
            "MAC root key",
            "as `kling-audit init` printed it",
        )?);
    } else if from_keys_dir {
        opts.mac_root = kling_audit_ledger::keys::load_mac_root(&keys_dir)
            .ok()
            .flatten();
    }
    // The writer refuses a ledger shorter than what its keys signed; a verifier that can see
    // the keys directory says the same instead of calling the ledger intact.
    opts.signed_head = kling_audit_ledger::keys::load_signed_head(&keys_dir)
        .with_context(|| format!("the keys directory {} is damaged", keys_dir.display()))?;
    Ok(opts)
}

/// Flags of `kling-audit report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The verifier key to check signatures with (default: the keys directory's).
    #[arg(long, env = "KLING_AUDIT_VERIFIER_KEY")]
    pub key: Option<String>,
    /// The MAC root key (default: the keys directory's, when it keeps one).
    #[arg(long, env = "KLING_AUDIT_MAC_KEY", hide_env_values = true)]
    pub mac_key: Option<String>,
}

/// `kling-audit checkpoint`: the newest signed checkpoint, for an auditor to keep and later
/// pass to `verify --trusted-checkpoint`.
pub fn checkpoint(g: &Global, out: Option<&Path>) -> Result<Exit> {
    kling_audit_ledger::verify::check_ledger_dir(&g.dir)?;
    let (cps, _) = kling_audit_ledger::cpstore::read_checkpoints(&g.dir)
        .with_context(|| format!("cannot read the checkpoints of {}", g.dir.display()))?;
    let newest = cps
        .iter()
        .max_by_key(|c| c.size)
        .context("the ledger has no signed checkpoint yet; append a record first")?;
    match out {
        Some(path) => {
            std::fs::write(path, &newest.note)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote the signed checkpoint of size {} to {}",
                newest.size,
                path.display()
            );
        }
        None => print!("{}", newest.note),
    }
    Ok(Exit::Ok)
}

pub fn verify_cmd(g: &Global, a: &VerifyArgs) -> Result<Exit> {
    let mut opts = verify_options(g, &a.key, &a.mac_key, false)?;
    opts.max_faults = Some(a.max_faults);
    for k in &a.witness_keys {
        opts.witness_keys.push(arg_or_file(k)?);
    }
    if let Some(p) = &a.trusted_checkpoint {
        opts.trusted_checkpoint = Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        );
    }
    let bar = progress_bar(&g.dir);
    if let Some(bar) = &bar {
        let bar = bar.clone();
        opts.progress = Some(Arc::new(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        }));
    }
    let report = verify::verify(&g.dir, &opts)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_text(&report),
    }
    Ok(if report.intact { Exit::Ok } else { Exit::Fault })
}

fn progress_bar(dir: &Path) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // Small ledgers verify faster than a bar can be drawn.
    if total < 64 * 1024 * 1024 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes} {eta}")
            .ok()?,
    );
    Some(bar)
}

fn print_text(r: &Report) {
    for f in &r.faults {
        let mut loc = String::new();
        if let Some(s) = &f.segment {
            loc.push_str(&format!(" segment={s}"));
        }
        if let Some(l) = f.line {
            loc.push_str(&format!(" line={l}"));
        }
        if let Some(s) = f.seq {
            loc.push_str(&format!(" seq={s}"));
        }
        println!("{:<20}{}  {}", f.kind.code(), loc, f.message);
    }
    if r.faults_total > r.faults.len() as u64 {
        println!(
            "... and {} more not listed",
            plural(r.faults_total - r.faults.len() as u64, "fault")
        );
    }
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".to_owned(),
    };
    let sigs = if r.checkpoints.signatures_checked {
        "signatures checked"
    } else {
        "signatures NOT checked"
    };
    let macs = if r.macs_checked {
        "MACs checked"
    } else {
        "MACs NOT checked"
    };
    use crate::plural;
    println!(
        "{}: {} in {} ({range}), {} up to size {} ({sigs}), {macs}",
        if r.intact { "INTACT" } else { "FAULTY" },
        plural(r.records, "record"),
        plural(r.segments as u64, "segment"),
        plural(r.checkpoints.count as u64, "checkpoint"),
        r.checkpoints.largest_size
    );
    if let Some(h) = &r.head {
        println!("head {h}  root {}", r.root);
    }
    if let Some(w) = r.checkpoints.witnessed_size {
        println!("witnessed up to size {w}");
    }
    if !r.intact {
        println!("{} found", plural(r.faults_total, "fault"));
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if let Some(e) = &r.equivocation {
        println!(
            "equivocation evidence (two signed, inconsistent checkpoints for size {}):",
            e.size
        );
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProveArgs {
    /// Make an inclusion bundle for the record with this seq.
    #[arg(
        long,
        conflicts_with = "consistency",
        required_unless_present = "consistency"
    )]
    pub seq: Option<u64>,
    /// Make a consistency bundle from the signed checkpoint of this size...
    #[arg(long)]
    pub consistency: Option<u64>,
    /// ...to the signed checkpoint of this size (default: the newest).
    #[arg(long, requires = "consistency")]
    pub to: Option<u64>,
    /// Write the bundle here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn own_verifier_key(g: &Global) -> Result<String> {
    let keys_dir = g
        .keys_dir
        .clone()
        .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&g.dir));
    let path = keys_dir.join(kling_audit_ledger::keys::VERIFIER_FILE);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("no verifier key at {}; pass --keys-dir", path.display()))?
        .trim()
        .to_owned())
}

pub fn prove(g: &Global, a: &ProveArgs) -> Result<Exit> {
    use kling_audit_ledger::proof;
    kling_audit_ledger::verify::check_ledger_dir(&g.dir)?;
    let key = own_verifier_key(g)?;
    let json = match (a.seq, a.consistency) {
        (Some(seq), _) => {
            serde_json::to_string_pretty(&proof::make_inclusion_bundle(&g.dir, seq, &key)?)?
        }
        (None, Some(old)) => {
            serde_json::to_string_pretty(&proof::make_consistency_bundle(&g.dir, old, a.to, &key)?)?
        }
        (None, None) => bail!("give --seq N or --consistency OLD_SIZE"),
    };
    match &a.out {
        Some(path) => {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{json}"),
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyProofArgs {
    /// The bundle file made by `kling-audit prove`.
    pub bundle: PathBuf,
    /// The auditor's pinned verifier key (`<name>+<id>+<base64>` or `@FILE`). The key inside
    /// the bundle is never trusted.
    #[arg(long, env = "KLING_AUDIT_VERIFIER_KEY")]
    pub key: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn verify_proof(a: &VerifyProofArgs) -> Result<Exit> {
    use kling_audit_ledger::proof::{verify_bundle, Verdict};
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("cannot read {}", a.bundle.display()))?;
    let key = arg_or_file(&a.key)?;
    match verify_bundle(&bytes, &key) {
        Ok(Verdict::Inclusion(v)) => {
            match a.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"valid": true, "kind": "inclusion", "verdict": v})
                ),
                Format::Text => println!(
                    "VALID: record seq {} ({} by {} at {}) is included in {} at tree size {}",
                    v.seq, v.record_type, v.actor, v.ts, v.origin, v.tree_size
                ),
            }
            Ok(Exit::Ok)
        }
        Ok(Verdict::Consistency(v)) => {
            match a.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"valid": true, "kind": "consistency", "verdict": v})
                ),
                Format::Text => println!(
                    "VALID: {} at size {} extends its signed state at size {}",
                    v.origin, v.new_size, v.old_size
                ),
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            match a.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"valid": false, "error": e.to_string()})
                ),
                Format::Text => println!("INVALID: {e}"),
            }
            Ok(Exit::Fault)
        }
    }
}
