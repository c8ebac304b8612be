//! `kling-audit demo`: the whole product on loopback in under a minute.
//!
//! Starts the Kling simulator and the auditing gateway, creates three actors, sends a realistic
//! mixed workload through the gateway with an ordinary Kling client (text to video, image to
//! video, images, polling, callbacks, a content-policy rejection, an authentication failure, a
//! burst past the concurrency limit, a poll of another actor's task), shuts the gateway down
//! gracefully, verifies the ledger with its keys and prints a summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kling_api::client::{PollOptions, RetryPolicy};
use kling_api::routes::Family;
use kling_api::task::TaskStatus;
use kling_api::{ClientConfig, KlingClient, SecretString};
use serde_json::json;

use crate::Exit;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The directory to create for the demo's ledger, keys and proof (default: a new
    /// `kling-audit-demo-<time>` directory in the current directory). --dir and --keys-dir are
    /// refused.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A 1x1 PNG, standing in for an uploaded start frame.
const TINY_PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

pub fn demo(args: &DemoArgs) -> Result<Exit> {
    let out = match &args.out {
        Some(p) => {
            // Created here, not checked then created, so two demos never share a directory.
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            match std::fs::create_dir(p) {
                Ok(()) => p.clone(),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                    "{} already exists; choose another directory with --out",
                    p.display()
                ),
                Err(e) => bail!("cannot create {}: {e}", p.display()),
            }
        }
        None => fresh_dir(Path::new("."))?,
    };
    // The printed commands name the directory in full, so they work from anywhere.
    let out = out.canonicalize().unwrap_or(out);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&out))
}

/// A new `kling-audit-demo-<unix seconds>` directory in `parent`; demos started within the
/// same second get `-2`, `-3`, ... appended.
fn fresh_dir(parent: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("kling-audit-demo-{secs}");
    for n in 1..=1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        // `./name` prints as `name`, as the directory was always shown.
        let dir = if parent == Path::new(".") {
            PathBuf::from(name)
        } else {
            parent.join(name)
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => bail!(
                "cannot create {}: {e}; choose a directory with --out",
                dir.display()
            ),
        }
    }
    bail!("{base} and 999 variants of it already exist; choose a directory with --out")
}

/// `text` as one shell word, so that a printed command can be pasted as it is.
fn sh(text: &str) -> String {
    shlex::try_quote(text).map_or_else(|_| text.to_owned(), |q| q.into_owned())
}

fn step(started: Instant, text: &str) {
    println!("[{:>5.1}s] {text}", started.elapsed().as_secs_f64());
}

async fn run(out: &Path) -> Result<Exit> {
    let started = Instant::now();
    let ledger_dir = out.join("ledger");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    println!(
        "kling-audit demo: everything runs on 127.0.0.1; the ledger goes to {}",
        ledger_dir.display()
    );

    // The simulated Kling API, with a content policy, a failing word and a small video pool.
    let webhook_secret = "whsec_a2xpbmctYXVkaXQtZGVtby13ZWJob29rLXNlY3JldA==";
    let mut sim_cfg = kling_sim::SimConfig::for_tests();
    sim_cfg.lifecycle.to_processing_ms = 300;
    sim_cfg.lifecycle.to_final_ms = 1200;
    sim_cfg.content.blocked_words = vec!["forbidden-topic".into()];
    sim_cfg.content.fail_words = vec!["glitch".into()];
    sim_cfg.concurrency.video = 4;
    sim_cfg.webhook_secret = Some(kling_sim::SecretText::new(webhook_secret));
    // An API key too, so that the gateway serves the new-standard routes as a real one would.
    let api_key = "demo-org-api-key-0123456789";
    sim_cfg.api_keys = vec![kling_sim::SecretText::new(api_key)];
    let sim = kling_sim::spawn(sim_cfg)
        .await
        .context("cannot start the simulator")?;
    step(
        started,
        &format!("Kling API simulator on {}", sim.base_url()),
    );

    // Callers' own webhook receiver: the gateway relays callbacks here.
    let relayed = Arc::new(AtomicU64::new(0));
    let receiver = callback_receiver(relayed.clone()).await?;

    // The ledger's keys, made here as `init` would make them but with the MAC root key kept
    // beside them: the demo verifies with it at the end. A gateway finding no keys would make
    // the same, and warn that the MAC root key is not offline, which is meant for operators.
    let keys_dir = kling_audit_ledger::default_keys_dir(&ledger_dir);
    if !kling_audit_ledger::keys::exists(&keys_dir) {
        let origin = kling_audit_ledger::random_origin();
        kling_audit_ledger::KeySet::create(&keys_dir, &origin, true)
            .with_context(|| format!("cannot create the ledger keys in {}", keys_dir.display()))?;
    }

    // The gateway, with the organisation's (simulated) Kling key.
    let upstream = reqwest::Url::parse(&sim.base_url())?;
    let mut gw_cfg = kling_audit_gateway::GatewayConfig::new(
        &ledger_dir,
        upstream,
        kling_sim::TEST_ACCESS_KEY,
        SecretString::new(kling_sim::TEST_SECRET_KEY),
    );
    gw_cfg.listen = "127.0.0.1:0".parse()?;
    if let Some(c) = gw_cfg.upstream.credentials.as_mut() {
        c.api_key = Some(SecretString::new(api_key));
    }
    gw_cfg.callbacks.webhook_secret = Some(SecretString::new(webhook_secret));
    let mut actors = Vec::new();
    for name in ["marketing-app", "ads-pipeline", "design-studio"] {
        let a = kling_audit_gateway::actors::add(&gw_cfg.auth.actors_file, name)?;
        actors.push(a);
    }
    step(
        started,
        "created actors marketing-app, ads-pipeline and design-studio, each with its own key pair",
    );
    let gateway = kling_audit_gateway::spawn(gw_cfg).context("cannot start the gateway")?;
    let base = gateway.base_url();
    step(
        started,
        &format!("auditing gateway on {base}, forwarding to the simulator"),
    );

    let client = |i: usize, retry: RetryPolicy| -> Result<KlingClient> {
        let mut c = ClientConfig::new(&base, &actors[i].access_key, actors[i].secret_key.clone());
        c.retry = retry;
        Ok(KlingClient::new(c)?)
    };
    let marketing = client(0, RetryPolicy::default())?;
    let ads = client(1, RetryPolicy::default())?;
    let design = client(2, RetryPolicy::default())?;
    let poll = PollOptions {
        initial_interval: Duration::from_millis(250),
        backoff: 1.0,
        max_interval: Duration::from_millis(250),
        deadline: Duration::from_secs(20),
    };

    // 1. Text to video with a callback, polled to the end.
    let t2v = marketing
        .send_raw(
            "POST",
            "/v1/videos/text2video",
            Some(&json!({
                "model_name": "kling-v2-1-master",
                "prompt": "A calm sunrise over the ocean, drone shot",
                "negative_prompt": "text, watermark",
                "duration": "5",
                "mode": "std",
                "aspect_ratio": "16:9",
                "external_task_id": "campaign-42",
                "callback_url": format!("{}/hooks/kling", receiver.0),
            })),
        )
        .await?;
    let t2v_id = task_id(&t2v.data)?;
    let done = marketing
        .poll_until_done(Family::TextToVideo, &t2v_id, poll, &mut |_| {})
        .await?;
    step(
        started,
        &format!(
            "marketing-app: text-to-video {t2v_id} ended {}",
            ended_word(done.task_status.as_ref())
        ),
    );

    // 2. Image to video from an uploaded frame.
    let i2v = ads
        .send_raw(
            "POST",
            "/v1/videos/image2video",
            Some(&json!({"model_name": "kling-v2-1", "image": TINY_PNG_BASE64, "prompt": "The bottle turns slowly", "duration": "5", "mode": "pro"})),
        )
        .await?;
    let i2v_id = task_id(&i2v.data)?;
    let done = ads
        .poll_until_done(Family::ImageToVideo, &i2v_id, poll, &mut |_| {})
        .await?;
    step(
        started,
        &format!(
            "ads-pipeline: image-to-video {i2v_id} ended {}",
            ended_word(done.task_status.as_ref())
        ),
    );

    // 3. Images, n = 2.
    let img = design
        .send_raw("POST", "/v1/images/generations", Some(&json!({"model_name": "kling-v2", "prompt": "Flat icon of a film camera", "n": 2, "aspect_ratio": "1:1"})))
        .await?;
    let img_id = task_id(&img.data)?;
    let done = design
        .poll_until_done(Family::ImageGeneration, &img_id, poll, &mut |_| {})
        .await?;
    step(
        started,
        &format!(
            "design-studio: image generation {img_id} ended {}",
            ended_word(done.task_status.as_ref())
        ),
    );

    // 4. A task that fails during generation.
    let failing = design
        .send_raw(
            "POST",
            "/v1/videos/text2video",
            Some(&json!({"prompt": "A glitch in the matrix", "duration": "5"})),
        )
        .await?;
    let failing_id = task_id(&failing.data)?;
    let ended = match design
        .poll_until_done(Family::TextToVideo, &failing_id, poll, &mut |_| {})
        .await
    {
        Ok(task) => format!(
            "{} ({})",
            ended_word(task.task_status.as_ref()),
            task.task_status_msg.as_deref().unwrap_or("")
        ),
        Err(e) => short_err(Some(e)),
    };
    step(
        started,
        &format!("design-studio: text-to-video {failing_id} ended during generation: {ended}"),
    );

    // 5. A content-policy rejection at submit time.
    let rejected = marketing
        .send_raw(
            "POST",
            "/v1/videos/text2video",
            Some(&json!({"prompt": "Something about a forbidden-topic", "duration": "5"})),
        )
        .await;
    step(
        started,
        &format!(
            "marketing-app: rejected by content policy: {}",
            short_err(rejected.err())
        ),
    );

    // 6. An authentication failure: right access key, wrong secret.
    let mut bad = ClientConfig::new(
        &base,
        &actors[1].access_key,
        SecretString::new("not-the-secret"),
    );
    bad.retry = RetryPolicy::none();
    let bad = KlingClient::new(bad)?;
    let denied = bad
        .send_raw("GET", "/account/costs?start_time=0&end_time=1", None)
        .await;
    step(
        started,
        &format!(
            "ads-pipeline with a wrong secret: {}",
            short_err(denied.err())
        ),
    );

    // 7. Another actor polling marketing-app's task gets Kling's not-found answer.
    let foreign = ads.query_task(Family::TextToVideo, &t2v_id).await;
    step(
        started,
        &format!(
            "ads-pipeline polling marketing-app's task: {}",
            short_err(foreign.err())
        ),
    );

    // 8. A burst past the concurrency limit, without client retries so the 429s show.
    let burst = client(1, RetryPolicy::none())?;
    let mut handles = Vec::new();
    for i in 0..8 {
        let c = burst.clone();
        handles.push(tokio::spawn(async move {
            c.send_raw(
                "POST",
                "/v1/videos/text2video",
                Some(&json!({"prompt": format!("Burst clip {i}"), "duration": "5"})),
            )
            .await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    let mut burst_ids = Vec::new();
    for h in handles {
        match h.await? {
            Ok(r) => {
                ok += 1;
                burst_ids.push(task_id(&r.data)?);
            }
            Err(e) if e.code() == Some(1303) => limited += 1,
            Err(e) => bail!("unexpected burst error: {e}"),
        }
    }
    step(
        started,
        &format!("ads-pipeline burst of 8: {ok} accepted, {limited} refused with 429/1303"),
    );
    for id in &burst_ids {
        let _ = ads
            .poll_until_done(Family::TextToVideo, id, poll, &mut |_| {})
            .await?;
    }

    // 9. Account units.
    let costs = design
        .send_raw(
            "GET",
            "/account/costs?start_time=0&end_time=4102444800000",
            None,
        )
        .await?;
    let remaining = costs
        .data
        .as_ref()
        .and_then(|d| d["resource_pack_subscribe_infos"][0]["remaining_quantity"].as_f64());
    step(
        started,
        &format!(
            "account costs queried; remaining units {}",
            remaining.map_or("?".into(), |r| r.to_string())
        ),
    );

    // Let the last callbacks arrive and be relayed.
    let deadline = Instant::now() + Duration::from_secs(5);
    // The text-to-video task asked for callbacks: one on `processing`, one at the end.
    while relayed.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step(
        started,
        &format!(
            "callbacks relayed to the caller's webhook: {}",
            relayed.load(Ordering::Relaxed)
        ),
    );

    let report = gateway.shutdown().await?;
    let _ = sim.shutdown().await;
    step(
        started,
        &format!(
            "gateway drained and sealed the ledger ({})",
            crate::plural(report.ledger_size, "record")
        ),
    );

    // Verify with the pinned keys, as an auditor would.
    let keys_dir = kling_audit_ledger::default_keys_dir(&ledger_dir);
    let vkey = std::fs::read_to_string(keys_dir.join(kling_audit_ledger::keys::VERIFIER_FILE))?
        .trim()
        .to_owned();
    let mac_root = kling_audit_ledger::keys::load_mac_root(&keys_dir)?;
    let opts = kling_audit_ledger::verify::VerifyOptions {
        verifier_key: Some(vkey.clone()),
        mac_root,
        ..Default::default()
    };
    let verdict = kling_audit_ledger::verify::verify(&ledger_dir, &opts)?;
    println!();
    println!(
        "verify: {} — {}, {}, {}, signatures and MACs checked",
        if verdict.intact { "INTACT" } else { "FAULTY" },
        crate::plural(verdict.records, "record"),
        crate::plural(verdict.segments as u64, "segment"),
        crate::plural(verdict.checkpoints.count as u64, "signed checkpoint")
    );
    for f in &verdict.faults {
        println!("  {} {}", f.kind.code(), f.message);
    }
    println!();
    let summary = crate::report::summarize(&ledger_dir)?;
    crate::report::print(&summary);
    println!();
    println!("Look further:");
    // The commands name this very binary, so they run as printed after `cargo run` too.
    let bin = std::env::current_exe()
        .map(|p| sh(&p.display().to_string()))
        .unwrap_or_else(|_| "kling-audit".to_owned());
    let dir = sh(&ledger_dir.display().to_string());
    let mac_file = keys_dir.join(kling_audit_ledger::keys::MAC_ROOT_FILE);
    // `@` prefixes the path itself, so it goes inside the quotes.
    let mac_arg = sh(&format!("@{}", mac_file.display()));
    let vkey = sh(&vkey);
    println!("  {bin} --dir {dir} verify --key {vkey} --mac-key {mac_arg}");
    println!("  {bin} --dir {dir} report");
    // The proof goes beside the ledger, so the demo's commands leave nothing in the current
    // directory but the demo's own directory.
    let proof = sh(&out.join("proof.json").display().to_string());
    println!("  {bin} --dir {dir} prove --seq 1 --out {proof}");
    println!("  {bin} verify-proof {proof} --key {vkey}");
    println!(
        "  (the MAC root key is kept in {} for the demo; a real auditor keeps it offline)",
        mac_file.display()
    );
    println!(
        "done in {:.1}s; the ledger is in {}",
        started.elapsed().as_secs_f64(),
        ledger_dir.display()
    );
    Ok(if verdict.intact {
        Exit::Ok
    } else {
        Exit::Fault
    })
}

/// How a progress line names a task's final status: in the summary report's word, so the
/// two do not disagree about the same task.
fn ended_word(status: Option<&TaskStatus>) -> &str {
    status.map_or("unknown", |s| crate::report::final_status_word(s.as_str()))
}

fn task_id(data: &Option<serde_json::Value>) -> Result<String> {
    data.as_ref()
        .and_then(|d| d["task_id"].as_str())
        .map(str::to_owned)
        .context("the create answer carried no task_id")
}

fn short_err(e: Option<kling_api::error::KlingError>) -> String {
    match e {
        None => "unexpectedly succeeded".into(),
        Some(e) => match (e.http_status(), e.code()) {
            (Some(s), Some(c)) => format!("HTTP {s}, code {c}"),
            _ => e.to_string(),
        },
    }
}

/// A webhook receiver standing in for the caller's own server.
async fn callback_receiver(count: Arc<AtomicU64>) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hooks/kling",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demos_started_in_the_same_second_get_their_own_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let first = fresh_dir(tmp.path()).unwrap();
        let second = fresh_dir(tmp.path()).unwrap();
        let third = fresh_dir(tmp.path()).unwrap();
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert!(first.is_dir() && second.is_dir() && third.is_dir());
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&first).starts_with("kling-audit-demo-"));
        // Unless the second turned over in between, the later ones carry a suffix.
        if name(&second).len() > name(&first).len() {
            assert_eq!(name(&second), format!("{}-2", name(&first)));
        }
    }

    #[test]
    fn progress_lines_name_a_legacy_success_as_the_report_does() {
        for word in ["succeed", "succeeded"] {
            let status = TaskStatus::parse(word);
            assert_eq!(ended_word(Some(&status)), "succeeded", "{word}");
            assert_eq!(
                ended_word(Some(&status)),
                crate::report::final_status_word(word)
            );
        }
        assert_eq!(ended_word(Some(&TaskStatus::Failed)), "failed");
        assert_eq!(ended_word(Some(&TaskStatus::parse("odd"))), "odd");
        assert_eq!(ended_word(None), "unknown");
    }

    #[test]
    fn printed_paths_are_single_shell_words() {
        assert_eq!(sh("/tmp/plain/dir"), "/tmp/plain/dir");
        for text in [
            "/tmp/with space/dir",
            "it's",
            "@/a b/mac.key",
            "$HOME;rm -rf x",
        ] {
            let quoted = sh(text);
            assert_ne!(quoted, text);
            assert_eq!(
                shlex::split(&quoted),
                Some(vec![text.to_owned()]),
                "{quoted}"
            );
        }
    }
}
