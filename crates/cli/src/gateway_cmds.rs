//! `kling-audit gateway`, `kling-audit config check` and `kling-audit actors ...`: flags in,
//! library calls out. The gateway itself lives in the `kling-audit-gateway` crate.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use kling_audit_gateway::config::{self, Overrides, Sources};
use kling_audit_gateway::{actors, GatewayConfig};

use crate::{Exit, Global};

/// Flags of `kling-audit gateway` and `kling-audit config check`.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// TOML configuration file (see docs/gateway.md); environment variables override it.
    #[arg(long, env = "KLING_AUDIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one). The bound address
    /// is printed as the first line of standard output.
    #[arg(long)]
    pub listen: Option<String>,
    /// Base URL of the Kling API (default https://api-singapore.klingai.com).
    #[arg(long)]
    pub upstream: Option<String>,
}

/// `kling-audit config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the gateway configuration (file, environment, secrets) without starting it.
    Check(GatewayArgs),
}

/// Output format for actor commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
}

/// `kling-audit actors ...`.
#[derive(Debug, Subcommand)]
pub enum ActorsCommand {
    /// Create an actor and print its access key and secret key (shown this once).
    Add {
        /// The actor name recorded in every record of its requests.
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Configuration file naming `auth.actors_file`, if not the default.
        #[arg(long, env = "KLING_AUDIT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List actors (no secrets).
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[arg(long, env = "KLING_AUDIT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Refuse an actor's requests from now on (a running gateway reloads within a second).
    Disable {
        name: String,
        #[arg(long, env = "KLING_AUDIT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Accept a disabled actor's requests again.
    Enable {
        name: String,
        #[arg(long, env = "KLING_AUDIT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Give an actor a new access key and secret key (shown this once), under the same name;
    /// its old keys are refused from the gateway's next reload on.
    Rotate {
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[arg(long, env = "KLING_AUDIT_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn sources(g: &Global, args: &GatewayArgs) -> Sources {
    Sources {
        file: args.config.clone(),
        env: std::env::vars().collect(),
        overrides: Overrides {
            listen: args.listen.clone(),
            upstream: args.upstream.clone(),
        },
        dir: g.dir.clone(),
        keys_dir: g.keys_dir.clone(),
    }
}

fn load(g: &Global, args: &GatewayArgs) -> anyhow::Result<GatewayConfig> {
    let what = args.config.as_ref().map_or_else(
        || "flags and environment".to_owned(),
        |p| p.display().to_string(),
    );
    config::load(&sources(g, args)).with_context(|| format!("gateway configuration ({what})"))
}

/// A base URL as the documentation writes it: a bare origin without the trailing slash that
/// URL parsing adds, so the printout matches the rule that base URLs take none.
fn base_url(url: &reqwest::Url) -> &str {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        text.strip_suffix('/').unwrap_or(text)
    } else {
        text
    }
}

/// `kling-audit config check`: prints a summary (no secrets) and exits 0, or the first
/// problem and exits 2.
pub fn config_check(g: &Global, args: &GatewayArgs) -> anyhow::Result<Exit> {
    let cfg = load(g, args)?;
    let mode = match cfg.auth.mode {
        config::AuthMode::Actors => "actors",
        config::AuthMode::Passthrough => "passthrough",
    };
    let failure = match cfg.audit.on_failure {
        config::FailureMode::FailClosed => "fail-closed",
        config::FailureMode::FailOpen => "fail-open",
    };
    println!("configuration OK");
    for warning in cfg.warnings() {
        println!("  warning: {warning}");
    }
    println!("  listen:        {}", cfg.listen);
    println!("  upstream:      {}", base_url(&cfg.upstream.url));
    println!("  ledger dir:    {}", cfg.audit.dir.display());
    println!("  keys dir:      {}", cfg.keys_dir().display());
    println!("  actors file:   {}", cfg.auth.actors_file.display());
    println!("  auth mode:     {mode}");
    println!("  on failure:    {failure}");
    let durability = match cfg.audit.durability {
        kling_audit_ledger::Durability::Sync => "sync",
        kling_audit_ledger::Durability::Buffered => "buffered",
    };
    println!("  durability:    {durability}");
    println!(
        "  serving:       {}, at most {}",
        crate::plural(cfg.server.worker_threads() as u64, "thread"),
        crate::plural(cfg.server.connection_cap() as u64, "connection")
    );
    println!(
        "  org key:       {}",
        if cfg.upstream.credentials.is_some() {
            "set"
        } else {
            "not set"
        }
    );
    println!(
        "  webhook secret: {}",
        if cfg.callbacks.webhook_secret.is_some() {
            "set"
        } else {
            "not set"
        }
    );
    println!(
        "  admin token:   {}",
        if cfg.admin_token.is_some() {
            "set"
        } else {
            "not set (/metrics is open)"
        }
    );
    Ok(Exit::Ok)
}

/// `kling-audit gateway`: serves until SIGTERM or SIGINT, then drains and seals the ledger.
pub fn gateway(g: &Global, args: &GatewayArgs) -> anyhow::Result<Exit> {
    let cfg = load(g, args)?;
    // Callers are served on the gateway's own threads (`server.worker_threads` of them); this
    // runtime accepts connections and runs the background work.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = kling_audit_gateway::bind(cfg.listen)?;
        // The first line of stdout is the bound address, for scripts and tests; it is printed
        // only once the ledger is open, so a gateway that cannot audit never looks started.
        let announce = |addr: std::net::SocketAddr| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{addr}");
            let _ = out.flush();
        };
        let shutdown = shutdown_signal();
        let report = kling_audit_gateway::run_with_ready(cfg, listener, shutdown, announce).await?;
        // A full disk must not turn a clean stop into a panic: the report is best effort.
        let _ = writeln!(
            std::io::stderr(),
            "gateway stopped: {} served, ledger {} ({})",
            crate::plural(report.requests_served, "request"),
            if report.sealed {
                "sealed"
            } else {
                "NOT sealed cleanly"
            },
            crate::plural(report.ledger_size, "record")
        );
        Ok(if report.sealed { Exit::Ok } else { Exit::Fault })
    })
}

/// Watches SIGTERM and SIGINT from now on (see [`crate::signals::watch_stop_signals`]); the
/// future resolves on the first one.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let watched = crate::signals::watch_stop_signals();
    async move {
        match watched {
            Ok(stop) => {
                stop.await;
            }
            // Without signal handlers the process still stops on Ctrl-C, just not gracefully.
            Err(_) => std::future::pending::<()>().await,
        }
    }
}

fn actors_file(g: &Global, config_file: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let args = GatewayArgs {
        config: config_file.clone(),
        listen: None,
        upstream: None,
    };
    config::actors_file(&sources(g, &args)).context("cannot locate the actor store")
}

/// Prints an actor's new keys, which are shown this once.
fn print_new_keys(actor: &actors::NewActor, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "name": actor.name,
                "access_key": actor.access_key,
                "secret_key": actor.secret_key.expose(),
            })
        ),
        Format::Text => {
            println!("actor:      {}", actor.name);
            println!("access key: {}", actor.access_key);
            println!("secret key: {}", actor.secret_key.expose());
            let _ = writeln!(
                std::io::stderr(),
                "Give these to the app as its Kling access key and secret key; the secret key \
                 is not shown again."
            );
        }
    }
}

/// `kling-audit actors ...`.
pub fn actors_cmd(g: &Global, command: &ActorsCommand) -> anyhow::Result<Exit> {
    match command {
        ActorsCommand::Add {
            name,
            format,
            config,
        } => {
            let path = actors_file(g, config)?;
            print_new_keys(&actors::add(&path, name)?, *format);
            Ok(Exit::Ok)
        }
        ActorsCommand::Rotate {
            name,
            format,
            config,
        } => {
            let path = actors_file(g, config)?;
            print_new_keys(&actors::rotate(&path, name)?, *format);
            Ok(Exit::Ok)
        }
        ActorsCommand::Enable { name, config } => {
            let path = actors_file(g, config)?;
            if actors::enable(&path, name)? {
                println!("actor {name} enabled");
            } else {
                println!("actor {name} was not disabled");
            }
            Ok(Exit::Ok)
        }
        ActorsCommand::List { format, config } => {
            let path = actors_file(g, config)?;
            let list = actors::list(&path)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&list)?),
                Format::Text => {
                    for a in &list {
                        println!(
                            "{}\t{}\t{}",
                            a.name,
                            a.access_key,
                            if a.disabled { "disabled" } else { "enabled" }
                        );
                    }
                }
            }
            Ok(Exit::Ok)
        }
        ActorsCommand::Disable { name, config } => {
            let path = actors_file(g, config)?;
            if actors::disable(&path, name)? {
                println!("actor {name} disabled");
            } else {
                println!("actor {name} was already disabled");
            }
            Ok(Exit::Ok)
        }
    }
}
