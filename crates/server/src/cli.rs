//! The command line: `arbor serve`, `arbor migrate …`, `arbor user …`, `arbor import …`,
//! `arbor config check`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};

use crate::config::Settings;
use crate::startup::Application;
use crate::telemetry;

mod import;

pub use import::ImportAction;

/// Arbor: a multi-user LLM chat server.
#[derive(Debug, Parser)]
#[command(name = "arbor", version, about)]
pub struct Cli {
    /// Folder with default.toml and <ARBOR_ENV>.toml.
    #[arg(
        long,
        global = true,
        env = "ARBOR_CONFIG_DIR",
        default_value = "config"
    )]
    pub config_dir: PathBuf,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server.
    Serve,
    /// Manage the database schema.
    Migrate {
        /// Migration action.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Manage accounts (passwords are read from standard input, one line).
    User {
        /// Account action.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Import from the original service or from a ChatGPT export.
    Import {
        /// What to import.
        #[command(subcommand)]
        action: ImportAction,
    },
    /// Inspect the configuration.
    Config {
        /// Configuration action.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `arbor migrate …`
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the last applied migration (or `--steps N`).
    Down {
        /// How many to revert.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table and apply all migrations again (destroys all data).
    Fresh {
        /// Required: confirms that all data may be destroyed.
        #[arg(long)]
        yes: bool,
    },
}

/// `arbor user …`
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create an account (whatever the registration policy); its password is the first line
    /// of standard input.
    Create {
        /// 3–32 of `A-Z a-z 0-9 _ . -`.
        username: String,
        /// Make it an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Make an account an administrator (or a plain user again with `--demote`).
    Promote {
        /// The account.
        username: String,
        /// Make it a plain user instead.
        #[arg(long)]
        demote: bool,
    },
    /// List accounts, oldest first.
    List {
        /// Page number (from 1).
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Accounts per page (1–100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Disable an account (its sessions end at once), or re-enable it with `--enable`.
    Disable {
        /// The account.
        username: String,
        /// Re-enable instead.
        #[arg(long)]
        enable: bool,
    },
    /// Set a new password (read from standard input) and end every session of the account.
    ResetPassword {
        /// The account.
        username: String,
    },
}

/// The first line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<domain::Password> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let line = line.trim_end_matches(['\r', '\n']);
    domain::Password::parse(line).map_err(|e| anyhow::anyhow!("password: {e}"))
}

fn username(raw: &str) -> anyhow::Result<domain::Username> {
    domain::Username::parse(raw).map_err(|e| anyhow::anyhow!("username: {e}"))
}

/// The store a one-shot command works on: connected at once (an operator waiting on a CLI
/// wants a fast, clear failure, not a pool wait) and migrated when the configuration says so.
pub(crate) async fn command_store(settings: &Settings) -> anyhow::Result<infra_db::SeaOrmStore> {
    let mut db = settings.db_config();
    db.lazy = false;
    db.acquire_timeout = db.connect_timeout;
    let store = infra_db::SeaOrmStore::connect(&db).await?;
    if settings.database.migrate_on_startup {
        store.migrate().await.context("migrating the database")?;
    }
    Ok(store)
}

async fn user_command(settings: &Settings, action: UserAction) -> anyhow::Result<()> {
    let store = command_store(settings).await?;
    let auth = crate::startup::auth_service(settings, store.clone())?;
    let result = async {
        match action {
            UserAction::Create {
                username: name,
                admin,
            } => {
                let name = username(&name)?;
                let role = if admin {
                    domain::AccountRole::Admin
                } else {
                    domain::AccountRole::User
                };
                let user = auth
                    .create_account(name, password_from_stdin()?, role)
                    .await?;
                stdout_line(&format!(
                    "created {} ({}, {})",
                    user.username.as_str(),
                    user.id,
                    user.role
                ))
            }
            UserAction::Promote {
                username: name,
                demote,
            } => {
                let role = if demote {
                    domain::AccountRole::User
                } else {
                    domain::AccountRole::Admin
                };
                let user = auth.set_role(&username(&name)?, role).await?;
                stdout_line(&format!("{} is now {}", user.username.as_str(), user.role))
            }
            UserAction::List { page, limit } => {
                let request = domain::PageRequest::new(Some(page), Some(limit))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let users = auth.list_users(request).await?;
                for u in &users.items {
                    let state = match (u.disabled, u.pending) {
                        (true, _) => "disabled",
                        (false, true) => "pending",
                        (false, false) => "active",
                    };
                    stdout_line(&format!(
                        "{}  {:<32}  {:<5}  {:<8}  {}",
                        u.id,
                        u.username.as_str(),
                        u.role,
                        state,
                        u.created_at
                    ))?;
                }
                stdout_line(&format!(
                    "{} of {} account(s)",
                    users.items.len(),
                    users.total
                ))
            }
            UserAction::Disable {
                username: name,
                enable,
            } => {
                let user = auth.set_disabled(&username(&name)?, !enable).await?;
                stdout_line(&format!(
                    "{} is {}",
                    user.username.as_str(),
                    if user.disabled { "disabled" } else { "enabled" }
                ))
            }
            UserAction::ResetPassword { username: name } => {
                let name = username(&name)?;
                let user = auth.set_password(&name, password_from_stdin()?).await?;
                stdout_line(&format!(
                    "password of {} changed; every session ended",
                    user.username.as_str()
                ))
            }
        }
    }
    .await;
    store.close().await;
    result
}

/// `arbor config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

pub(crate) fn stdout_line(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{line}").context("writing to stdout")
}

/// Runs the command line.
///
/// # Errors
/// Anything that makes the command fail; `main` prints it and exits non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&cli.config_dir)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init(&settings.log);
            let app = Application::build(&settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate { action } => {
            telemetry::init_for_command(&settings.log);
            let mut db = settings.db_config();
            db.lazy = false;
            // An operator waiting on a CLI wants a fast, clear failure, not a 30 s pool wait.
            db.acquire_timeout = db.connect_timeout;
            let store = infra_db::SeaOrmStore::connect(&db).await?;
            let conn = store.migration_connection();
            match action {
                MigrateAction::Up => {
                    Migrator::up(conn, None).await.context("migrate up")?;
                    stdout_line("all migrations applied")?;
                }
                MigrateAction::Down { steps } => {
                    Migrator::down(conn, Some(steps))
                        .await
                        .context("migrate down")?;
                    stdout_line(&format!("reverted {steps} migration(s)"))?;
                }
                MigrateAction::Status => {
                    for m in Migrator::get_migration_with_status(conn)
                        .await
                        .context("migration status")?
                    {
                        stdout_line(&format!("{:<12} {}", m.status().to_string(), m.name()))?;
                    }
                }
                MigrateAction::Fresh { yes } => {
                    anyhow::ensure!(
                        yes,
                        "`migrate fresh` destroys all data; pass --yes to confirm"
                    );
                    Migrator::fresh(conn).await.context("migrate fresh")?;
                    stdout_line("database recreated")?;
                }
            }
            store.close().await;
        }
        Command::User { action } => {
            telemetry::init_for_command(&settings.log);
            user_command(&settings, action).await?;
        }
        Command::Import { action } => {
            telemetry::init_for_command(&settings.log);
            import::import_command(&settings, action).await?;
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let shown = toml_like(&settings)?;
            stdout_line(&shown)?;
            stdout_line("configuration is valid")?;
        }
    }
    Ok(())
}

/// The effective configuration as JSON, secrets redacted by their serializers.
fn toml_like(settings: &Settings) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(settings).context("serializing settings")?;
    if let Some(url) = value.pointer_mut("/database/url") {
        *url = serde_json::Value::String(infra_db::redact_url(
            secrecy::ExposeSecret::expose_secret(&settings.database.url),
        ));
    }
    serde_json::to_string_pretty(&value).context("formatting settings")
}
