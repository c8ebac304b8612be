//! `kling-audit`: the command-line front of the ledger, the simulator and the gateway.
//!
//! This crate only parses flags, turns them into library options, prints results and chooses
//! exit codes: 0 success (and an intact ledger), 1 an integrity fault or a refused input,
//! 2 the command could not run (usage, missing directory, permissions, I/O).

// `println!`, `print!` and `eprintln!` for every module of this crate, in place of
// std's, which panic when the output cannot be written (stdout on a full disk or a file size
// limit): exit 101 with a backtrace for `verify > report.txt` on a full disk. Here a failed
// stdout ends the command with exit 2 and says why; a failed stderr has nowhere to say it.
macro_rules! println {
    () => {
        $crate::print_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::print_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::print_out(format_args!($($arg)*))
    };
}
macro_rules! eprintln {
    () => {
        $crate::print_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::print_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout; if that fails, says so on stderr and exits 2.
pub fn print_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Says on stderr that standard output could not be written, and exits 2.
fn stdout_failed(e: &std::io::Error) -> ! {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "error: cannot write to standard output ({e}); run the command again with an output \
         that can be written"
    );
    std::process::exit(2);
}

/// The causes of `e` worth a line of their own: many errors already end with their source's
/// text ("cannot read X: permission denied"), which is then not repeated.
fn cause_lines(e: &anyhow::Error) -> Vec<String> {
    let mut shown = e.to_string();
    let mut lines = Vec::new();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            shown.push_str(&text);
            lines.push(text);
        }
    }
    lines
}

/// `n` and `word`, with an `s` unless `n` is 1: "1 segment", "2 segments".
pub(crate) fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `n` and `one` if `n` is 1, else `n` and `many`: "1 match", "2 matches".
pub(crate) fn plural_of(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Writes to stderr, ignoring a failure: there is nowhere left to report it.
pub fn print_err(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(args);
}

mod client_cmds;
mod demo;
mod gateway_cmds;
mod ledger_cmds;
mod report;
mod signals;
mod sim_cmd;
mod witness_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tamper-evident audit trail for Kling AI operations.
#[derive(Debug, Parser)]
#[command(name = "kling-audit", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command understands.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The ledger directory.
    #[arg(
        long,
        global = true,
        env = "KLING_AUDIT_DIR",
        default_value = "./audit"
    )]
    pub dir: PathBuf,
    /// The keys directory (default: `<dir>.keys`, beside the ledger directory).
    #[arg(long, global = true, env = "KLING_AUDIT_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a ledger and its keys and write its first record (`ledger.init`); prints the
    /// verifier key, once the MAC root key, then `{"seq":0,"hash":"<hex>"}` once it is durable.
    Init {
        /// The log's origin name (used as the checkpoint key name).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Show public key information.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Append records and print `{"seq":N,"hash":"<hex>"}` for each once it is durable.
    Log {
        /// The record type, e.g. `task.submitted`.
        #[arg(
            long = "type",
            required_unless_present = "stdin",
            conflicts_with = "stdin"
        )]
        kind: Option<String>,
        /// Who acted.
        #[arg(long, required_unless_present = "stdin", conflicts_with = "stdin")]
        actor: Option<String>,
        /// A JSON object with the details.
        #[arg(long, conflicts_with = "stdin")]
        details: Option<String>,
        /// Read one JSON object per line: {"type":..., "actor":..., "details":{...}}.
        #[arg(long)]
        stdin: bool,
        #[command(flatten)]
        write: ledger_cmds::WriteArgs,
    },
    /// Check every record, link, segment and checkpoint. Exit 0 intact, 1 faults, 2 could not run.
    Verify(ledger_cmds::VerifyArgs),
    /// Run the simulator and the gateway on loopback with a realistic workload, then verify the
    /// ledger and print a summary. Needs nothing configured. Writes into a new directory of its
    /// own (see --out), never into --dir.
    Demo(demo::DemoArgs),
    /// Summarize a ledger that verifies intact.
    Report(ledger_cmds::ReportArgs),
    /// Print the newest signed checkpoint, for an auditor to keep and later pass to
    /// `verify --trusted-checkpoint`.
    Checkpoint {
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write an evidence bundle: a record with its inclusion proof and a signed checkpoint, or
    /// a consistency proof between two checkpoints.
    Prove(ledger_cmds::ProveArgs),
    /// Check an evidence bundle offline against a pinned verifier key.
    VerifyProof(ledger_cmds::VerifyProofArgs),
    /// Run the auditing gateway in front of the Kling API until SIGTERM or SIGINT.
    Gateway(gateway_cmds::GatewayArgs),
    /// Gateway configuration.
    Config {
        #[command(subcommand)]
        command: gateway_cmds::ConfigCommand,
    },
    /// Gateway callers: each actor gets its own Kling-style access key and secret key.
    Actors {
        #[command(subcommand)]
        command: gateway_cmds::ActorsCommand,
    },
    /// Check whether a prompt was submitted: lists the records holding its keyed commitment.
    /// Exit 0 found, 1 not found.
    MatchPrompt(client_cmds::MatchPromptArgs),
    /// Check whether a path the gateway does not know (recorded as route `other`), or a query
    /// whose values the records do not all keep, was requested: lists the records holding its
    /// keyed commitment. Exit 0 found, 1 not found.
    MatchPath(client_cmds::MatchPathArgs),
    /// Run the Kling API simulator until SIGTERM or SIGINT; the first output line is its address.
    Sim(sim_cmd::SimArgs),
    /// Run a C2SP witness that cosigns ledgers' checkpoints (see docs/witness.md); the first
    /// output line is its address. `witness keygen` makes its key.
    Witness(witness_cmd::WitnessArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print the public verifier key.
    Show,
}

/// How a command ended.
pub enum Exit {
    Ok,
    Fault,
}

// The gateway allocates small JSON values and buffers on every request; mimalloc's
// per-thread free lists cost less there than the system allocator's locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints clap's help, version or usage error. Help and version text go to standard output;
/// unlike clap's own exit, a failed write of them is an error (exit 2), as for every output.
fn help_or_usage(e: &clap::Error) -> ExitCode {
    let printed = e
        .print()
        .and_then(|()| std::io::Write::flush(&mut std::io::stdout()));
    if e.use_stderr() {
        return ExitCode::from(2);
    }
    if let Err(io) = printed {
        stdout_failed(&io);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // A write past the file size limit (`ulimit -f`) then fails with EFBIG, which the ledger
    // reports and stops on, instead of the process being killed without a word.
    // SAFETY: setting a signal to be ignored installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    restore_sigpipe();
    let matches = match <Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return help_or_usage(&e),
    };
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return help_or_usage(&e),
    };
    // The demo makes a directory of its own: a ledger directory named for it on the command
    // line would otherwise be ignored without a word.
    if let Some(demo) = matches.subcommand_matches("demo") {
        if let Some(flag) = ["dir", "keys_dir"]
            .into_iter()
            .find(|id| demo.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        {
            eprintln!(
                "error: demo does not take --{}: it writes its ledger and keys into a new \
                 directory of its own, kling-audit-demo-<time> in the current directory; \
                 pass --out DIR to choose that directory instead",
                flag.replace('_', "-")
            );
            return ExitCode::from(2);
        }
        // From the environment they name the operator's real ledger, set for other commands:
        // not a mistake to refuse, but worth a word.
        for (id, var) in [
            ("dir", "KLING_AUDIT_DIR"),
            ("keys_dir", "KLING_AUDIT_KEYS_DIR"),
        ] {
            if demo.value_source(id) == Some(clap::parser::ValueSource::EnvVariable) {
                eprintln!(
                    "note: the demo does not use {var}; it writes into a directory of its own"
                );
            }
        }
    }
    // `init` and `log` report a storage failure themselves, with what it means for their
    // records. The writer's own logs (its failure, and on a full disk the reserve warnings
    // before it) would say it a second time, so they stay off unless asked for.
    let reports_storage = matches!(cli.command, Command::Init { .. } | Command::Log { .. });
    // Servers write to sockets, and a vectored write (as hyper makes) cannot ask for
    // MSG_NOSIGNAL: with SIGPIPE at its default, a peer that closes its connection while a
    // request or an answer is still being written (an upstream answering early, a caller
    // going away) would kill the process, unsealed and without a word.
    let serves = matches!(
        cli.command,
        Command::Gateway(_) | Command::Sim(_) | Command::Witness(_) | Command::Demo(_)
    );
    if reports_storage || serves {
        // A reader that goes away must not kill a writer between a durable record and its
        // close: printing then fails with EPIPE, and the command says what became durable.
        // SAFETY: no thread exists yet; setting a signal to be ignored installs no handler.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    init_tracing(if reports_storage {
        "warn,kling_audit_ledger::writer=off"
    } else {
        "warn"
    });
    match run(cli) {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Fault) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            for line in cause_lines(&e) {
                eprintln!("  caused by: {line}");
            }
            ExitCode::from(2)
        }
    }
}

/// Rust ignores SIGPIPE, which turns `kling-audit verify | head` into a panic on the next
/// print. A command-line tool should simply stop when its reader goes away (servers and
/// ledger writers ignore it again in `main`).
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; only resets a disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs go to stderr as JSON lines, filtered by `KLING_AUDIT_LOG` or else by `default`.
fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("KLING_AUDIT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = &cli.global;
    match cli.command {
        Command::Init { origin } => ledger_cmds::init(g, origin),
        Command::Keys {
            command: KeysCommand::Show,
        } => ledger_cmds::keys_show(g),
        Command::Log {
            stdin: true, write, ..
        } => ledger_cmds::log_stdin(g, &write),
        Command::Log {
            kind,
            actor,
            details,
            write,
            ..
        } => ledger_cmds::log_one(
            g,
            &write,
            kind.unwrap_or_default(),
            actor.unwrap_or_default(),
            details,
        ),
        Command::Verify(a) => ledger_cmds::verify_cmd(g, &a),
        Command::Demo(a) => demo::demo(&a),
        Command::Report(a) => report::report_cmd(g, &a),
        Command::Checkpoint { out } => ledger_cmds::checkpoint(g, out.as_deref()),
        Command::Prove(a) => ledger_cmds::prove(g, &a),
        Command::VerifyProof(a) => ledger_cmds::verify_proof(&a),
        Command::Gateway(a) => gateway_cmds::gateway(g, &a),
        Command::Config {
            command: gateway_cmds::ConfigCommand::Check(a),
        } => gateway_cmds::config_check(g, &a),
        Command::Actors { command } => gateway_cmds::actors_cmd(g, &command),
        Command::MatchPrompt(a) => client_cmds::match_prompt(g, &a),
        Command::MatchPath(a) => client_cmds::match_path(g, &a),
        Command::Sim(a) => sim_cmd::run(&a),
        Command::Witness(a) => witness_cmd::run(&a),
    }
}
