//! `match-prompt` and `match-path`: let an auditor who holds the deployment's commit key check
//! whether a given prompt was submitted, or a given path the gateway does not know (or a query
//! whose values it does not all record) was requested, and in which records.
//!
//! Records never hold prompts, only keyed commitments (`Commitments::text`), nor the paths the
//! gateway records as route `other`, only theirs (`Commitments::path`), nor queries whose
//! values they do not all keep, only theirs (`Commitments::query`); each kind under its own
//! label, so a prompt never matches a path or a query. Each command computes the commitment of
//! the candidate and looks for it as a string value anywhere in every record's details, so
//! `match-prompt` finds the audited client's `text[]` entries and the gateway's `prompts[]`
//! entries alike, and `match-path` the gateway's `path_hmac` (or `query_hmac`) fields. Lines
//! that do not parse as records are skipped and counted.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kling_api::routes::{self, OperationKind};
use kling_audit_gateway::inspect;
use kling_audit_ledger::keys::{parse_key_hex, COMMIT_FILE};
use kling_audit_ledger::record::parse_line;
use kling_audit_ledger::segment::list_segments;
use kling_audit_ledger::Commitments;
use serde_json::{json, Value};

use crate::ledger_cmds::Format;
use crate::{Exit, Global};

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("candidate").required(true).args(["prompt", "prompt_file"])))]
pub struct MatchPromptArgs {
    /// The prompt (or negative prompt, shot prompt, lip-sync text) to look for, exactly.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Read the text from a file; one trailing line break is removed.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// The commit key in hex, or `@FILE` (default: `commit.key` in the keys directory).
    #[arg(long, env = "KLING_AUDIT_COMMIT_KEY", hide_env_values = true)]
    pub commit_key: Option<String>,
    /// `text`: one line per match; `json`: one document with every match.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MatchPathArgs {
    /// The request path to look for, exactly as sent: from its leading `/`, escapes as sent.
    /// With a query (`/path?a=1&b=2`, as sent), the records found are those committing that
    /// query whose path is this one.
    #[arg(long)]
    pub path: String,
    /// The commit key in hex, or `@FILE` (default: `commit.key` in the keys directory).
    #[arg(long, env = "KLING_AUDIT_COMMIT_KEY", hide_env_values = true)]
    pub commit_key: Option<String>,
    /// `text`: one line per match; `json`: one document with every match.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// One record holding the commitment.
#[derive(Debug, Clone, PartialEq)]
struct Match {
    seq: u64,
    ts: String,
    kind: String,
    actor: String,
    /// The request field the commitment stands for (`prompt`, `multi_prompt[0].prompt`, ...),
    /// when the record names it.
    field: Option<String>,
    /// Where in `details` the commitment sits.
    path: String,
}

fn read_candidate(a: &MatchPromptArgs) -> Result<String> {
    if let Some(p) = &a.prompt {
        return Ok(p.clone());
    }
    let Some(path) = &a.prompt_file else {
        bail!("give --prompt or --prompt-file");
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompt file {}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

fn commit_key(g: &Global, given: Option<&str>) -> Result<[u8; 32]> {
    let (origin, text) = match given {
        Some(value) => {
            return crate::ledger_cmds::key_arg(
                "--commit-key",
                value,
                "commit key",
                "as the keys directory's commit.key holds it",
            )
        }
        None => {
            let keys = g
                .keys_dir
                .clone()
                .unwrap_or_else(|| kling_audit_ledger::default_keys_dir(&g.dir));
            let path = keys.join(COMMIT_FILE);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no commit key at {}; pass --keys-dir or --commit-key HEX|@FILE",
                    path.display()
                )
            })?;
            (path, text)
        }
    };
    Ok(parse_key_hex(&origin, &text)?)
}

/// Every place in `value` where a string equals `needle`, with the nearest `field` name.
fn find_commitment(
    value: &Value,
    needle: &str,
    path: &str,
    out: &mut Vec<(String, Option<String>)>,
) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if v.as_str() == Some(needle) {
                    let field = map.get("field").and_then(Value::as_str).map(str::to_owned);
                    out.push((child, field));
                } else {
                    find_commitment(v, needle, &child, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                if v.as_str() == Some(needle) {
                    out.push((child, None));
                } else {
                    find_commitment(v, needle, &child, out);
                }
            }
        }
        _ => {}
    }
}

struct Scan {
    matches: Vec<Match>,
    records: u64,
    skipped: u64,
}

/// Scans the ledger for records holding `commitment` whose details `accept` takes.
fn scan(dir: &Path, commitment: &str, accept: &dyn Fn(&Value) -> bool) -> Result<Scan> {
    let (segments, _) = list_segments(dir)
        .with_context(|| format!("cannot list the ledger directory {}", dir.display()))?;
    let mut out = Scan {
        matches: Vec::new(),
        records: 0,
        skipped: 0,
    };
    for seg in segments {
        let data = kling_audit_ledger::segment::read_segment(&seg.path)
            .with_context(|| format!("cannot read {}", seg.path.display()))?;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(view) = parse_line(line) else {
                out.skipped += 1;
                continue;
            };
            out.records += 1;
            // A cheap byte test first: most records do not contain the commitment at all.
            if !view.details.get().contains(commitment) {
                continue;
            }
            let Ok(details) = serde_json::from_str::<Value>(view.details.get()) else {
                out.skipped += 1;
                continue;
            };
            if !accept(&details) {
                continue;
            }
            let mut hits = Vec::new();
            find_commitment(&details, commitment, "", &mut hits);
            for (path, field) in hits {
                out.matches.push(Match {
                    seq: view.seq,
                    ts: view.ts.to_owned(),
                    kind: view.kind_str(),
                    actor: view.actor_str(),
                    field,
                    path,
                });
            }
        }
    }
    Ok(out)
}

pub fn match_prompt(g: &Global, a: &MatchPromptArgs) -> Result<Exit> {
    let candidate = read_candidate(a)?;
    let key = commit_key(g, a.commit_key.as_deref())?;
    let commitment = Commitments::new(key).text(&candidate);
    report_matches(g, &commitment, &candidate, "text", a.format, &|_| true)
}

pub fn match_path(g: &Global, a: &MatchPathArgs) -> Result<Exit> {
    let (path, query) = match a.path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (a.path.as_str(), None),
    };
    // Records commit the path as the gateway received it: a whole URL or a fragment (which
    // never reaches a server) would never match.
    if !path.starts_with('/') || a.path.contains('#') {
        bail!(
            "--path takes a path from its leading /, with its query if any and without a \
             fragment, such as /v1/videos/some-route/123 or /v1/videos/text2video?pageNum=1&x=2"
        );
    }
    let Some(query) = query else {
        let key = commit_key(g, a.commit_key.as_deref())?;
        let commitment = Commitments::new(key).path(path);
        return report_matches(g, &commitment, path, "path", a.format, &|_| true);
    };
    // The gateway commits a query only when its record does not keep every value sent.
    let summary = inspect::query_summary(routes::query_pairs_borrowed(Some(query)));
    if !summary.is_some_and(|s| s.unrecorded_values) {
        bail!(
            "records keep every value of this query in their `query` field and commit none of \
             it; look for the path alone (without the query) and read `query` in the records \
             found (a route the gateway knows is recorded by name, not by commitment)"
        );
    }
    let key = commit_key(g, a.commit_key.as_deref())?;
    let commitments = Commitments::new(key);
    let path_commitment = commitments.path(path);
    let commitment = commitments.query(query);
    let of_path = |details: &Value| record_is_of_path(details, path, query, &path_commitment);
    report_matches(g, &commitment, &a.path, "query", a.format, &of_path)
}

/// Whether a record holding a query's commitment is of `path`: its `path_hmac` is the path's
/// commitment or, on a route the gateway knows (recorded by name, without `path_hmac`), `path`
/// is that route, with the same task id or external id where the route has one.
fn record_is_of_path(details: &Value, path: &str, query: &str, path_commitment: &str) -> bool {
    if let Some(hmac) = details.get("path_hmac") {
        return hmac.as_str() == Some(path_commitment);
    }
    let Some(method) = details.get("method").and_then(Value::as_str) else {
        return false;
    };
    let op = routes::classify(method, path, Some(query));
    // A path the gateway does not know is recorded with its commitment, checked above.
    if op.kind == OperationKind::Unknown
        || details.get("route").and_then(Value::as_str) != Some(inspect::route_label(&op))
    {
        return false;
    }
    // Records keep ids capped at 128 characters.
    let same = |field: &str, id: &str| {
        details.get(field).and_then(Value::as_str) == Some(inspect::cap_chars(id, 128).as_str())
    };
    match &op.kind {
        OperationKind::QueryOne { task_id } => same("task_id", task_id),
        OperationKind::LookupByExternalId {
            external_task_id, ..
        } => same("external_task_id", external_task_id),
        _ => true,
    }
}

/// Scans the ledger for `commitment`, the commitment of `candidate` (a `what`: text, path or
/// query), in records whose details `accept` takes, and prints what it found. Exit 0 found, 1
/// not found.
fn report_matches(
    g: &Global,
    commitment: &str,
    candidate: &str,
    what: &str,
    format: Format,
    accept: &dyn Fn(&Value) -> bool,
) -> Result<Exit> {
    kling_audit_ledger::verify::check_ledger_dir(&g.dir)?;
    let result = scan(&g.dir, commitment, accept)?;
    if result.skipped > 0 {
        let what = if result.skipped == 1 {
            "1 line could not be read as a record and was".to_owned()
        } else {
            format!(
                "{} lines could not be read as records and were",
                result.skipped
            )
        };
        eprintln!("warning: {what} skipped; run `kling-audit verify`");
    }
    match format {
        Format::Json => {
            let matches: Vec<Value> = result
                .matches
                .iter()
                .map(|m| {
                    json!({"seq": m.seq, "ts": m.ts, "type": m.kind, "actor": m.actor,
                           "field": m.field, "path": m.path})
                })
                .collect();
            let doc = json!({
                "found": !matches.is_empty(),
                "commitment": commitment,
                "chars": candidate.chars().count(),
                "records_scanned": result.records,
                "lines_skipped": result.skipped,
                "matches": matches,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            for m in &result.matches {
                println!(
                    "seq={} ts={} type={} actor={} field={} path={}",
                    m.seq,
                    m.ts,
                    m.kind,
                    m.actor,
                    m.field.as_deref().unwrap_or("-"),
                    m.path
                );
            }
            if result.matches.is_empty() {
                println!(
                    "no record holds this {what}'s commitment ({} scanned)",
                    crate::plural(result.records, "record")
                );
            } else {
                println!(
                    "{} in {} scanned",
                    crate::plural_of(result.matches.len() as u64, "match", "matches"),
                    crate::plural(result.records, "record")
                );
            }
        }
    }
    Ok(if result.matches.is_empty() {
        Exit::Fault
    } else {
        Exit::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_are_found_at_any_depth_with_their_field() {
        let details = json!({"request": {"text": [
            {"field": "prompt", "commitment": "abc", "chars": 3},
            {"field": "negative_prompt", "commitment": "def", "chars": 3}]},
            "list": ["x", "abc"], "other": "abcd"});
        let mut hits = Vec::new();
        find_commitment(&details, "abc", "", &mut hits);
        hits.sort();
        assert_eq!(
            hits,
            vec![
                ("list[1]".to_owned(), None),
                (
                    "request.text[0].commitment".to_owned(),
                    Some("prompt".to_owned())
                ),
            ]
        );
        let mut none = Vec::new();
        find_commitment(&details, "ab", "", &mut none);
        assert!(none.is_empty());
    }
}
