//! Stop signals for the long-running commands (`gateway`, `sim`).

use anyhow::{Context, Result};

/// Watches SIGINT and SIGTERM from now on; the future resolves with the first one's name.
/// Call it before printing the address scripts wait for, so that a signal sent as soon as a
/// script has read it stops the server cleanly instead of killing it.
pub fn watch_stop_signals() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}
