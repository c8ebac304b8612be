//! Shared helpers for the simulator's HTTP tests: a running simulator, signed tokens, and
//! polling until a task ends. Everything talks to 127.0.0.1 only.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use kling_sim::{RunningSim, SimConfig, TEST_ACCESS_KEY, TEST_SECRET_KEY};
use serde_json::{json, Value};

/// A test configuration with fast lifecycles.
pub fn fast_config() -> SimConfig {
    let mut cfg = SimConfig::for_tests();
    cfg.lifecycle.to_processing_ms = 40;
    cfg.lifecycle.to_final_ms = 120;
    cfg
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs arbitrary claims with HS256.
pub fn jwt(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid token for the test pair, in the shape of the docs' Python sample plus `iat`.
pub fn token() -> String {
    let t = now();
    jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t + 1800, "nbf": t - 5, "iat": t}),
        TEST_SECRET_KEY,
    )
}

pub struct Sim {
    pub sim: RunningSim,
    pub http: reqwest::Client,
}

pub async fn start(cfg: SimConfig) -> Sim {
    let sim = kling_sim::spawn(cfg).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Sim { sim, http }
}

/// A status code and JSON body (Value::Null when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(-1)
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url(), path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_as(path, body, Some(&format!("Bearer {}", token())))
            .await
    }

    pub async fn post_as(&self, path: &str, body: &Value, auth: Option<&str>) -> Answer {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        answer(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.get_as(path, Some(&format!("Bearer {}", token())))
            .await
    }

    pub async fn get_as(&self, path: &str, auth: Option<&str>) -> Answer {
        let mut req = self
            .http
            .get(self.url(path))
            .header("Content-Type", "application/json");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        answer(req.send().await.unwrap()).await
    }

    /// Creates a text-to-video task and returns its id.
    pub async fn create_t2v(&self, body: Value) -> String {
        let a = self.post("/v1/videos/text2video", &body).await;
        assert_eq!((a.status, a.code()), (200, 0), "create failed: {}", a.body);
        a.data()["task_id"].as_str().unwrap().to_owned()
    }

    /// Polls a task until it is final; returns the final task and every status seen in order.
    /// The deadline only stops a broken simulator from hanging the test run.
    pub async fn wait_final(&self, family: &str, task_id: &str) -> (Value, Vec<String>) {
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..1000 {
            let a = self.get(&format!("/v1/{family}/{task_id}")).await;
            assert_eq!(a.code(), 0, "query failed: {}", a.body);
            let status = a.data()["task_status"].as_str().unwrap().to_owned();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "succeed" || status == "failed" {
                return (a.data().clone(), seen);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {task_id} never finished; saw {seen:?}");
    }
}
