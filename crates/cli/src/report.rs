//! `kling-audit report`: a summary of a verified ledger for a compliance reader.
//!
//! The report is built only from a ledger that verified intact: records that failed
//! verification are never summarized as if they were evidence.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use kling_api::task::TaskStatus;
use serde::Serialize;
use serde_json::Value;

/// Counts over one ledger.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub records: u64,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    pub by_type: BTreeMap<String, u64>,
    /// Requests per actor (gateway requests and audited-client intents).
    pub requests_by_actor: BTreeMap<String, u64>,
    /// Answers by outcome and business code, e.g. `kling-error 1303`.
    pub answers: BTreeMap<String, u64>,
    /// Refusals by the gateway itself, by reason.
    pub denied: BTreeMap<String, u64>,
    /// Final task states seen, by status; the legacy `succeed` is counted as `succeeded`.
    pub tasks_final: BTreeMap<String, u64>,
    /// Units deducted per actor, from final task states.
    pub units_by_actor: BTreeMap<String, f64>,
    pub callbacks_received: u64,
    pub callbacks_relayed: u64,
}

/// Reads every record of `dir` (which the caller has verified) into a summary.
pub fn summarize(dir: &Path) -> Result<Summary> {
    let (segments, _) = kling_audit_ledger::segment::list_segments(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?;
    let mut s = Summary::default();
    // task id -> actor that created it, from request/response pairs, for charging units.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for seg in segments {
        let data = kling_audit_ledger::segment::read_segment(&seg.path)
            .with_context(|| format!("cannot read {}", seg.path.display()))?;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let rec: Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                // Details nested past serde_json's depth limit: count the record by its envelope.
                Err(_) => envelope_only(line)?,
            };
            s.records += 1;
            let ts = rec["ts"].as_str().map(str::to_owned);
            if s.first_ts.is_none() {
                s.first_ts.clone_from(&ts);
            }
            s.last_ts = ts;
            let kind = rec["type"].as_str().unwrap_or_default().to_owned();
            let actor = rec["actor"].as_str().unwrap_or_default().to_owned();
            let d = &rec["details"];
            *s.by_type.entry(kind.clone()).or_default() += 1;
            match kind.as_str() {
                "gateway.request" | "kling.intent" => {
                    *s.requests_by_actor.entry(actor).or_default() += 1;
                }
                "gateway.response" => {
                    let outcome = d["outcome"].as_str().unwrap_or("unknown");
                    let key = match d["code"].as_i64() {
                        Some(code) if outcome != "success" => format!("{outcome} {code}"),
                        _ => outcome.to_owned(),
                    };
                    *s.answers.entry(key).or_default() += 1;
                    if let Some(task) = d["task_id"].as_str() {
                        owner.entry(task.to_owned()).or_insert(actor);
                    }
                }
                "gateway.denied" => {
                    let reason = d["reason"].as_str().unwrap_or("unknown").to_owned();
                    *s.denied.entry(reason).or_default() += 1;
                }
                "task.status" | "kling.outcome" => {
                    let is_final = d["final"].as_bool().unwrap_or(kind == "kling.outcome");
                    if is_final {
                        let status = d["to"]
                            .as_str()
                            .or(d["status"].as_str())
                            .unwrap_or("unknown");
                        let status = final_status_word(status);
                        *s.tasks_final.entry(status.to_owned()).or_default() += 1;
                        let units = d["units_deducted"]
                            .as_f64()
                            .or_else(|| d["units_deducted"].as_str().and_then(|u| u.parse().ok()));
                        if let Some(units) = units {
                            let who = d["task_id"]
                                .as_str()
                                .and_then(|t| owner.get(t))
                                .cloned()
                                .unwrap_or(actor);
                            *s.units_by_actor.entry(who).or_default() += units;
                        }
                    }
                }
                "callback.received" | "kling.callback" => s.callbacks_received += 1,
                "callback.relay" => s.callbacks_relayed += 1,
                _ => {}
            }
        }
    }
    Ok(s)
}

/// The word the report uses for a final task status. The two API generations spell success
/// differently; one outcome is counted (and shown) under one word. The records keep the word
/// each answer used.
pub fn final_status_word(status: &str) -> &str {
    if TaskStatus::parse(status).is_success() {
        "succeeded"
    } else {
        status
    }
}

/// The envelope fields of a record whose details are too deep to load as a tree.
fn envelope_only(line: &[u8]) -> Result<Value> {
    let v = kling_audit_ledger::record::parse_line(line)
        .map_err(|e| anyhow::anyhow!("a record is not readable: {e}"))?;
    Ok(serde_json::json!({"ts": v.ts, "type": v.kind_str(), "actor": v.actor_str(), "details": {}}))
}

/// Prints a summary for people.
pub fn print(s: &Summary) {
    println!(
        "records: {} ({} .. {})",
        s.records,
        s.first_ts.as_deref().unwrap_or("-"),
        s.last_ts.as_deref().unwrap_or("-")
    );
    let section = |title: &str, m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            return;
        }
        println!("{title}:");
        for (k, v) in m {
            println!("  {k:<32} {v}");
        }
    };
    section("records by type", &s.by_type);
    section("requests by actor", &s.requests_by_actor);
    section("answers by outcome", &s.answers);
    section("refused by the gateway", &s.denied);
    section("tasks by final status", &s.tasks_final);
    if !s.units_by_actor.is_empty() {
        println!("units deducted by actor:");
        for (k, v) in &s.units_by_actor {
            println!("  {k:<32} {v}");
        }
    }
    println!(
        "callbacks received: {}, relay attempts: {}",
        s.callbacks_received, s.callbacks_relayed
    );
}

/// `kling-audit report`: verify with the keys, then summarize.
pub fn report_cmd(g: &crate::Global, a: &crate::ledger_cmds::ReportArgs) -> Result<crate::Exit> {
    let opts = crate::ledger_cmds::verify_options(g, &a.key, &a.mac_key, true)?;
    let checked = format!(
        "signatures {}, MACs {}",
        if opts.verifier_key.is_some() {
            "checked"
        } else {
            "NOT checked"
        },
        if opts.mac_root.is_some() {
            "checked"
        } else {
            "NOT checked"
        }
    );
    let report = kling_audit_ledger::verify::verify(&g.dir, &opts)?;
    if !report.intact {
        bail!(
            "the ledger did not verify ({}, {checked}); run `kling-audit verify` and resolve them before reporting",
            crate::plural(report.faults_total, "fault")
        );
    }
    let s = summarize(&g.dir)?;
    match a.format {
        crate::ledger_cmds::Format::Json => {
            let mut v = serde_json::to_value(&s)?;
            v["verified"] =
                serde_json::json!({"intact": true, "records": report.records, "checks": checked});
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        crate::ledger_cmds::Format::Text => {
            println!(
                "verified: {}, {checked}",
                crate::plural(report.records, "record")
            );
            print(&s);
        }
    }
    Ok(crate::Exit::Ok)
}
