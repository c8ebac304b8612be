//! Shared set-up for the gateway's integration tests: a simulator as upstream, a gateway in
//! front of it with a real ledger in a temporary directory, and two actors.

#![allow(dead_code)]

use kling_audit_ledger::segment::read_segment;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kling_api::SecretString;
use kling_audit_gateway::actors::{self, NewActor};
use kling_audit_gateway::{GatewayConfig, RunningGateway};
use kling_sim::{KeyPair, RunningSim, SimConfig, SimStats};
use serde_json::Value;

pub const ORG_AK: &str = "org-access-key-7c1e";
pub const ORG_SK: &str = "org-secret-key-d41d8cd98f00b204e9800998ecf8427e";

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub ledger_dir: PathBuf,
    pub sim: RunningSim,
    pub gw: Option<RunningGateway>,
    pub alice: NewActor,
    pub bob: NewActor,
    pub http: reqwest::Client,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn jwt(actor: &NewActor) -> String {
    kling_api::auth::sign_jwt(&actor.access_key, actor.secret_key.expose(), now(), 1800).unwrap()
}

pub fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.keys.push(KeyPair::new(ORG_AK, ORG_SK));
    cfg.lifecycle.to_processing_ms = 60;
    cfg.lifecycle.to_final_ms = 180;
    cfg
}

pub async fn setup(sim_cfg: SimConfig, tweak: impl FnOnce(&mut GatewayConfig)) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let ledger_dir = tmp.path().join("audit");
    let sim = kling_sim::spawn(sim_cfg).await.unwrap();
    let upstream = reqwest::Url::parse(&sim.base_url()).unwrap();
    let mut cfg = GatewayConfig::new(&ledger_dir, upstream, ORG_AK, SecretString::new(ORG_SK));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.callbacks.relay_backoff = Duration::from_millis(20);
    cfg.server.shutdown_grace = Duration::from_secs(10);
    let alice = actors::add(&cfg.auth.actors_file, "alice").unwrap();
    let bob = actors::add(&cfg.auth.actors_file, "bob").unwrap();
    tweak(&mut cfg);
    let gw = kling_audit_gateway::spawn(cfg).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Env {
        tmp,
        ledger_dir,
        sim,
        gw: Some(gw),
        alice,
        bob,
        http,
    }
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.as_ref().unwrap().base_url())
    }

    pub fn keys_dir(&self) -> PathBuf {
        kling_audit_ledger::default_keys_dir(&self.ledger_dir)
    }

    /// Asserts that the simulator has received no request since `before` was taken.
    pub fn assert_nothing_forwarded(&self, before: &SimStats) {
        assert_eq!(
            self.sim.stats().requests_total,
            before.requests_total,
            "nothing was forwarded"
        );
    }

    /// Creates a text-to-video task as `actor` and returns its task id.
    pub async fn create_task(&self, actor: &NewActor, prompt: &str) -> String {
        let (status, _, created) = self
            .post(
                actor,
                "/v1/videos/text2video",
                &serde_json::json!({ "prompt": prompt }),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        created["data"]["task_id"]
            .as_str()
            .expect("a create answers with a task id")
            .to_owned()
    }

    pub async fn post(
        &self,
        actor: &NewActor,
        path: &str,
        body: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(jwt(actor))
            .json(body)
            .send()
            .await
            .unwrap();
        split(resp).await
    }

    /// Posts `body` exactly as given, labelled as JSON.
    pub async fn post_raw(
        &self,
        actor: &NewActor,
        path: &str,
        body: String,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(jwt(actor))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        split(resp).await
    }

    pub async fn get(
        &self,
        actor: &NewActor,
        path: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(jwt(actor))
            .send()
            .await
            .unwrap();
        split(resp).await
    }

    /// Polls a task through the gateway until it is final.
    pub async fn poll_until_final(
        &self,
        actor: &NewActor,
        family_path: &str,
        task_id: &str,
    ) -> Value {
        for _ in 0..400 {
            let (status, _, body) = self.get(actor, &format!("{family_path}/{task_id}")).await;
            assert_eq!(status, 200, "{body}");
            let s = body["data"]["task_status"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if s == "succeed" || s == "failed" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {task_id} never finished");
    }

    pub async fn stop(&mut self) -> kling_audit_gateway::ShutdownReport {
        self.gw.take().unwrap().shutdown().await.unwrap()
    }
}

pub async fn split(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

/// Every record of the ledger, in order.
pub fn records(dir: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("seg-") && n.ends_with(".jsonl")
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let text = String::from_utf8(read_segment(&path).unwrap()).unwrap();
        for line in text.lines() {
            if !line.is_empty() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

pub fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Asserts that `records` hold `count` `gateway.denied` records, each by `actor`, for `reason`,
/// and (when given) answered with `status`.
pub fn assert_denied(
    records: &[Value],
    count: usize,
    actor: &str,
    reason: &str,
    status: Option<u16>,
) {
    let denied = of_type(records, "gateway.denied");
    assert_eq!(denied.len(), count, "{denied:?}");
    for record in denied {
        assert_eq!(record["actor"], actor, "{record}");
        assert_eq!(record["details"]["reason"], reason, "{record}");
        if let Some(status) = status {
            assert_eq!(record["details"]["http_status"], status, "{record}");
        }
    }
}

/// The seq of the audit record an answer names in its `x-kling-audit-record` header.
pub fn record_header(headers: &reqwest::header::HeaderMap) -> u64 {
    headers["x-kling-audit-record"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn seq(record: &Value) -> u64 {
    record["seq"].as_u64().unwrap()
}
