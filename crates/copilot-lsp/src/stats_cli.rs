//! `copilot-lsp stats [--workspace DIR] [--since DAYS] [--json]`: what the event log says of
//! a workspace's suggestions (the figures are `copilot-events`' `stats`), as a table or JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;

#[derive(ClapArgs, Debug)]
pub struct StatsArgs {
    /// The workspace folder (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Only suggestions shown in the last DAYS days.
    #[arg(long, value_name = "DAYS")]
    pub since: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The workspace folder a command is about: `--workspace`, else the current directory.
pub fn workspace(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => std::env::current_dir().context("no current directory"),
    }
}

/// The data directory, or a clear error.
pub fn data_dir() -> Result<PathBuf> {
    copilot_events::paths::data_dir()
        .context("no data directory: neither XDG_DATA_HOME nor HOME is set to an absolute path")
}

pub fn stats(a: StatsArgs) -> Result<()> {
    if a.since.is_some_and(|d| !d.is_finite() || d < 0.0) {
        bail!("--since takes a number of days, 0 or more");
    }
    let root = workspace(a.workspace)?;
    let data = data_dir()?;
    let read = copilot_events::read_workspace(&data, &root)?;
    if read.corrupt_lines > 0 {
        tracing::warn!(lines = read.corrupt_lines, "corrupt event lines skipped");
    }
    let report = copilot_events::stats::report(
        copilot_events::paths::canonical_root(&root)
            .display()
            .to_string(),
        &read,
        a.since,
        copilot_events::record::now_ms(),
    );
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else if read.files.is_empty() {
        writeln!(
            out,
            "no events for {} (looked in {})",
            report.workspace,
            data.join(copilot_events::paths::EVENTS_DIR).display()
        )?;
    } else {
        write!(out, "{}", report.table())?;
    }
    Ok(())
}
