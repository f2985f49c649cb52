//! The `blossom-replicator` command: parses flags, installs the log
//! subscriber, and hands over to the command modules, which call the
//! library. Exit codes: 0 every replica stored, 1 some failed or are still
//! pending, 2 bad usage, bad input or a failure to run at all.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
