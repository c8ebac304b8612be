//! "Real clients": the third-party npm client `kling-api` 1.0.0 drives `kling-audit sim`
//! through a whole create, poll and `succeed` cycle, and a wrong secret key is refused.
//!
//! Node.js and `tests/node/node_modules` (installed by `npm ci` in scripts/test.sh) are
//! required: when they are missing this test fails with instructions rather than skipping.

mod sim_process;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use sim_process::SimProcess;

const ACCESS_KEY: &str = "node-test-access-key-41b2";
const SECRET_KEY: &str = "node-test-secret-key-e7d9c3a1";

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node")
}

#[test]
fn the_npm_kling_api_client_completes_a_task_and_is_refused_a_wrong_secret() {
    let dir = node_dir();
    let package = dir.join("node_modules/kling-api/package.json");
    assert!(
        package.is_file(),
        "{} is missing: run `npm ci` in tests/node (scripts/test.sh does) before cargo test",
        package.display()
    );
    let sim = SimProcess::start(&[
        ("KLING_ACCESS_KEY", ACCESS_KEY),
        ("KLING_SECRET_KEY", SECRET_KEY),
    ]);
    let output = Command::new("node")
        .arg("drive.mjs")
        .current_dir(&dir)
        .env("SIM_BASE_URL", sim.base_url())
        .env("SIM_ACCESS_KEY", ACCESS_KEY)
        .env("SIM_SECRET_KEY", SECRET_KEY)
        .env_remove("KLING_ACCESS_KEY")
        .env_remove("KLING_SECRET_KEY")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `node` ({e}): Node.js 18+ must be installed for this test")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node drive.mjs failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let out: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("drive.mjs printed no JSON ({e}): {stdout}"));
    assert!(out.get("error").is_none(), "the happy path failed: {out}");

    let create = &out["create"];
    assert_eq!(create["code"], 0, "{out}");
    assert_eq!(create["message"], "SUCCEED");
    assert_eq!(create["task_status"], "submitted");
    let task_id = create["task_id"].as_str().unwrap();
    assert!(!task_id.is_empty());

    let fin = &out["final"];
    assert_eq!(fin["task_id"], task_id);
    assert_eq!(fin["task_status"], "succeed");
    assert_eq!(fin["videos"], 1);
    assert_eq!(fin["has_url"], true);

    let wrong = &out["wrong_secret"];
    assert_eq!(wrong["refused"], true, "{out}");
    assert_eq!(wrong["name"], "KlingAPIError");
    assert_eq!(wrong["httpStatus"], 401);
    let code = wrong["code"].as_i64().unwrap();
    assert!((1000..=1004).contains(&code), "code {code}");
    assert_eq!(code, 1002);

    // The operator is told where the keys came from, never the secret.
    let stderr = sim.stderr_containing("KLING_ACCESS_KEY");
    assert!(!stderr.contains(SECRET_KEY), "the secret key was printed");
    assert!(sim.stop().success());
}
