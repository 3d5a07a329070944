//! The `kiln` command line: argument parsing and output only. Everything a
//! library user would need lives in the library modules.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub mod plan;

use crate::error;
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
    /// Print the build plan for an app (Nixpacks-compatible JSON or TOML).
    ///
    /// Example: kiln plan examples/node-npm --format toml
    Plan(plan::PlanArgs),
    /// Print the providers that match an app.
    ///
    /// Example: kiln detect . --explain
    Detect(plan::DetectArgs),
    /// Summarise an app's plan: providers, toolchains, setup/install/build/start.
    ///
    /// Example: kiln info examples/python-flask
    Info(plan::InfoArgs),
    /// Write a Dockerfile (and assets) equivalent to the plan, for BuildKit/buildah.
    ///
    /// Example: kiln dockerfile . -o Dockerfile --base-image debian:trixie-slim
    Dockerfile(plan::DockerfileArgs),
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
            Ok(())
        }
        Command::Plan(a) => plan::run_plan(a, progress),
        Command::Detect(a) => plan::run_detect(a, progress),
        Command::Info(a) => plan::run_info(a, progress),
        Command::Dockerfile(a) => plan::run_dockerfile(a, progress),
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
