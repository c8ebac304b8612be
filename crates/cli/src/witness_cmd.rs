//! `kling-audit witness`: runs a C2SP tlog-witness that cosigns ledgers' checkpoints, makes a
//! witness key, and attaches the checkpoint pusher to `kling-audit log --witness`.
//!
//! The bound address is the first line of standard output (so `--listen 127.0.0.1:0` works for
//! scripts); the witness stops on SIGINT or SIGTERM. See docs/witness.md.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kling_audit_ledger::LedgerOptions;
use kling_audit_note::{CosignerKey, Verifier};
use kling_audit_witness::pusher::{self, PusherHandle, WitnessTarget};
use kling_audit_witness::{TrustedLog, Witness, WitnessConfig};
use serde::Deserialize;

use crate::Exit;

/// How long `kling-audit log --witness` waits at exit for its final checkpoint's cosignatures.
const EXIT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct WitnessArgs {
    #[command(subcommand)]
    pub command: Option<WitnessCommand>,
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The witness's TOML configuration (see docs/witness.md).
    #[arg(long, required = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WitnessCommand {
    /// Make a cosigner key: the private key goes to --out (mode 0600), the public verifier key
    /// to standard output.
    Keygen {
        /// The witness's name, e.g. `witness.example.com`; ledgers see it on cosignature lines.
        #[arg(long)]
        name: String,
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The configuration file. Relative paths are relative to the file's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The cosigner signer key, `PRIVATE+KEY+<name>+<id>+<base64>`.
    key_file: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    prefix: String,
    #[serde(default, rename = "log")]
    logs: Vec<LogConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogConfig {
    origin: String,
    /// Checkpoint verifier keys, `<name>+<id>+<base64>`.
    keys: Vec<String>,
}

pub fn run(a: &WitnessArgs) -> Result<Exit> {
    match &a.command {
        Some(WitnessCommand::Keygen { name, out }) => keygen(name, out),
        None => {
            let config = a.config.as_deref().context("--config is required")?;
            serve(a.listen, config)
        }
    }
}

fn keygen(name: &str, out: &Path) -> Result<Exit> {
    let key = CosignerKey::generate(name).context("cannot make the witness key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    file.write_all(key.encode().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote the private witness key to {}; give ledgers the verifier key below",
        out.display()
    );
    println!("{}", key.verifier().encode());
    Ok(Exit::Ok)
}

/// Reads and checks the configuration file into the library's form.
fn load_config(path: &Path) -> Result<WitnessConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the witness configuration {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text)
        .with_context(|| format!("witness configuration {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let key_path = base.join(&file.key_file);
    warn_if_readable_by_others(&key_path);
    let key_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read the witness key {}", key_path.display()))?,
    );
    let key = CosignerKey::from_encoded(key_text.trim())
        .with_context(|| format!("{} is not a witness signer key", key_path.display()))?;
    let mut logs = Vec::with_capacity(file.logs.len());
    for log in file.logs {
        let keys = log
            .keys
            .iter()
            .map(|k| Verifier::from_encoded(k.trim()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("a key of log {:?}", log.origin))?;
        logs.push(TrustedLog {
            origin: log.origin,
            keys,
        });
    }
    if logs.is_empty() {
        bail!(
            "{} lists no [[log]]; the witness would refuse everything",
            path.display()
        );
    }
    Ok(WitnessConfig {
        key,
        logs,
        state_dir: base.join(file.state_dir),
        prefix: file.prefix,
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: the witness key {} has mode {mode:04o}; make it 0600 so only this user can read it",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn stop_signal() -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("cannot watch SIGINT")?;
            Ok("SIGINT")
        }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

fn serve(listen: SocketAddr, config: &Path) -> Result<Exit> {
    let cfg = load_config(config)?;
    // Open once up front so that a locked or corrupt state fails before the address is printed.
    let witness = Witness::open(cfg.clone()).context("cannot open the witness state")?;
    let cosigner = witness.verifier().encode();
    drop(witness);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("no local address")?;
        eprintln!(
            "witness {cosigner} cosigning for {} at http://{addr}{}/add-checkpoint; stop with Ctrl-C",
            crate::plural(cfg.logs.len() as u64, "log"),
            cfg.prefix
        );
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{addr}")?;
            out.flush()?;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
        tokio::spawn(async move {
            match stop_signal().await {
                Ok(name) => {
                    let _ = stop_tx.send(name);
                }
                Err(e) => eprintln!("warning: {e}; stop the witness with SIGKILL"),
            }
        });
        kling_audit_witness::serve_with_shutdown(listener, cfg, async move {
            if let Ok(name) = stop_rx.await {
                eprintln!("{name} received; shutting down");
            }
        })
        .await
        .context("the witness stopped abnormally")?;
        Ok(Exit::Ok)
    })
}

/// The pusher attached to a CLI writer, with the runtime its tasks run on.
pub struct CliPusher {
    runtime: tokio::runtime::Runtime,
    handle: PusherHandle,
}

/// Parses `--witness URL=VKEY` values (`VKEY` may be `@FILE`) and, if there are any, puts a
/// pusher's hook into `opts`.
pub fn attach_pusher(opts: &mut LedgerOptions, specs: &[String]) -> Result<Option<CliPusher>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut targets = Vec::with_capacity(specs.len());
    for spec in specs {
        let target = match spec.split_once("=@") {
            Some((url, file)) => {
                let key = crate::ledger_cmds::arg_or_file(&format!("@{file}"))?;
                WitnessTarget::new(url, &key)
            }
            None => WitnessTarget::parse(spec),
        };
        targets.push(target.with_context(|| format!("--witness {spec}"))?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (hook, handle) = pusher::start(opts.dir.clone(), targets, runtime.handle().clone());
    opts.on_checkpoint = Some(hook);
    Ok(Some(CliPusher { runtime, handle }))
}

impl CliPusher {
    /// Waits up to a few seconds for every witness to cosign `size` (the final checkpoint),
    /// reporting on standard error. Returns whether a witness refused it for good, which means
    /// the ledger's history is not the one the witness saw. Pushes still pending when the wait
    /// ends are abandoned with this process; the next writer pushes its newer checkpoint.
    pub fn finish(self, size: u64) -> bool {
        if size == 0 {
            return false;
        }
        let handle = &self.handle;
        let waited = self
            .runtime
            .block_on(async { tokio::time::timeout(EXIT_WAIT, handle.wait_cosigned(size)).await });
        let refused = match waited {
            Ok(Ok(())) => {
                for w in self.handle.statuses() {
                    eprintln!("witness {} cosigned the checkpoint of size {size}", w.name);
                }
                false
            }
            Ok(Err(e)) => {
                eprintln!("error: a witness refused the checkpoint of size {size}: {e}");
                true
            }
            Err(_) => {
                for w in self.handle.statuses() {
                    if w.cosigned_size < size {
                        eprintln!(
                            "warning: witness {} ({}) did not cosign size {size} within {} s{}",
                            w.name,
                            w.url,
                            EXIT_WAIT.as_secs(),
                            w.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                        );
                    }
                }
                false
            }
        };
        self.runtime.shutdown_timeout(Duration::from_millis(200));
        refused
    }
}
