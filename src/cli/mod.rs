//! Command-line definitions and the settings every command shares: where
//! the config and database are, which servers, which key. Environment
//! variables are read here and nowhere else.

/// Prints a line to stdout. A reader that went away (`| head`) ends the
/// program quietly, as Unix tools do, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod audit;
mod blobs;
mod progress;
mod push;
mod servers;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use blossom_replicator::blossom::dedup_servers;
use blossom_replicator::config::{self, Config};
use blossom_replicator::{KeySigner, Signer as _};
use clap::{Parser, Subcommand};

/// Environment variable holding the secret key (nsec or 64-hex).
const KEY_ENV: &str = "BLOSSOM_SECRET_KEY";
/// Environment variable naming a file that holds the secret key.
const KEY_FILE_ENV: &str = "BLOSSOM_SECRET_KEY_FILE";

/// Replicates blobs across Blossom servers until every server holds a
/// verified copy.
#[derive(Debug, Parser)]
#[command(name = "blossom-replicator", version, about, max_term_width = 100)]
struct Cli {
    /// Configuration file [default: the user's config directory]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// SQLite database [default: from the config, else the user's data directory]
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,

    /// Target server; repeat for several. Replaces the config's server list
    #[arg(long = "server", global = true, value_name = "URL")]
    servers: Vec<String>,

    /// File holding the secret key (nsec or hex) [env: BLOSSOM_SECRET_KEY_FILE];
    /// otherwise BLOSSOM_SECRET_KEY holds the key itself
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push files to every server, then wait until each holds a verified copy
    Push(push::PushArgs),
    /// Work through what is queued (after an interruption, say)
    Run(push::RunArgs),
    /// Queue what verify found missing, and every known blob for servers
    /// newly added to the config, then run
    Repair(push::RunArgs),
    /// Show which servers hold which blobs, from the database
    Status(status::StatusArgs),
    /// Ask every server whether it still holds what the database says
    Verify(audit::VerifyArgs),
    /// Which servers hold a blob (by hash, or a file's content), from the database
    Whereis(audit::WhereisArgs),
    /// Delete blobs from every server and check they are gone
    Delete(audit::DeleteArgs),
    /// Download a blob (by hash, URL or blossom: URI), checking its hash,
    /// resuming from the next server if one breaks off
    Get(blobs::GetArgs),
    /// Ask every server whether it holds a blob (HEAD)
    Has(blobs::HasArgs),
    /// List a public key's blobs on every server (BUD-12)
    List(blobs::ListArgs),
    /// Ask every server to fetch a blob from a URL (BUD-04)
    Mirror(blobs::MirrorArgs),
    /// Upload a file for the first server to optimise (BUD-05)
    Media(blobs::MediaArgs),
    /// Report a blob to every server (BUD-09)
    Report(blobs::ReportArgs),
    /// Read or publish a BUD-03 server list (kind 10063) on Nostr relays
    #[command(subcommand)]
    Servers(servers::ServersCommand),
    /// Write a new secret key to a file and print its public key
    Keygen {
        /// Where to write the key (must not exist)
        path: PathBuf,
    },
    /// Print the public key (hex) of the configured secret key
    Pubkey,
}

/// Runs the command line and returns the process exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = progress::Progress::new();
    init_tracing(&progress);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(run(cli, progress)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    print_error(error);
    ExitCode::from(2)
}

/// An error as the user sees it: `error: ` and the whole chain on one line.
pub(crate) fn print_error(error: &anyhow::Error) {
    eprintln!("error: {}", one_line(error));
}

/// The error and its causes on one line, leaving out causes whose text the
/// line already contains (many messages name their cause themselves).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

async fn run(cli: Cli, progress: progress::Progress) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Push(args) => push::push(&cli, args, progress).await,
        Command::Run(args) => push::run(&cli, args, progress, false).await,
        Command::Repair(args) => push::run(&cli, args, progress, true).await,
        Command::Status(args) => status::status(&cli, args).await,
        Command::Verify(args) => audit::verify(&cli, args).await,
        Command::Whereis(args) => audit::whereis(&cli, args).await,
        Command::Delete(args) => audit::delete(&cli, args).await,
        Command::Get(args) => blobs::get(&cli, args).await,
        Command::Has(args) => blobs::has(&cli, args).await,
        Command::List(args) => blobs::list(&cli, args).await,
        Command::Mirror(args) => blobs::mirror(&cli, args).await,
        Command::Media(args) => blobs::media(&cli, args).await,
        Command::Report(args) => blobs::report(&cli, args).await,
        Command::Servers(command) => servers::servers(&cli, command).await,
        Command::Keygen { path } => keygen(path),
        Command::Pubkey => {
            out!("{}", signer(&cli)?.public_key().to_hex());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Installs the log subscriber: `RUST_LOG`, by default `info` for this
/// crate and `warn` for the rest, written above the progress bars.
fn init_tracing(progress: &progress::Progress) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,blossom_replicator=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress.log_writer())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The validated configuration: the file, then the flags on top.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let dirs = directories::ProjectDirs::from("", "", "blossom-replicator");
    let default_db = match &dirs {
        Some(dirs) => dirs.data_dir().join("replicator.db"),
        None => PathBuf::from("replicator.db"),
    };
    let mut config = match (&cli.config, &dirs) {
        (Some(path), _) => Config::load(path, &default_db)?,
        (None, Some(dirs)) if dirs.config_dir().join("config.toml").exists() => {
            Config::load(&dirs.config_dir().join("config.toml"), &default_db)?
        }
        _ => Config::new(default_db, Vec::new()),
    };
    if let Some(db) = &cli.db {
        config.database = db.clone();
    }
    if !cli.servers.is_empty() {
        let servers = dedup_servers(cli.servers.iter().map(String::as_str))?;
        config.replace_servers(servers);
    }
    Ok(config)
}

/// The database path alone, for commands that need no servers or key.
fn database_path(cli: &Cli) -> anyhow::Result<PathBuf> {
    Ok(load_config(cli)?.database)
}

/// The secret key: `--key-file`, else `BLOSSOM_SECRET_KEY_FILE`, else
/// `BLOSSOM_SECRET_KEY`.
fn signer(cli: &Cli) -> anyhow::Result<KeySigner> {
    let env_file = std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let key_file = cli.key_file.clone().or(env_file);
    let env_key = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty());
    Ok(config::load_signer(key_file.as_deref(), env_key.as_deref())?)
}

fn keygen(path: &Path) -> anyhow::Result<ExitCode> {
    if path.exists() {
        bail!("{} already exists; not overwriting a key", path.display());
    }
    let signer = KeySigner::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", signer.to_nsec()).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    out!("{}", signer.public_key().to_hex());
    Ok(ExitCode::SUCCESS)
}
