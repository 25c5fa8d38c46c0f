//! Moving in: the original service's accounts and ChatGPT exports brought into Arbor.
//!
//! Sources are read by adapters ([`LegacySource`], [`ConversationSource`]); here each item is
//! checked against Arbor's rules (a name that cannot be a username, a tree that breaks the
//! tree rules — see [`domain::rebuild_tree`]), and what cannot be kept is said in the
//! report, never a reason to stop. Each account is written in one transaction, and ids are
//! kept (or derived), so an import run twice writes nothing the second time.

use std::collections::HashMap;
use std::path::Path;

use domain::{
    AccountRole, Category, ChatId, ChatTitle, ForeignMessage, ForeignNode, ForeignRoot, MaxTokens,
    MessageId, ModelId, Preset, PresetDescription, PresetId, PresetName, PromptTemplate, Repair,
    Role, SystemPrompt, TemplateContent, TemplateDescription, TemplateId, TemplateName, UserId,
    Username, limits, rebuild_tree,
};

pub use crate::ports::import::{
    AccountImport, AccountImported, ChatImport, ConversationSource, ExportError,
    ForeignConversation, ImportCounts, ImportRepository, LegacyAccount, LegacyChat, LegacyMessage,
    LegacyNode, LegacyPreset, LegacySource, LegacyTemplate, LegacyUser, NAME_TAKEN,
};
use crate::ports::{BoxError, NewUser, RepoError};

/// The most problems a report lists one by one (the rest are counted).
pub const REPORT_PROBLEMS_MAX: usize = 200;
/// The most conversations one export may hold.
pub const EXPORT_CONVERSATIONS_MAX: u64 = 100_000;

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts created.
    pub users: u64,
    /// Accounts already there (or refused: see `problems`).
    pub users_skipped: u64,
    /// Chats, messages, templates and presets written or skipped (already there, unreadable
    /// or invalid: see `problems`).
    pub counts: ImportCounts,
    /// What was repaired or left out, one line each (at most [`REPORT_PROBLEMS_MAX`]).
    pub problems: Vec<String>,
    /// Problems beyond those listed.
    pub more_problems: u64,
    /// Nothing was written.
    pub dry_run: bool,
}

impl ImportReport {
    fn problem(&mut self, line: String) {
        if self.problems.len() < REPORT_PROBLEMS_MAX {
            self.problems.push(line);
        } else {
            self.more_problems += 1;
        }
    }

    fn add(&mut self, written: AccountImported) {
        self.users += u64::from(written.user_created);
        self.counts += written.counts;
    }

    fn repairs(&mut self, chat: ChatId, repairs: &[Repair]) {
        for repair in repairs {
            self.problem(match repair {
                Repair::MissingMessage(m) => {
                    format!("chat {chat}: node {m} has no message; its children moved up")
                }
                Repair::InnerSystemMessage(m) => format!(
                    "chat {chat}: system message {m} below the root left out (the first becomes the system prompt)"
                ),
                Repair::Unreachable(m) => {
                    format!("chat {chat}: message {m} is not in the tree; left out")
                }
                Repair::DuplicateId(m) => format!("chat {chat}: id {m} used twice; one left out"),
                Repair::Truncated(m) => format!(
                    "chat {chat}: message {m} cut to {} bytes",
                    domain::IMPORTED_MESSAGE_MAX_BYTES
                ),
            });
        }
    }
}

/// How far an import is: `done` of `total` accounts (or conversations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// Finished so far.
    pub done: u64,
    /// All there are.
    pub total: u64,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The export cannot be read; nothing was imported.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The original's database cannot be read.
    #[error("the source database cannot be read")]
    Source(#[source] BoxError),
    /// Writing failed; accounts finished before it stay imported (each is whole).
    #[error("storage failure")]
    Storage(#[from] RepoError),
    /// The owner of an export import does not exist.
    #[error("no such user")]
    UnknownUser,
}

/// Inbound port of imports from the HTTP side.
pub trait ImportUseCase: Send + Sync + 'static {
    /// Imports the ChatGPT export at `path` into `owner`'s chats. The whole file is checked
    /// first: a malformed export imports nothing.
    ///
    /// # Errors
    /// [`ImportError::Export`] for a file that is not a readable export; storage failures.
    fn import_chatgpt(
        &self,
        owner: UserId,
        path: &Path,
    ) -> impl Future<Output = Result<ImportReport, ImportError>> + Send;
}

/// The import service.
#[derive(Debug)]
pub struct ImportService<R, S> {
    repo: R,
    exports: S,
}

impl<R: ImportRepository, S: ConversationSource> ImportService<R, S> {
    /// Wires the service.
    pub const fn new(repo: R, exports: S) -> Self {
        Self { repo, exports }
    }

    /// Imports every account of the original service from `source`, each in one
    /// transaction; `progress` hears after each one.
    ///
    /// # Errors
    /// [`ImportError::Source`] when the source cannot be read; storage failures (accounts
    /// already imported stay, whole).
    pub async fn import_legacy(
        &self,
        source: &impl LegacySource,
        dry_run: bool,
        progress: &(dyn Fn(ImportProgress) + Sync),
    ) -> Result<ImportReport, ImportError> {
        let rows = source.user_rows().await.map_err(ImportError::Source)?;
        let total = rows.len() as u64;
        let mut report = ImportReport {
            dry_run,
            ..ImportReport::default()
        };
        for (done, row) in (1..).zip(rows) {
            let legacy = match source.account(row).await {
                Ok(legacy) => legacy,
                Err(e) => {
                    report.users_skipped += 1;
                    report.problem(format!(
                        "user row {row}: cannot be read ({e}); not imported"
                    ));
                    progress(ImportProgress { done, total });
                    continue;
                }
            };
            let name = legacy.user.name.clone();
            if let Some(account) = legacy_account(legacy, &mut report) {
                match self.repo.import_account(account, dry_run).await {
                    Ok(written) => {
                        report.users_skipped += u64::from(!written.user_created);
                        report.add(written);
                    }
                    Err(RepoError::Conflict(why)) => {
                        report.users_skipped += 1;
                        report.problem(if why == NAME_TAKEN {
                            format!("user {name:?}: the name belongs to another account; not imported")
                        } else {
                            format!("user {name:?}: {why} (another import at the same time?); not imported")
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                report.users_skipped += 1;
            }
            progress(ImportProgress { done, total });
        }
        Ok(report)
    }

    /// Imports the ChatGPT export at `path` for `owner` (see [`ImportUseCase`]); `progress`
    /// hears after each conversation.
    ///
    /// # Errors
    /// As [`ImportUseCase::import_chatgpt`].
    pub async fn import_export(
        &self,
        owner: UserId,
        path: &Path,
        dry_run: bool,
        progress: &(dyn Fn(ImportProgress) + Sync),
    ) -> Result<ImportReport, ImportError> {
        // First the whole file: a broken export imports nothing.
        let mut reading = self.exports.conversations(path, owner)?;
        let mut total = 0u64;
        while let Some(conversation) = reading.recv().await {
            conversation?;
            total += 1;
            if total > EXPORT_CONVERSATIONS_MAX {
                return Err(ExportError::TooLarge(format!(
                    "more than {EXPORT_CONVERSATIONS_MAX} conversations"
                ))
                .into());
            }
        }
        let mut report = ImportReport {
            dry_run,
            ..ImportReport::default()
        };
        let mut reading = self.exports.conversations(path, owner)?;
        let mut done = 0;
        while let Some(conversation) = reading.recv().await {
            let conversation = conversation?;
            // The rebuild walks up to 100,000 nodes: on the blocking pool, not on a worker
            // that serves requests. A panic in it stays a panic.
            let chat =
                match tokio::task::spawn_blocking(move || conversation_chat(conversation)).await {
                    Ok(chat) => chat,
                    Err(e) => match e.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        // The blocking pool is shutting down: so is the import.
                        Err(e) => return Err(ExportError::Io(Box::new(e)).into()),
                    },
                };
            report.repairs(chat.id, &chat.tree.repairs);
            let account = AccountImport {
                owner,
                user: None,
                chats: vec![chat],
                templates: Vec::new(),
                presets: Vec::new(),
            };
            match self.repo.import_account(account, dry_run).await {
                Ok(written) => report.add(written),
                Err(RepoError::NotFound(_)) => return Err(ImportError::UnknownUser),
                // Another import of the same export got there first: this chat is there.
                Err(RepoError::Conflict(why)) => {
                    report.counts.chats_skipped += 1;
                    report.problem(format!("conversation {done}: {why}; skipped"));
                }
                Err(e) => return Err(e.into()),
            }
            done += 1;
            progress(ImportProgress { done, total });
        }
        Ok(report)
    }
}

impl<R: ImportRepository, S: ConversationSource + 'static> ImportUseCase for ImportService<R, S> {
    async fn import_chatgpt(
        &self,
        owner: UserId,
        path: &Path,
    ) -> Result<ImportReport, ImportError> {
        self.import_export(owner, path, false, &|_| {}).await
    }
}

/// A text cut to `max` characters.
fn cut(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(at, _)| &text[..at])
}

/// A title as Arbor keeps it: trimmed, cut to its limit, `None` when blank.
fn title_of(raw: Option<&str>) -> Option<ChatTitle> {
    raw.map(str::trim)
        .and_then(|t| ChatTitle::parse(cut(t, limits::CHAT_TITLE_MAX)).ok())
}

/// The chat an export's conversation becomes.
fn conversation_chat(c: ForeignConversation) -> ChatImport {
    let tree = rebuild_tree(c.id, c.root, c.nodes, c.current);
    ChatImport {
        id: c.id,
        title: title_of(c.title.as_deref()),
        system_prompt: tree
            .system_prompt
            .as_deref()
            .and_then(|p| SystemPrompt::parse(cut(p, limits::SYSTEM_PROMPT_MAX)).ok()),
        created_at: c.created_at,
        updated_at: c.updated_at,
        tree,
    }
}

/// One account of the original as Arbor will store it, or `None` (said in the report) when
/// the account itself cannot be kept.
fn legacy_account(legacy: LegacyAccount, report: &mut ImportReport) -> Option<AccountImport> {
    let LegacyAccount {
        user,
        chats,
        templates,
        presets,
    } = legacy;
    let (owner, username) = match (
        user.uuid.trim().parse::<UserId>(),
        Username::parse(user.name.clone()),
    ) {
        (Ok(id), Ok(username)) => (id, username),
        (Err(_), _) => {
            report.problem(format!(
                "user {:?}: its uuid is not a UUID; not imported",
                user.name
            ));
            return None;
        }
        (_, Err(e)) => {
            report.problem(format!(
                "user {:?}: not a valid Arbor username ({e}); not imported",
                user.name
            ));
            return None;
        }
    };
    let name = username.as_str().to_owned();
    let new_user = NewUser {
        id: owner,
        username,
        // The original's bcrypt hash: accepted at the next login, then replaced by argon2id.
        password_hash: user.password_hash,
        role: AccountRole::User,
        pending: false,
        created_at: user.created_at,
    };
    let chats = chats
        .into_iter()
        .filter_map(|chat| legacy_chat(chat, report))
        .collect();
    let unreadable = |what: &str, why: String, report: &mut ImportReport| {
        report.problem(format!("a {what} of {name:?}: {why}; not imported"));
    };
    let templates = templates
        .into_iter()
        .filter_map(|t| match t {
            Ok(t) => legacy_template(owner, t, report),
            Err(why) => {
                report.counts.templates_skipped += 1;
                unreadable("template", why, report);
                None
            }
        })
        .collect();
    let presets = presets
        .into_iter()
        .filter_map(|p| match p {
            Ok(p) => legacy_preset(owner, p, report),
            Err(why) => {
                report.counts.presets_skipped += 1;
                unreadable("preset", why, report);
                None
            }
        })
        .collect();
    Some(AccountImport {
        owner,
        user: Some(new_user),
        chats,
        templates,
        presets,
    })
}

/// A chat of the original: its tree from `serialized_structure`, its messages from the rows,
/// the current leaf at the newest message (as the original chose it).
fn legacy_chat(chat: LegacyChat, report: &mut ImportReport) -> Option<ChatImport> {
    let Ok(id) = chat.uuid.trim().parse::<ChatId>() else {
        report.counts.chats_skipped += 1;
        report.problem(format!(
            "chat {:?}: its uuid is not a UUID; not imported",
            chat.uuid
        ));
        return None;
    };
    let structure = match chat.structure {
        Ok(nodes) if !nodes.is_empty() => nodes,
        Ok(_) => {
            report.counts.chats_skipped += 1;
            report.problem(format!("chat {id}: its tree is empty; not imported"));
            return None;
        }
        Err(why) => {
            report.counts.chats_skipped += 1;
            report.problem(format!(
                "chat {id}: its tree cannot be read ({why}); not imported"
            ));
            return None;
        }
    };
    let mut rows: HashMap<MessageId, LegacyMessage> = HashMap::new();
    for row in chat.messages {
        match row.uuid.trim().parse::<MessageId>() {
            Ok(m) => {
                rows.insert(m, row);
            }
            Err(_) => report.problem(format!(
                "chat {id}: message {:?} has no UUID; left out",
                row.uuid
            )),
        }
    }
    let newest = rows
        .iter()
        .max_by_key(|(m, row)| (row.created_at, **m))
        .map(|(m, _)| *m);
    let mut structure = structure.into_iter();
    let Some(Ok(root_id)) = structure
        .next()
        .map(|root| root.uuid.trim().parse::<MessageId>())
    else {
        report.counts.chats_skipped += 1;
        report.problem(format!("chat {id}: its root is not a UUID; not imported"));
        return None;
    };
    let root_row = rows.remove(&root_id);
    let root = ForeignRoot {
        id: root_id,
        content: root_row.map(|r| r.content).unwrap_or_default(),
        created_at: chat.created_at,
    };
    let mut nodes = Vec::new();
    for node in structure {
        let (Ok(node_id), Some(Ok(parent))) = (
            node.uuid.trim().parse::<MessageId>(),
            node.parent
                .as_deref()
                .map(|p| p.trim().parse::<MessageId>()),
        ) else {
            report.problem(format!(
                "chat {id}: a tree node {:?} is not a UUID; left out",
                node.uuid
            ));
            continue;
        };
        let message = rows.remove(&node_id).and_then(|row| {
            let role = match row.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                _ => return None,
            };
            Some(ForeignMessage {
                role,
                content: row.content,
                created_at: row.created_at,
            })
        });
        nodes.push(ForeignNode {
            id: node_id,
            parent: Some(parent),
            message,
        });
    }
    // Rows the tree does not name (orphans): hanging from nothing, the rebuild reports them
    // as unreachable and leaves them out.
    nodes.extend(rows.into_keys().map(|m| ForeignNode {
        id: m,
        parent: None,
        message: None,
    }));
    let tree = rebuild_tree(id, root, nodes, newest);
    report.repairs(id, &tree.repairs);
    let system_prompt = match chat.system_prompt.as_deref().map(SystemPrompt::parse) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            report.problem(format!("chat {id}: system prompt left out ({e})"));
            None
        }
        None => None,
    };
    Some(ChatImport {
        id,
        title: title_of(chat.title.as_deref()),
        system_prompt,
        created_at: chat.created_at,
        updated_at: chat.updated_at,
        tree,
    })
}

fn legacy_template(
    owner: UserId,
    t: LegacyTemplate,
    report: &mut ImportReport,
) -> Option<PromptTemplate> {
    let checked = (|| {
        Ok::<_, String>(PromptTemplate {
            id: t
                .uuid
                .trim()
                .parse::<TemplateId>()
                .map_err(|_| "its uuid is not a UUID".to_owned())?,
            owner,
            name: TemplateName::parse(t.name.clone()).map_err(|e| e.to_string())?,
            description: non_blank(t.description, TemplateDescription::parse)?,
            content: TemplateContent::parse(TemplateContent::from_brace_format(&t.content))
                .map_err(|e| e.to_string())?,
            category: non_blank(t.category, Category::parse)?,
            is_public: t.is_public,
            is_favorite: t.is_favorite,
            usage_count: u64::try_from(t.usage_count).unwrap_or(0),
            created_at: t.created_at,
            updated_at: t.updated_at,
        })
    })();
    checked
        .map_err(|why| {
            report.counts.templates_skipped += 1;
            report.problem(format!("template {:?}: {why}; not imported", t.name));
        })
        .ok()
}

/// An optional text of the original, parsed by `parse` unless it is absent or blank.
fn non_blank<T, E: std::fmt::Display>(
    raw: Option<String>,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<Option<T>, String> {
    raw.filter(|text| !text.trim().is_empty())
        .map(parse)
        .transpose()
        .map_err(|e| e.to_string())
}

fn legacy_preset(owner: UserId, p: LegacyPreset, report: &mut ImportReport) -> Option<Preset> {
    let checked = (|| {
        Ok::<_, String>(Preset {
            id: p
                .uuid
                .trim()
                .parse::<PresetId>()
                .map_err(|_| "its uuid is not a UUID".to_owned())?,
            owner,
            name: PresetName::parse(p.name.clone()).map_err(|e| e.to_string())?,
            description: non_blank(p.description, PresetDescription::parse)?,
            model_id: non_blank(p.model_id, ModelId::parse)?,
            temperature: p
                .temperature
                .map(|t| {
                    t.trim()
                        .parse::<f64>()
                        .map_err(|_| format!("temperature {t:?} is not a number"))
                        .and_then(|v| domain::Temperature::new(v).map_err(|e| e.to_string()))
                })
                .transpose()?,
            max_tokens: p
                .max_tokens
                .map(|n| MaxTokens::new(n, None, limits::MAX_TOKENS_CEILING))
                .transpose()
                .map_err(|e| e.to_string())?,
            system_prompt: p
                .system_prompt
                .map(SystemPrompt::parse)
                .transpose()
                .map_err(|e| e.to_string())?,
            is_favorite: p.is_favorite,
            usage_count: u64::try_from(p.usage_count).unwrap_or(0),
            created_at: p.created_at,
            updated_at: p.updated_at,
        })
    })();
    checked
        .map_err(|why| {
            report.counts.presets_skipped += 1;
            report.problem(format!("preset {:?}: {why}; not imported", p.name));
        })
        .ok()
}

#[cfg(test)]
mod tests;
