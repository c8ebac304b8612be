//! `sim`: runs the Kling API simulator in the foreground for demos and for third-party clients
//! under test.
//!
//! The bound address is the first line of standard output (so `--listen 127.0.0.1:0` works for
//! scripts); where the credentials came from goes to standard error, never a secret. The
//! simulator stops on SIGINT or SIGTERM: idle connections are closed at once, requests in
//! progress are answered first.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kling_sim::{CredentialSource, KeyPair, TEST_ACCESS_KEY, TEST_SECRET_KEY};

use crate::Exit;

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// A TOML configuration (see crates/kling-sim/sim.example.toml); defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The pair from `KLING_ACCESS_KEY` / `KLING_SECRET_KEY`, when both are set and non-empty.
fn env_pair() -> Option<KeyPair> {
    let access = std::env::var("KLING_ACCESS_KEY").ok()?;
    let secret = std::env::var("KLING_SECRET_KEY").ok()?;
    (!access.is_empty() && !secret.is_empty()).then(|| KeyPair::new(access, secret))
}

pub fn run(a: &SimArgs) -> Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(a))
}

async fn serve(a: &SimArgs) -> Result<Exit> {
    use std::io::Write;
    let (sim, source) = kling_sim::launch(a.listen, a.config.as_deref(), env_pair())
        .await
        .context("cannot start the simulator")?;
    match source {
        CredentialSource::Config => eprintln!("credentials: from the configuration file"),
        CredentialSource::Fallback => {
            eprintln!("credentials: the pair in KLING_ACCESS_KEY / KLING_SECRET_KEY")
        }
        // The pair is public and guards nothing; shown whole so a caller can sign with it.
        CredentialSource::TestPair => eprintln!(
            "credentials: the documented test pair: access key {TEST_ACCESS_KEY}, secret key \
             {TEST_SECRET_KEY}"
        ),
    }
    eprintln!(
        "simulating the Kling API at http://{}; stop with Ctrl-C",
        sim.addr()
    );
    let stop = crate::signals::watch_stop_signals()?;
    // Standard error first, so a script that has read the address finds the notes written.
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", sim.addr())?;
        out.flush()?;
    }
    let signal = stop.await;
    eprintln!("{signal} received; shutting down");
    // Never freed: the process ends next, and freeing every task stored, one allocation at a
    // time, took seconds after millions of calls, holding up the exit for nothing.
    let state = sim.handle().clone();
    sim.shutdown()
        .await
        .context("the simulator stopped abnormally")?;
    std::mem::forget(state);
    Ok(Exit::Ok)
}
