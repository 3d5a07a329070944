//! The `kiln` command line: argument parsing and output only. Everything a
//! library user would need lives in the library modules.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error;

pub mod packages;
use crate::progress::{Progress, ProgressMode};

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI container images from source trees and Dockerfiles, without a daemon",
    after_help = "Run `kiln COMMAND --help` for a command's options and examples."
)]
pub struct Cli {
    /// How to show progress: auto (tty on a terminal, else plain), plain, tty, json, quiet.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, env = "KILN_PROGRESS")]
    pub progress: ProgressMode,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print shell completions.
    ///
    /// Example: kiln completions bash > /etc/bash_completion.d/kiln
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Debian packages: resolve closures.
    ///
    /// Example: kiln packages resolve nodejs@20
    Packages(packages::PackagesArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                error::code::USAGE
            } else {
                0
            });
        }
    };
    let progress = Progress::new(cli.progress);
    match run(cli, &progress) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err, &progress);
            ExitCode::from(error::exit_code(&err))
        }
    }
}

fn run(cli: Cli, progress: &Progress) -> crate::Result<()> {
    match cli.command {
        Command::Packages(a) => packages::run(a, progress),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Prints an error chain as `error: what` + `  caused by: …` lines.
fn report(err: &anyhow::Error, progress: &Progress) {
    let red = progress.color();
    let head = if red { "\x1b[31merror\x1b[0m" } else { "error" };
    let mut chain = err.chain();
    if let Some(first) = chain.next() {
        eprintln!("{head}: {first}");
    }
    for cause in chain {
        eprintln!("  caused by: {cause}");
    }
}
