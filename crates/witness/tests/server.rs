//! Drives the witness over HTTP on 127.0.0.1: every status the spec defines, durable state
//! across restarts, and the check-then-store race that must never roll the witness back.

use std::path::Path;

use kling_audit_merkle::{consistency_proof, leaf_hash, root, Hash};
use kling_audit_note::{sign_checkpoint, Checkpoint, CosignerKey, Note, Signer};
use kling_audit_witness::{
    add_checkpoint, serve_with_shutdown, AddCheckpointError, AddCheckpointOutcome, TrustedLog,
    Witness, WitnessClientError, WitnessConfig, WitnessError, TLOG_SIZE_CONTENT_TYPE,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ORIGIN: &str = "example.com/audit-log";

/// A log: its signing key and leaves; `fork_at` makes a history that differs from there on.
struct Log {
    signer: Signer,
    leaves: Vec<Hash>,
}

impl Log {
    fn new(n: u64, fork_at: Option<u64>) -> Self {
        let leaves = (0..n)
            .map(|i| {
                let fork = fork_at.is_some_and(|f| i >= f);
                leaf_hash(format!("record {i}{}", if fork { " (forked)" } else { "" }).as_bytes())
            })
            .collect();
        Self {
            signer: Signer::from_seed(ORIGIN, &[5; 32]).expect("valid name"),
            leaves,
        }
    }

    fn checkpoint(&self, size: u64) -> Checkpoint {
        Checkpoint::new(ORIGIN, size, root(&self.leaves[..size as usize])).expect("valid origin")
    }

    fn note(&self, size: u64) -> Vec<u8> {
        sign_checkpoint(&self.checkpoint(size), &self.signer)
            .expect("valid checkpoint")
            .to_bytes()
    }

    fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        consistency_proof(old, new, &self.leaves).expect("sizes within the log")
    }
}

fn cosigner() -> CosignerKey {
    CosignerKey::from_seed("witness.example", &[6; 32]).expect("valid name")
}

fn config(dir: &Path, log: &Log) -> WitnessConfig {
    WitnessConfig {
        key: cosigner(),
        logs: vec![TrustedLog {
            origin: ORIGIN.into(),
            keys: vec![log.signer.verifier()],
        }],
        state_dir: dir.to_path_buf(),
        prefix: "/witness".into(),
    }
}

struct Running {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), WitnessError>>,
}

impl Running {
    async fn start(cfg: WitnessConfig) -> Result<Self, std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/witness/add-checkpoint", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_shutdown(listener, cfg, async {
            let _ = stopped.await;
        }));
        Ok(Self { url, stop, task })
    }

    async fn shut_down(self) -> TestResult {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

fn stored_size(dir: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("witness-state.json"))?)?;
    v["logs"][0]["size"]
        .as_u64()
        .ok_or_else(|| "state file has no size".into())
}

fn cosignatures(outcome: AddCheckpointOutcome) -> Vec<kling_audit_note::NoteSignature> {
    match outcome {
        AddCheckpointOutcome::Cosigned(sigs) => sigs,
        other => panic!("expected a cosignature, got {other:?}"),
    }
}

#[tokio::test]
async fn cosigns_growing_checkpoints_and_persists_before_replying() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(20, None);
    let server = Running::start(config(dir.path(), &log)).await?;
    let client = reqwest::Client::new();
    let witness_key = cosigner().verifier();

    let out = add_checkpoint(&client, &server.url, 0, &[], &log.note(5)).await?;
    let sigs = cosignatures(out);
    assert_eq!(sigs.len(), 1);
    let text = log.checkpoint(5).to_text();
    witness_key.verify(&text, &sigs[0])?;
    // The reply came after the state reached disk.
    assert_eq!(stored_size(dir.path())?, 5);

    let out = add_checkpoint(&client, &server.url, 5, &log.proof(5, 13), &log.note(13)).await?;
    witness_key.verify(&log.checkpoint(13).to_text(), &cosignatures(out)[0])?;
    assert_eq!(stored_size(dir.path())?, 13);

    // The cosignature line appended to the log's note gives a note both keys open.
    let mut note = Note::parse(&log.note(13))?;
    note.add_signature(
        add_checkpoint(&client, &server.url, 13, &[], &log.note(13))
            .await
            .map(cosignatures)?
            .remove(0),
    )?;
    kling_audit_note::open(&note.to_bytes(), &[&witness_key])?;
    kling_audit_note::open(&note.to_bytes(), &[&log.signer.verifier()])?;
    server.shut_down().await
}

#[tokio::test]
async fn every_refusal_has_the_status_the_spec_assigns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(20, None);
    let forked = Log::new(20, Some(3));
    let server = Running::start(config(dir.path(), &log)).await?;
    let client = reqwest::Client::new();
    let url = server.url.as_str();
    add_checkpoint(&client, url, 0, &[], &log.note(5))
        .await
        .map(cosignatures)?;

    // 400: not a signed note; and an old size beyond the checkpoint's size.
    assert!(matches!(
        add_checkpoint(&client, url, 5, &[], b"not a note").await?,
        AddCheckpointOutcome::BadRequest { .. }
    ));
    assert!(matches!(
        add_checkpoint(&client, url, 9, &[], &log.note(8)).await?,
        AddCheckpointOutcome::BadRequest { .. }
    ));
    // 403: signed by a key the witness does not trust for this origin.
    let impostor = Signer::from_seed(ORIGIN, &[99; 32])?;
    let untrusted = sign_checkpoint(&log.checkpoint(8), &impostor)?.to_bytes();
    assert_eq!(
        add_checkpoint(&client, url, 5, &log.proof(5, 8), &untrusted).await?,
        AddCheckpointOutcome::Forbidden
    );
    // 404: an origin the witness does not know.
    let other = Checkpoint::new("example.com/other-log", 8, log.checkpoint(8).root)?;
    let other = sign_checkpoint(&other, &log.signer)?.to_bytes();
    assert_eq!(
        add_checkpoint(&client, url, 5, &log.proof(5, 8), &other).await?,
        AddCheckpointOutcome::UnknownOrigin
    );
    // 409 with the size: the caller's old size is not what was last cosigned.
    assert_eq!(
        add_checkpoint(&client, url, 3, &log.proof(3, 8), &log.note(8)).await?,
        AddCheckpointOutcome::StaleOldSize { witness_size: 5 }
    );
    let raw = client
        .post(url)
        .body(format!("old 0\n\n{}", String::from_utf8(log.note(8))?))
        .send()
        .await?;
    assert_eq!(raw.status(), 409);
    assert_eq!(raw.headers()["content-type"], TLOG_SIZE_CONTENT_TYPE);
    assert_eq!(raw.text().await?, "5\n");
    // 409: same size as last cosigned, different root.
    assert!(matches!(
        add_checkpoint(&client, url, 5, &[], &forked.note(5)).await?,
        AddCheckpointOutcome::ConflictingRoot { .. }
    ));
    // 422: a proof that does not link the cosigned size-5 tree to the forked size-8 tree.
    assert_eq!(
        add_checkpoint(&client, url, 5, &forked.proof(5, 8), &forked.note(8)).await?,
        AddCheckpointOutcome::InconsistentProof
    );
    // 422: same size and root, but a proof where none belongs.
    assert_eq!(
        add_checkpoint(&client, url, 5, &log.proof(2, 5), &log.note(5)).await?,
        AddCheckpointOutcome::InconsistentProof
    );
    // None of the refusals moved the state.
    assert_eq!(stored_size(dir.path())?, 5);
    server.shut_down().await
}

#[tokio::test]
async fn first_checkpoint_needs_an_empty_proof() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(8, None);
    let server = Running::start(config(dir.path(), &log)).await?;
    let client = reqwest::Client::new();
    assert_eq!(
        add_checkpoint(&client, &server.url, 0, &log.proof(4, 8), &log.note(8)).await?,
        AddCheckpointOutcome::InconsistentProof
    );
    assert!(!dir.path().join("witness-state.json").exists());
    server.shut_down().await
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(20, None);
    let client = reqwest::Client::new();

    let first = Running::start(config(dir.path(), &log)).await?;
    add_checkpoint(&client, &first.url, 0, &[], &log.note(9))
        .await
        .map(cosignatures)?;
    first.shut_down().await?;

    let second = Running::start(config(dir.path(), &log)).await?;
    // A witness that forgot would accept "old 0" again and could be rolled back.
    assert_eq!(
        add_checkpoint(&client, &second.url, 0, &[], &log.note(4)).await?,
        AddCheckpointOutcome::StaleOldSize { witness_size: 9 }
    );
    add_checkpoint(&client, &second.url, 9, &log.proof(9, 12), &log.note(12))
        .await
        .map(cosignatures)?;
    second.shut_down().await?;
    assert_eq!(stored_size(dir.path())?, 12);
    Ok(())
}

#[tokio::test]
async fn a_second_witness_cannot_open_a_locked_state_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(1, None);
    let first = Witness::open(config(dir.path(), &log))?;
    assert!(matches!(
        Witness::open(config(dir.path(), &log)),
        Err(WitnessError::Locked { .. })
    ));
    drop(first);
    Witness::open(config(dir.path(), &log))?;
    Ok(())
}

#[tokio::test]
async fn invalid_configurations_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(1, None);
    let mut cfg = config(dir.path(), &log);
    cfg.prefix = "witness/".into();
    assert!(matches!(
        Witness::open(cfg),
        Err(WitnessError::Config { .. })
    ));
    let mut cfg = config(dir.path(), &log);
    cfg.logs.push(cfg.logs[0].clone());
    assert!(matches!(
        Witness::open(cfg),
        Err(WitnessError::Config { .. })
    ));
    let mut cfg = config(dir.path(), &log);
    let key = cfg.logs[0].keys[0].clone();
    cfg.logs[0].keys.push(key);
    assert!(matches!(
        Witness::open(cfg),
        Err(WitnessError::Config { .. })
    ));
    let mut cfg = config(dir.path(), &log);
    cfg.logs[0].keys.clear();
    assert!(matches!(
        Witness::open(cfg),
        Err(WitnessError::Config { .. })
    ));
    Ok(())
}

/// Two requests from the same old size race for N and N+K, over HTTP. Exactly one may win;
/// the loser must see the winner's size, and the stored size must never go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requests_over_http_never_roll_the_witness_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(400, None);
    let server = Running::start(config(dir.path(), &log)).await?;
    let client = reqwest::Client::new();
    let mut current = 0u64;
    for round in 0..25u64 {
        let small = current + 1 + round % 3;
        let large = current + 5 + round % 7;
        let (proof_a, note_a) = (log.proof(current, small), log.note(small));
        let (proof_b, note_b) = (log.proof(current, large), log.note(large));
        let (a, b) = tokio::join!(
            add_checkpoint(&client, &server.url, current, &proof_a, &note_a),
            add_checkpoint(&client, &server.url, current, &proof_b, &note_b),
        );
        let (a, b) = (a?, b?);
        let winner = match (&a, &b) {
            (
                AddCheckpointOutcome::Cosigned(_),
                AddCheckpointOutcome::StaleOldSize { witness_size },
            ) => {
                assert_eq!(*witness_size, small);
                small
            }
            (
                AddCheckpointOutcome::StaleOldSize { witness_size },
                AddCheckpointOutcome::Cosigned(_),
            ) => {
                assert_eq!(*witness_size, large);
                large
            }
            other => panic!("round {round}: exactly one request must win, got {other:?}"),
        };
        assert_eq!(stored_size(dir.path())?, winner, "round {round}");
        assert!(winner > current);
        current = winner;
    }
    server.shut_down().await
}

/// Many in-process requests from one old size: exactly one commits, the rest see its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_requests_commit_exactly_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::new(64, None);
    let witness = Witness::open(config(dir.path(), &log))?;
    let bodies: Vec<Vec<u8>> = (1..=32u64)
        .map(|size| {
            kling_audit_note::AddCheckpointRequest {
                old_size: 0,
                proof: vec![],
                checkpoint: log.note(size),
            }
            .to_bytes()
        })
        .collect();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let w = witness.clone();
            tokio::spawn(async move { w.add_checkpoint(&body).await.map(|_| ()) })
        })
        .collect();
    let mut wins = 0;
    let mut reported = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(()) => wins += 1,
            Err(AddCheckpointError::StaleOldSize { cosigned_size, .. }) => {
                reported.push(cosigned_size)
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(wins, 1);
    let (size, _) = witness.cosigned(ORIGIN).ok_or("nothing cosigned")?;
    assert!(
        reported.iter().all(|&s| s == size),
        "{reported:?} vs {size}"
    );
    assert_eq!(stored_size(dir.path())?, size);
    Ok(())
}

#[tokio::test]
async fn client_reports_statuses_outside_the_protocol() -> TestResult {
    use axum::http::{header, StatusCode};
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/boom/add-checkpoint",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/bad-size/add-checkpoint",
            post(|| async {
                (
                    StatusCode::CONFLICT,
                    [(header::CONTENT_TYPE, TLOG_SIZE_CONTENT_TYPE)],
                    "twelve\n",
                )
            }),
        )
        .route(
            "/bad-sig/add-checkpoint",
            post(|| async { (StatusCode::OK, "\u{2014} w not-base64\n") }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let note = Log::new(1, None).note(1);

    let url = format!("{base}/boom/add-checkpoint");
    assert!(matches!(
        add_checkpoint(&client, &url, 0, &[], &note).await,
        Err(WitnessClientError::UnexpectedStatus { status: 500, .. })
    ));
    for path in ["bad-size", "bad-sig"] {
        let url = format!("{base}/{path}/add-checkpoint");
        assert!(
            matches!(
                add_checkpoint(&client, &url, 0, &[], &note).await,
                Err(WitnessClientError::MalformedResponse { .. })
            ),
            "{path}"
        );
    }
    server.abort();
    Ok(())
}
