//! The third-party npm client `kling-api` 1.0.0 as an unmodified application behind the
//! gateway: only its base URL changes. Its calls succeed with the actor's own keys, a wrong
//! secret is refused by the gateway, every call is in the ledger, and no secret or prompt is.

mod run_ok;
mod sim_process;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use run_ok::run_ok;
use serde_json::Value;
use sim_process::SimProcess;

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");
const ORG_AK: &str = "org-access-key-for-node-gateway-test";
const ORG_SK: &str = "org-secret-key-for-node-gateway-test-5c1e";

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node")
}

#[test]
fn npm_kling_api_client_works_unchanged_through_the_gateway_and_is_audited() {
    let node = node_dir();
    assert!(
        node.join("node_modules/kling-api/package.json").is_file(),
        "tests/node/node_modules is missing: run `npm ci` in tests/node (scripts/test.sh does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let sim = SimProcess::start(&[("KLING_ACCESS_KEY", ORG_AK), ("KLING_SECRET_KEY", ORG_SK)]);

    let out = run_ok(&dir, &["actors", "add", "node-app", "--format", "json"]);
    let actor: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ak, sk) = (
        actor["access_key"].as_str().unwrap().to_owned(),
        actor["secret_key"].as_str().unwrap().to_owned(),
    );

    let mut gw = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &sim.base_url(),
        ])
        .env("KLING_ACCESS_KEY", ORG_AK)
        .env("KLING_SECRET_KEY", ORG_SK)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(gw.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = format!("http://{}", line.trim());

    let output = Command::new("node")
        .arg("drive.mjs")
        .current_dir(&node)
        .env("SIM_BASE_URL", &base)
        .env("SIM_ACCESS_KEY", &ak)
        .env("SIM_SECRET_KEY", &sk)
        .env_remove("KLING_ACCESS_KEY")
        .env_remove("KLING_SECRET_KEY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): Node.js 18+ must be installed"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["create"]["code"], 0, "{out}");
    assert_eq!(out["final"]["task_status"], "succeed", "{out}");
    assert_eq!(out["wrong_secret"]["refused"], true, "{out}");
    assert_eq!(out["wrong_secret"]["httpStatus"], 401, "{out}");
    let task_id = out["create"]["task_id"].as_str().unwrap().to_owned();

    // Graceful stop seals the ledger.
    unsafe { libc::kill(gw.id() as i32, libc::SIGTERM) };
    assert!(gw.wait().unwrap().success());
    let v = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["verify", "--format", "json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["intact"], true, "{report:#}");

    let mut all = String::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    assert!(all.contains("\"type\":\"gateway.request\",\"actor\":\"node-app\""));
    assert!(all.contains(&format!("\"task_id\":\"{task_id}\"")));
    assert!(
        all.contains("\"type\":\"gateway.denied\""),
        "the refused call is recorded"
    );
    for secret in [
        sk.as_str(),
        ORG_SK,
        "A paper boat drifting down a rainy street",
    ] {
        assert!(
            !all.contains(secret),
            "the ledger holds a secret or a raw prompt: {secret}"
        );
    }
}
