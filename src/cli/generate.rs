//! `storegate generate`: the files a package ships that are derived from
//! the command line definitions (man pages, shell completions). They are
//! written by the binary itself so they always match its real arguments;
//! `scripts/build-deb.sh` runs it before `cargo deb`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap_complete::Shell;

/// What to write, and where.
#[derive(clap::Subcommand)]
pub enum GenerateCommand {
    /// Man pages: storegate.1 and one storegate-COMMAND.1 per command.
    Man {
        /// Directory to write them into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Completions for bash (storegate.bash), zsh (_storegate) and fish
    /// (storegate.fish).
    Completions {
        /// Directory to write them into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes what `what` asks for, from `command` (the whole command line
/// definition, `Cli::command()` in main.rs). Prints each file written.
pub fn run(what: GenerateCommand, command: clap::Command) -> anyhow::Result<()> {
    match what {
        GenerateCommand::Man { out } => man(command, &out),
        GenerateCommand::Completions { out } => completions(command, &out),
    }
}

fn man(command: clap::Command, out: &Path) -> anyhow::Result<()> {
    create(out)?;
    // clap_mangen skips hidden commands (this one, debug): they are tools
    // for builds and tests, not for a technician's manual.
    clap_mangen::generate_to(command, out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    list(out)
}

fn completions(mut command: clap::Command, out: &Path) -> anyhow::Result<()> {
    create(out)?;
    let name = command.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let file = clap_complete::generate_to(shell, &mut command, &name, out)
            .with_context(|| format!("writing {shell} completions into {}", out.display()))?;
        println!("{}", file.display());
    }
    Ok(())
}

fn create(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

fn list(out: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
