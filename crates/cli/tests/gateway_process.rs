//! The gateway as a process: `kling-audit gateway` in front of an in-process simulator, with
//! real failures: a file-size limit that makes every ledger write fail (fail-closed), SIGKILL
//! under load (recovery and write-ahead), SIGTERM with requests in flight (graceful drain).

mod keep_alive;
mod run_ok;

use kling_audit_ledger::segment::read_segment;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kling_sim::{KeyPair, RunningSim, SimConfig};
use run_ok::run_ok;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");
const ORG_AK: &str = "org-ak-process-tests";
const ORG_SK: &str = "org-sk-process-tests-0123456789abcdef";

struct Actor {
    access_key: String,
    secret_key: String,
}

impl Actor {
    fn jwt(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        kling_api::auth::sign_jwt(&self.access_key, &self.secret_key, now, 1800).unwrap()
    }
}

struct Gateway {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Gateway {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.keys.push(KeyPair::new(ORG_AK, ORG_SK));
    cfg.lifecycle.to_processing_ms = 100;
    cfg.lifecycle.to_final_ms = 300;
    cfg.concurrency.video = 1000;
    cfg
}

fn add_actor(dir: &Path, name: &str) -> Actor {
    let out = run_ok(dir, &["actors", "add", name, "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Actor {
        access_key: v["access_key"].as_str().unwrap().to_owned(),
        secret_key: v["secret_key"].as_str().unwrap().to_owned(),
    }
}

/// Starts `kling-audit gateway`, optionally under a file-size limit with SIGXFSZ ignored (so
/// writes past the limit fail with EFBIG instead of killing the process), and reads the bound
/// address from the first line of stdout.
fn start_gateway(
    dir: &Path,
    upstream: &str,
    fsize_limit: Option<u64>,
    env: &[(&str, &str)],
) -> Gateway {
    let args: Vec<String> = vec![
        "--dir".into(),
        dir.display().to_string(),
        "gateway".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--upstream".into(),
        upstream.into(),
    ];
    let mut cmd = match fsize_limit {
        None => {
            let mut c = Command::new(BIN);
            c.args(&args);
            c
        }
        Some(limit) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("trap '' XFSZ; exec \"$@\"")
                .arg("sh")
                .arg("prlimit")
                .arg(format!("--fsize={limit}:unlimited"))
                .arg("--")
                .arg(BIN)
                .args(&args);
            c
        }
    };
    let mut child = cmd
        .env("KLING_ACCESS_KEY", ORG_AK)
        .env("KLING_SECRET_KEY", ORG_SK)
        .env("KLING_AUDIT_LOG", "info")
        .env("KLING_AUDIT_AUDIT_REOPEN_INTERVAL_MS", "200")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        // A pipe, not a file: the file-size limit must hit the ledger, not the logs.
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut pipe = BufReader::new(child.stderr.take().unwrap());
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while pipe.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_owned();
    if addr.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
        panic!("gateway printed no address: {}", stderr.lock().unwrap());
    }
    Gateway {
        child,
        base: format!("http://{addr}"),
        stderr,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn create(
    http: &reqwest::Client,
    base: &str,
    actor: &Actor,
    ext: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let resp = http
        .post(format!("{base}/v1/videos/text2video"))
        .bearer_auth(actor.jwt())
        .json(&json!({"prompt": format!("prompt for {ext}"), "external_task_id": ext}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn records(dir: &Path) -> Vec<Value> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("seg-") && n.ends_with(".jsonl")
        })
        .collect();
    segs.sort();
    segs.iter()
        .flat_map(|p| {
            String::from_utf8(read_segment(p).unwrap())
                .unwrap()
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .arg("verify")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn sim() -> RunningSim {
    kling_sim::spawn(sim_config()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_when_the_ledger_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let sim = sim().await;
    let alice = add_actor(&dir, "alice");
    let http = client();

    // A normal run leaves a ledger with some records.
    let gw = start_gateway(&dir, &sim.base_url(), None, &[]);
    for i in 0..3 {
        let (status, _) = create(&http, &gw.base, &alice, &format!("fc-{i}"))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    gw.signal("-TERM");
    assert!(gw.wait().success());
    let seg_size = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    let forwarded_before = sim.stats().requests_total;
    assert_eq!(forwarded_before, 3);

    // Same ledger, but no file may grow past the segment's current size: every append to it
    // fails with EFBIG, a real write error.
    let gw = start_gateway(&dir, &sim.base_url(), Some(seg_size), &[]);
    let ready = http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503, "{}", gw.stderr());
    for i in 0..3 {
        let (status, body) = create(&http, &gw.base, &alice, &format!("blocked-{i}"))
            .await
            .unwrap();
        assert_eq!((status, body["code"].as_i64()), (503, Some(5001)), "{body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("audit ledger unavailable"));
        assert!(body["request_id"].is_string());
    }
    assert_eq!(
        sim.stats().requests_total,
        forwarded_before,
        "nothing reached the upstream"
    );
    let metrics = http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("outcome=\"audit_unavailable\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("kling_gateway_ledger_writable 0"));
    assert!(gw.stderr().contains("File too large"), "{}", gw.stderr());
    gw.signal("-TERM");
    let status = gw.wait();
    assert_eq!(
        status.code(),
        Some(1),
        "an unsealed ledger is reported by the exit code"
    );

    // Nothing of the refused requests was written, and what was there is intact.
    let recs = records(&dir);
    assert!(!recs.iter().any(|r| r.to_string().contains("blocked-")));
    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_restart_every_forwarded_request_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let sim = sim().await;
    let alice = add_actor(&dir, "alice");
    let http = client();
    let gw = start_gateway(&dir, &sim.base_url(), None, &[]);

    let mut load = tokio::task::JoinSet::new();
    for i in 0..48 {
        let (http, base) = (http.clone(), gw.base.clone());
        let actor = Actor {
            access_key: alice.access_key.clone(),
            secret_key: alice.secret_key.clone(),
        };
        load.spawn(async move {
            // Stagger the start so the kill lands mid-stream.
            tokio::time::sleep(Duration::from_millis(10 * (i % 16))).await;
            create(&http, &base, &actor, &format!("kill-{i}")).await
        });
    }
    for _ in 0..400 {
        if sim.stats().creates_accepted >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        sim.stats().creates_accepted >= 12,
        "load never reached the upstream"
    );
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    let mut answered = 0;
    while let Some(r) = load.join_next().await {
        if matches!(r.unwrap(), Ok((200, _))) {
            answered += 1;
        }
    }
    assert!(answered < 48, "the kill landed after all requests finished");

    // Restart: the ledger opens (recovering a torn tail if there is one) and serves again.
    let gw = start_gateway(&dir, &sim.base_url(), None, &[]);
    let ready = http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "{}", gw.stderr());
    gw.signal("-TERM");
    assert!(gw.wait().success());
    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");

    let recs = records(&dir);
    let recorded: BTreeSet<String> = recs
        .iter()
        .filter(|r| r["type"] == "gateway.request" && r["details"]["operation"] == "create")
        .filter_map(|r| r["details"]["external_task_id"].as_str().map(str::to_owned))
        .collect();
    // Every task the upstream made has its request record.
    let list = http
        .get(format!(
            "{}/v1/videos/text2video?pageNum=1&pageSize=500",
            sim.base_url()
        ))
        .bearer_auth(kling_api::auth::sign_jwt(ORG_AK, ORG_SK, now(), 1800).unwrap())
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let made: BTreeSet<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["task_info"]["external_task_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(made.len() >= 12, "{}", made.len());
    let missing: Vec<&String> = made.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "forwarded without a record: {missing:?}"
    );
    assert!(
        sim.stats().route("POST /v1/videos/text2video") as usize <= recorded.len(),
        "more creates reached the upstream than were recorded"
    );
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "gateway.start").count(),
        2
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_records_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let mut cfg = sim_config();
    cfg.faults.latency_rate = 1.0;
    cfg.faults.latency_ms = 800;
    let sim = kling_sim::spawn(cfg).await.unwrap();
    let alice = add_actor(&dir, "alice");
    let http = client();
    let gw = start_gateway(&dir, &sim.base_url(), None, &[]);

    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..5 {
        let (http, base) = (http.clone(), gw.base.clone());
        let actor = Actor {
            access_key: alice.access_key.clone(),
            secret_key: alice.secret_key.clone(),
        };
        inflight.spawn(async move { create(&http, &base, &actor, &format!("drain-{i}")).await });
    }
    // All five are held inside the simulator's delay when the signal comes.
    for _ in 0..400 {
        if sim.stats().requests_total == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.stats().requests_total, 5);
    gw.signal("-TERM");
    while let Some(r) = inflight.join_next().await {
        let (status, body) = r.unwrap().unwrap();
        assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    }
    let status = gw.wait();
    assert!(status.success());

    let recs = records(&dir);
    let last = recs.last().unwrap();
    assert_eq!(last["type"], "gateway.shutdown");
    let responses: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "gateway.response" && r["details"]["code"] == 0)
        .collect();
    assert_eq!(responses.len(), 5);
    assert_eq!(last["details"]["requests_served"], 5);
    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");
}

/// Callers' idle keep-alive connections (many, each after a call, and a few that never sent a
/// request) must not hold up the gateway's shutdown: they are closed at once at SIGTERM, while
/// a call in progress is still answered, and the gateway exits right after it.
#[test]
fn sigterm_closes_idle_caller_connections_at_once_and_answers_the_call_in_progress() {
    const DELAY: Duration = Duration::from_millis(1500);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let mut cfg = sim_config();
    cfg.faults.latency_rate = 1.0;
    cfg.faults.latency_ms = DELAY.as_millis() as u64;
    let sim = runtime.block_on(kling_sim::spawn(cfg)).unwrap();
    let alice = add_actor(&dir, "alice");
    let gw = start_gateway(&dir, &sim.base_url(), None, &[]);
    let addr = gw.base.trim_start_matches("http://").parse().unwrap();
    let auth = format!("Bearer {}", alice.jwt());
    let held =
        keep_alive::hold_connections(addr, "/v1/videos/text2video?pageNum=1&pageSize=10", &auth);
    let signalled = std::time::Instant::now();
    gw.signal("-TERM");
    let answered = held.check_after_sigterm(signalled, DELAY);
    assert!(gw.wait().success());
    keep_alive::exited_right_after(signalled.elapsed(), answered);
    let recs = records(&dir);
    let last = recs.last().unwrap();
    assert_eq!(last["type"], "gateway.shutdown", "{last}");
    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");
}

/// The ledger shares the open-file limit with the connections; `config check` says when the
/// limit lowers how many connections the gateway serves.
#[test]
fn config_check_warns_when_the_open_file_limit_lowers_the_connection_cap() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--dir")
        .arg(tmp.path().join("audit"))
        .args(["config", "check"])
        .env("KLING_ACCESS_KEY", "ak")
        .env("KLING_SECRET_KEY", "sk")
        .env("KLING_API_KEY", "api-key")
        .env("KLING_AUDIT_SERVER_WORKER_THREADS", "3");
    // SAFETY: only setrlimit runs between fork and exec, with a valid rlimit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: server.max_connections is 4096 but the open-file limit")
            && text.contains("serves at most 256 connections"),
        "{text}"
    );
    // The summary shows what the gateway would serve with, after the limit.
    assert!(
        text.contains("  serving:       3 threads, at most 256 connections\n")
            && text.contains("  durability:    sync\n"),
        "{text}"
    );
}

/// The README says base URLs take no trailing slash; the summary used to print the parsed URL,
/// `http://127.0.0.1:9000/`, right after telling users to leave the slash out.
#[test]
fn config_check_prints_a_bare_upstream_origin_without_a_trailing_slash() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, shown) in [
        (None, "https://api-singapore.klingai.com"),
        (Some("http://127.0.0.1:9000"), "http://127.0.0.1:9000"),
        (Some("http://127.0.0.1:9000/"), "http://127.0.0.1:9000"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.arg("--dir")
            .arg(tmp.path().join("audit"))
            .args(["config", "check"])
            .env_remove("KLING_AUDIT_UPSTREAM_URL")
            .env("KLING_ACCESS_KEY", "ak")
            .env("KLING_SECRET_KEY", "sk");
        if let Some(url) = flag {
            cmd.args(["--upstream", url]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("  upstream:      {shown}\n")),
            "{flag:?}: {text}"
        );
    }
}

#[test]
fn config_check_names_what_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(tmp.path().join("audit"))
        .args(["config", "check"])
        .env_remove("KLING_ACCESS_KEY")
        .env_remove("KLING_SECRET_KEY")
        .env("KLING_AUDIT_AUDIT_ON_FAILURE", "sometimes")
        .env("KLING_ACCESS_KEY", "ak")
        .env("KLING_SECRET_KEY", "sk")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit.on_failure") && err.contains("fail-closed"),
        "{err}"
    );

    let cfg = tmp.path().join("gw.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[audit]\non_failure = \"fail-open\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(tmp.path().join("audit"))
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .env("KLING_ACCESS_KEY", "ak")
        .env("KLING_SECRET_KEY", "sk-secret-value")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fail-open"));
    assert!(!text.contains("sk-secret-value"));
}

/// Raises the file-size limit of a running process (root may raise hard limits).
fn lift_fsize_limit(pid: u32) {
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit --pid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_forwards_counts_and_reports_once_the_ledger_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let sim = sim().await;
    let alice = add_actor(&dir, "alice");
    let http = client();
    let gw = start_gateway(&dir, &sim.base_url(), None, &[]);
    create(&http, &gw.base, &alice, "open-0").await.unwrap();
    gw.signal("-TERM");
    assert!(gw.wait().success());
    let seg_size = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();

    let gw = start_gateway(
        &dir,
        &sim.base_url(),
        Some(seg_size),
        &[("KLING_AUDIT_AUDIT_ON_FAILURE", "fail-open")],
    );
    for i in 0..2 {
        let resp = http
            .post(format!("{}/v1/videos/text2video", gw.base))
            .bearer_auth(alice.jwt())
            .json(&json!({"prompt": "unrecorded", "external_task_id": format!("open-{}", i + 1)}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{}", gw.stderr());
        assert_eq!(resp.headers()["x-kling-audit-record"], "unrecorded");
    }
    let metrics = http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kling_gateway_unaudited_requests_total 2"),
        "{metrics}"
    );

    // The storage recovers: the gateway reopens the ledger and reports the gap.
    lift_fsize_limit(gw.pid());
    let mut ready = false;
    for _ in 0..100 {
        let r = http
            .get(format!("{}/readyz", gw.base))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "{}", gw.stderr());
    let (status, _) = create(&http, &gw.base, &alice, "open-3").await.unwrap();
    assert_eq!(status, 200);
    gw.signal("-TERM");
    assert!(gw.wait().success());

    let recs = records(&dir);
    let unaudited: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "gateway.unaudited")
        .collect();
    assert_eq!(unaudited.len(), 1);
    assert_eq!(unaudited[0]["details"]["count"], 2);
    assert!(recs.iter().any(|r| r["type"] == "gateway.ledger_reopened"));
    let recorded: Vec<&str> = recs
        .iter()
        .filter(|r| r["type"] == "gateway.request")
        .filter_map(|r| r["details"]["external_task_id"].as_str())
        .collect();
    assert_eq!(recorded, ["open-0", "open-3"]);
    assert_eq!(sim.stats().creates_accepted, 4);
    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_started_without_init_or_actors_says_so() {
    let sim = sim().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let gw = start_gateway(&dir, &format!("http://{}", sim.addr()), None, &[]);
    let http = client();
    // Ready means the start-up logs are written.
    let ready = http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // The lines were written before the address; the reader thread may lag behind.
    let started = std::time::Instant::now();
    while !gw.stderr().contains("no actors") && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = gw.stderr();
    gw.signal("-TERM");
    assert!(gw.wait().success());
    assert!(stderr.contains("created a new ledger"), "{stderr}");
    assert!(stderr.contains("kling-audit init"), "{stderr}");
    assert!(stderr.contains("no actors"), "{stderr}");
    assert!(stderr.contains("kling-audit actors add NAME"), "{stderr}");
    // The MAC root key is never logged.
    let root = std::fs::read_to_string(
        tmp.path()
            .join("audit.keys")
            .join(kling_audit_ledger::keys::MAC_ROOT_FILE),
    )
    .unwrap();
    assert!(
        !stderr.contains(root.trim()),
        "the MAC root key is in the logs"
    );
}

/// A peer that closes its connection while the gateway still writes to it must not kill the
/// process: here the upstream answers a POST on a task query path without reading its body,
/// and closes, while the gateway is still sending the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_while_a_body_is_sent_leaves_the_gateway_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let sim = sim().await;
    let alice = add_actor(&dir, "alice");
    let http = client();
    let mut gw = start_gateway(&dir, &sim.base_url(), None, &[]);
    let body = format!("{{\"x\":\"{}\"}}", "a".repeat(8 << 20));
    for _ in 0..3 {
        // The answer does not matter (a 4xx, or a 502 when the write failed); the process does.
        let _ = http
            .post(format!("{}/v1/videos/text2video/1", gw.base))
            .bearer_auth(alice.jwt())
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway exited: {}",
        gw.stderr()
    );
    let health = http.get(format!("{}/healthz", gw.base)).send().await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    gw.signal("-TERM");
    assert!(gw.wait().success());
    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");
}
