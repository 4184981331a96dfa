//! `medtext generate`: the manual pages and shell completions the packages
//! install, made from the command line's own definition so they cannot
//! drift from it. Release packaging calls exactly `medtext generate man DIR`
//! and `medtext generate complete SHELL`.
//!
//! Both are the same bytes at every run of one build: the pages carry the
//! build's date (the commit's, see medtext-build-info), never the clock's.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use clap_complete::Shell;

use crate::{err, CliResult};

#[derive(Subcommand)]
pub enum GenerateCommand {
    /// Write the manual pages into DIR (made if missing): medtext.1 and one
    /// page per subcommand, nested ones too (medtext-classify.1,
    /// medtext-pack-export.1, ...). Pages already there are replaced.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on standard output.
    Complete {
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
}

/// Runs `command` for the command line `cli` (`Cli::command()`).
pub fn run(command: GenerateCommand, cli: clap::Command) -> CliResult {
    match command {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| in_file(&dir, e))?;
            let mut cli = cli.disable_help_subcommand(true);
            cli.build();
            let pages = write_pages(&cli, &dir)?;
            eprintln!("wrote {pages} manual pages in {}", dir.display());
            Ok(())
        }
        GenerateCommand::Complete { shell } => {
            // Made in memory first: clap_complete panics on a failed write,
            // and stdout may be a full disk.
            let mut script = Vec::new();
            let mut cli = cli;
            clap_complete::generate(shell, &mut cli, "medtext", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .map_err(err)
        }
    }
}

/// Writes the page of `command` and those of its visible subcommands,
/// depth first, into `dir`; returns how many.
fn write_pages(command: &clap::Command, dir: &Path) -> Result<usize, String> {
    let page = clap_mangen::Man::new(command.clone())
        .date(medtext_build_info::DATE)
        .source(format!("MedText {}", medtext_build_info::VERSION))
        .manual("MedText Manual");
    let path = dir.join(page.get_filename());
    let mut roff = Vec::new();
    page.render(&mut roff).map_err(|e| in_file(&path, e))?;
    std::fs::write(&path, roff).map_err(|e| in_file(&path, e))?;
    let mut pages = 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages += write_pages(sub, dir)?;
    }
    Ok(pages)
}

/// An I/O error with the file it happened on (a packager's folder, never a
/// patient's file).
fn in_file(path: &Path, e: std::io::Error) -> String {
    format!("{}: {}", path.display(), err(e))
}
