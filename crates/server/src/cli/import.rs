//! `arbor import …`: moving in from the original service or from a ChatGPT export.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use infra_import::{CbBackDatabase, ChatGptExports};
use usecase::import::{ImportProgress, ImportReport, ImportService};
use usecase::ports::UserRepository;

use super::stdout_line;
use crate::config::Settings;

/// `arbor import …`
#[derive(Debug, Subcommand)]
pub enum ImportAction {
    /// Import every account of the original service: users (their bcrypt passwords work
    /// until their next login, which replaces them with argon2id), chats with their whole
    /// trees, templates and presets. Ids are kept; a second run imports nothing again.
    CbBack {
        /// The original's database, e.g. sqlite:///srv/cb-back/data/chat_app_tortoise.db
        /// (opened read-only).
        #[arg(long)]
        from: String,
        /// Read and check everything, write nothing; the summary says what would be imported.
        #[arg(long)]
        dry_run: bool,
    },
    /// Import a ChatGPT export (`conversations.json` or the export's zip) into one user's
    /// chats. Importing the same export again adds nothing.
    Chatgpt {
        /// The Arbor account that gets the chats.
        #[arg(long)]
        user: String,
        /// The export file.
        file: PathBuf,
        /// Read and check everything, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs an import and prints its summary.
pub async fn import_command(settings: &Settings, action: ImportAction) -> anyhow::Result<()> {
    let store = super::command_store(settings).await?;
    let service = ImportService::new(
        store.clone(),
        ChatGptExports::new(settings.import.max_expanded_bytes()),
    );
    // Drawn on standard error, and only on a terminal.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    let progress = |p: ImportProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    };
    let report = match action {
        ImportAction::CbBack { from, dry_run } => {
            bar.set_message("accounts");
            let source = CbBackDatabase::open(&from)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("opening the original service's database")?;
            service.import_legacy(&source, dry_run, &progress).await
        }
        ImportAction::Chatgpt {
            user,
            file,
            dry_run,
        } => {
            bar.set_message("conversations");
            let name = domain::Username::parse(user.as_str())
                .map_err(|e| anyhow::anyhow!("--user: {e}"))?;
            let owner = store
                .find_credentials(&name)
                .await?
                .with_context(|| format!("no account named {user:?}"))?
                .user
                .id;
            service
                .import_export(owner, &file, dry_run, &progress)
                .await
        }
    };
    bar.finish_and_clear();
    store.close().await;
    let report = report.map_err(|e| match e {
        usecase::import::ImportError::Source(cause) => {
            anyhow::anyhow!("the source database cannot be read: {cause}")
        }
        other => anyhow::anyhow!("{other}"),
    })?;
    stdout_line(&summary(&report))
}

/// What an import did, for people.
pub fn summary(r: &ImportReport) -> String {
    let mut out = format!(
        "{}{} users ({} skipped), {} chats ({} skipped), {} messages, {} templates ({} skipped), {} presets ({} skipped)",
        if r.dry_run {
            "dry run, nothing written: would import "
        } else {
            "imported "
        },
        r.users,
        r.users_skipped,
        r.counts.chats,
        r.counts.chats_skipped,
        r.counts.messages,
        r.counts.templates,
        r.counts.templates_skipped,
        r.counts.presets,
        r.counts.presets_skipped,
    );
    if !r.problems.is_empty() {
        out.push_str("\nrepaired or left out:");
        for line in &r.problems {
            out.push_str("\n  - ");
            out.push_str(line);
        }
    }
    if r.more_problems > 0 {
        out.push_str(&format!("\n  … and {} more", r.more_problems));
    }
    out
}
