//! `copilot-lsp events [--workspace DIR | --all] [--clear]`: where a workspace's event log
//! is and how big, or (`--clear`) delete it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args as ClapArgs;

use crate::stats_cli::{data_dir, workspace};

#[derive(ClapArgs, Debug)]
pub struct EventsArgs {
    /// The workspace folder (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Every workspace's log.
    #[arg(long, conflicts_with = "workspace")]
    pub all: bool,
    /// Delete the log(s).
    #[arg(long)]
    pub clear: bool,
}

pub fn events(a: EventsArgs) -> Result<()> {
    let data = data_dir()?;
    let root = copilot_events::paths::canonical_root(&workspace(a.workspace)?);
    let mut out = std::io::stdout().lock();
    if a.clear {
        let removed = if a.all {
            copilot_events::clear_all(&data)?
        } else {
            copilot_events::clear_workspace(&data, &root)?
        };
        for f in &removed {
            writeln!(out, "deleted {}", f.display())?;
        }
        if removed.is_empty() {
            writeln!(out, "no event log to delete")?;
        }
        return Ok(());
    }
    let files = if a.all {
        copilot_events::paths::all_files(&data)?
    } else {
        vec![
            copilot_events::paths::rotated_file(&data, &root),
            copilot_events::paths::current_file(&data, &root),
        ]
    };
    let mut any = false;
    for f in files.iter().filter(|f| f.is_file()) {
        let bytes = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        writeln!(out, "{} ({bytes} bytes)", f.display())?;
        any = true;
    }
    if !any {
        writeln!(
            out,
            "no event log yet under {}",
            data.join(copilot_events::paths::EVENTS_DIR).display()
        )?;
    }
    Ok(())
}
