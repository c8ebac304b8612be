//! The pusher against an in-process witness on 127.0.0.1: every checkpoint of a real ledger
//! gets cosigned and stored, a lost state file is relearned from the witness, a rolled-back
//! ledger is refused, and a cosignature under the wrong key is never kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kling_audit_ledger::verify::{self, FaultKind, StoredCosignature, VerifyOptions};
use kling_audit_ledger::{Details, Entry, KeySet, Ledger, LedgerOptions};
use kling_audit_note::{CosignerKey, Note, Verifier};
use kling_audit_witness::pusher::{self, PusherHandle, WitnessTarget, STATE_FILE};
use kling_audit_witness::{serve_with_shutdown, TrustedLog, WitnessConfig, WitnessError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ORIGIN: &str = "example.test/pusher";
/// Only a guard against a hung test; nothing here measures speed.
const HANG_GUARD: Duration = Duration::from_secs(60);

struct Setup {
    _tmp: tempfile::TempDir,
    ledger_dir: PathBuf,
    keys_dir: PathBuf,
    log_key: String,
    witness_key: CosignerKey,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), WitnessError>>>,
}

impl Setup {
    async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let ledger_dir = tmp.path().join("ledger");
        let keys_dir = tmp.path().join("ledger.keys");
        let (_, secrets) = KeySet::create(&keys_dir, ORIGIN, true)?;
        let witness_key = CosignerKey::generate("witness.example.test")?;
        let cfg = WitnessConfig {
            key: witness_key.clone(),
            logs: vec![TrustedLog {
                origin: ORIGIN.into(),
                keys: vec![Verifier::from_encoded(&secrets.verifier_key)?],
            }],
            state_dir: tmp.path().join("witness-state"),
            prefix: "/w".into(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/w/add-checkpoint", listener.local_addr()?);
        let (stop, rx) = oneshot::channel();
        let server = tokio::spawn(serve_with_shutdown(listener, cfg, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            _tmp: tmp,
            ledger_dir,
            keys_dir,
            log_key: secrets.verifier_key,
            witness_key,
            url,
            stop: Some(stop),
            server: Some(server),
        })
    }

    fn target(&self) -> WitnessTarget {
        WitnessTarget {
            url: self.url.clone(),
            verifier: self.witness_key.verifier(),
        }
    }

    /// Opens the ledger with a pusher to `targets` attached.
    fn open(&self, targets: Vec<WitnessTarget>) -> Result<(Ledger, PusherHandle), TestError> {
        let (hook, handle) = pusher::start(
            self.ledger_dir.clone(),
            targets,
            tokio::runtime::Handle::current(),
        );
        let mut opts = LedgerOptions::new(&self.ledger_dir);
        opts.keys_dir = Some(self.keys_dir.clone());
        opts.create_keys = false;
        opts.on_checkpoint = Some(hook);
        let (ledger, _) = Ledger::open(opts)?;
        Ok((ledger, handle))
    }

    async fn stop(mut self) -> TestResult {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await??;
        }
        Ok(())
    }
}

type TestError = Box<dyn std::error::Error>;

async fn append(ledger: &Ledger, n: usize) -> Result<u64, TestError> {
    for i in 0..n {
        let details = Details::parse(&format!("{{\"i\":{i}}}"))?;
        ledger
            .append_async(Entry::new("test.event", "tester", details)?)
            .await?;
    }
    Ok(ledger.flush_async().await?.size)
}

fn cosignature_lines(dir: &Path) -> Result<Vec<StoredCosignature>, TestError> {
    let path = dir.join(verify::COSIGNATURES_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

fn verify_with_witness(s: &Setup) -> Result<verify::Report, TestError> {
    let opts = VerifyOptions {
        verifier_key: Some(s.log_key.clone()),
        witness_keys: vec![s.witness_key.verifier().encode()],
        ..Default::default()
    };
    Ok(verify::verify(&s.ledger_dir, &opts)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkpoint_is_cosigned_verified_and_stored() -> TestResult {
    let s = Setup::new().await?;
    let (ledger, handle) = s.open(vec![s.target()])?;
    let mut sizes = Vec::new();
    for batch in [3, 1, 5] {
        let size = append(&ledger, batch).await?;
        tokio::time::timeout(HANG_GUARD, handle.wait_cosigned(size)).await??;
        assert_eq!(handle.cosigned_size("witness.example.test"), Some(size));
        sizes.push(size);
    }
    ledger.close_async().await?;

    let lines = cosignature_lines(&s.ledger_dir)?;
    assert!(!lines.is_empty());
    let last = lines.last().map(|l| l.size);
    assert_eq!(last, sizes.last().copied());
    let log = Verifier::from_encoded(&s.log_key)?;
    let witness = s.witness_key.verifier();
    for line in &lines {
        assert_eq!(line.witness, "witness.example.test");
        let note = Note::parse(line.note.as_bytes())?;
        let checked = note.clone().verify(std::slice::from_ref(&log))?;
        let cosig = note
            .signatures()
            .iter()
            .find(|sig| sig.name() == witness.name())
            .ok_or("no cosignature line")?;
        witness.verify(checked.text(), cosig)?;
    }
    let state = std::fs::read_to_string(s.ledger_dir.join(STATE_FILE))?;
    assert!(
        state.contains(&format!("\"size\": {}", sizes[2])),
        "{state}"
    );

    let report = verify_with_witness(&s)?;
    assert!(report.intact, "{:?}", report.faults);
    assert_eq!(report.checkpoints.witnessed_size, Some(sizes[2]));
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_file_is_relearned_from_the_witness() -> TestResult {
    let s = Setup::new().await?;
    let (ledger, handle) = s.open(vec![s.target()])?;
    let first = append(&ledger, 4).await?;
    tokio::time::timeout(HANG_GUARD, handle.wait_cosigned(first)).await??;
    ledger.close_async().await?;
    drop(ledger);
    std::fs::remove_file(s.ledger_dir.join(STATE_FILE))?;

    // The new pusher believes the witness saw nothing, sends `old 0`, gets a 409 naming
    // `first`, and succeeds from there.
    let (ledger, handle) = s.open(vec![s.target()])?;
    // Opening pushes the stored checkpoint at once, so the witness may already have named
    // `first` by the time this is read; anything else would be a size learned from nowhere.
    let relearned = handle.statuses()[0].witness_size;
    assert!(relearned == 0 || relearned == first, "{relearned}");
    let second = append(&ledger, 2).await?;
    tokio::time::timeout(HANG_GUARD, handle.wait_cosigned(second)).await??;
    assert_eq!(handle.statuses()[0].witness_size, second);
    assert_eq!(handle.statuses()[0].refused_size, 0);
    ledger.close_async().await?;
    s.stop().await
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_ledger_is_refused_and_not_cosigned() -> TestResult {
    let s = Setup::new().await?;
    let (ledger, handle) = s.open(vec![s.target()])?;
    let early = append(&ledger, 3).await?;
    tokio::time::timeout(HANG_GUARD, handle.wait_cosigned(early)).await??;
    ledger.close_async().await?;
    drop(ledger);
    let backup = s.ledger_dir.with_file_name("backup");
    copy_dir(&s.ledger_dir, &backup)?;

    let (ledger, handle) = s.open(vec![s.target()])?;
    let late = append(&ledger, 4).await?;
    tokio::time::timeout(HANG_GUARD, handle.wait_cosigned(late)).await??;
    ledger.close_async().await?;
    drop(ledger);
    let newer_cosignatures = std::fs::read(s.ledger_dir.join(verify::COSIGNATURES_FILE))?;

    // Roll everything back, the pusher's own files included, then write a different history
    // that grows past what the witness saw.
    std::fs::remove_dir_all(&s.ledger_dir)?;
    copy_dir(&backup, &s.ledger_dir)?;
    // An intruder who holds the host also removes the writer's own memory of what it signed
    // (without that, the writer itself refuses the rolled-back ledger); the witness remains.
    std::fs::remove_file(s.keys_dir.join(kling_audit_ledger::keys::SIGNED_HEAD_FILE))?;
    let before = cosignature_lines(&s.ledger_dir)?.len();
    let (ledger, handle) = s.open(vec![s.target()])?;
    let forked = append(&ledger, 6).await?;
    assert!(forked > late);
    let refused = tokio::time::timeout(HANG_GUARD, handle.wait_cosigned(forked)).await?;
    let err = refused
        .err()
        .ok_or("the witness cosigned a rolled-back history")?;
    assert!(err.witnesses[0].refused_size >= forked, "{err}");
    ledger.close_async().await?;
    assert_eq!(cosignature_lines(&s.ledger_dir)?.len(), before);

    // With the cosignatures made before the rollback, the verifier sees the rewrite.
    std::fs::write(
        s.ledger_dir.join(verify::COSIGNATURES_FILE),
        newer_cosignatures,
    )?;
    let report = verify_with_witness(&s)?;
    assert!(!report.intact);
    assert!(
        report.faults.iter().any(|f| f.kind == FaultKind::Forked),
        "{:?}",
        report.faults
    );
    assert_eq!(report.checkpoints.witnessed_size, Some(late));
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosignature_under_another_key_is_never_kept() -> TestResult {
    let s = Setup::new().await?;
    let impostor = CosignerKey::generate("witness.example.test")?;
    let target = WitnessTarget {
        url: s.url.clone(),
        verifier: impostor.verifier(),
    };
    let (ledger, handle) = s.open(vec![target])?;
    append(&ledger, 2).await?;
    let mut status = handle.subscribe();
    let seen = tokio::time::timeout(HANG_GUARD, status.wait_for(|v| v[0].last_error.is_some()))
        .await??
        .clone();
    assert!(
        seen[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no cosignature verifies")),
        "{seen:?}"
    );
    assert_eq!(seen[0].cosigned_size, 0);
    assert!(cosignature_lines(&s.ledger_dir)?.is_empty());
    ledger.close_async().await?;

    // And the verifier, given the real witness key, finds no cosignature by it.
    let report = verify_with_witness(&s)?;
    assert!(report
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::Unwitnessed));
    s.stop().await
}
