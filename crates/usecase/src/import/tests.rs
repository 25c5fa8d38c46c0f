//! The import rules over fakes of the ports: what is checked, skipped and reported, and that
//! a broken export imports nothing.

use std::sync::Mutex;

use domain::{ForeignRoot, MessageId, Timestamp};

use super::*;
use crate::ports::Entity;

/// Records every account handed to it; answers with `refuse` when set.
#[derive(Default)]
struct Recorder {
    accounts: Mutex<Vec<AccountImport>>,
    refuse: Option<fn() -> RepoError>,
}

impl ImportRepository for Recorder {
    async fn import_account(
        &self,
        account: AccountImport,
        _dry_run: bool,
    ) -> Result<AccountImported, RepoError> {
        if let Some(refuse) = self.refuse {
            return Err(refuse());
        }
        let written = AccountImported {
            user_created: account.user.is_some(),
            counts: ImportCounts {
                chats: account.chats.len() as u64,
                messages: account
                    .chats
                    .iter()
                    .map(|c| c.tree.messages.len() as u64)
                    .sum(),
                templates: account.templates.len() as u64,
                presets: account.presets.len() as u64,
                ..ImportCounts::default()
            },
        };
        self.accounts.lock().unwrap().push(account);
        Ok(written)
    }
}

/// A source of the given accounts.
struct Accounts(Vec<LegacyAccount>);

impl LegacySource for Accounts {
    async fn user_rows(&self) -> Result<Vec<i64>, BoxError> {
        Ok((0..self.0.len() as i64).collect())
    }

    async fn account(&self, row: i64) -> Result<LegacyAccount, BoxError> {
        Ok(self.0[row as usize].clone())
    }
}

/// An export of the given conversations, then (maybe) an error.
struct Export(Vec<ForeignConversation>, bool);

impl ConversationSource for Export {
    fn conversations(
        &self,
        _path: &Path,
        _owner: UserId,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ForeignConversation, ExportError>>, ExportError>
    {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for c in &self.0 {
            tx.try_send(Ok(c.clone())).unwrap();
        }
        if self.1 {
            tx.try_send(Err(ExportError::Malformed("EOF while parsing".into())))
                .unwrap();
        }
        Ok(rx)
    }
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_700_000_000 + s)
}

fn uuid(n: u128) -> String {
    MessageId::from_u128(n).to_string()
}

fn account(name: &str) -> LegacyAccount {
    let node = |n: u128, parent: Option<u128>| LegacyNode {
        uuid: uuid(n),
        parent: parent.map(uuid),
    };
    let row = |n: u128, role: &str, content: &str| LegacyMessage {
        uuid: uuid(n),
        role: role.into(),
        content: content.into(),
        created_at: at(n as i64),
    };
    let template = |name: &str, content: &str| LegacyTemplate {
        uuid: uuid(200 + name.len() as u128),
        name: name.into(),
        description: None,
        content: content.into(),
        category: None,
        is_public: true,
        is_favorite: false,
        usage_count: 3,
        created_at: at(0),
        updated_at: at(0),
    };
    let preset = |n: u128, temperature: &str| LegacyPreset {
        uuid: uuid(n),
        name: "Preset".into(),
        description: None,
        model_id: Some(String::new()),
        temperature: Some(temperature.into()),
        max_tokens: Some(1000),
        system_prompt: None,
        is_favorite: false,
        usage_count: 0,
        created_at: at(0),
        updated_at: at(0),
    };
    LegacyAccount {
        user: LegacyUser {
            uuid: uuid(1),
            name: name.into(),
            password_hash: "$2b$12$abcdefghijklmnopqrstuu5QtrHmmsO0pjQ1pWbqbg8b0VKR7VYO.".into(),
            created_at: at(0),
        },
        chats: vec![LegacyChat {
            uuid: uuid(100),
            title: Some(format!("  {}  ", "t".repeat(300))),
            system_prompt: None,
            created_at: at(0),
            updated_at: at(9),
            structure: Ok(vec![node(10, None), node(11, Some(10)), node(12, Some(11))]),
            messages: vec![
                row(10, "system", ""),
                row(11, "user", "Hello"),
                row(12, "function", "a role Arbor does not have"),
            ],
        }],
        templates: vec![
            Ok(template("Good", "Use {x}")),
            Ok(template("", "No name")),
            Err("a row cannot be read: usage_count is not a number".into()),
        ],
        presets: vec![Ok(preset(300, "0.5")), Ok(preset(301, "hot"))],
    }
}

#[tokio::test]
async fn an_account_is_checked_item_by_item_and_every_refusal_is_reported() {
    let service = ImportService::new(Recorder::default(), Export(Vec::new(), false));
    let report = service
        .import_legacy(
            &Accounts(vec![account("alice"), account("no spaces allowed")]),
            false,
            &|_| {},
        )
        .await
        .unwrap();
    let stored = service.repo.accounts.lock().unwrap();
    assert_eq!(stored.len(), 1, "the second account never reaches storage");
    let alice = &stored[0];
    let user = alice.user.as_ref().unwrap();
    assert!(
        user.password_hash.starts_with("$2b$"),
        "the bcrypt hash as it was"
    );
    // The message of an unknown role is left out; the title is cut to Arbor's limit.
    let chat = &alice.chats[0];
    assert_eq!(chat.tree.messages.len(), 2);
    assert_eq!(chat.title.as_ref().unwrap().as_str().chars().count(), 200);
    assert_eq!(alice.templates.len(), 1);
    assert_eq!(alice.templates[0].content.as_str(), "Use {{x}}");
    assert_eq!(alice.presets.len(), 1);
    assert_eq!(alice.presets[0].model_id, None, "a blank model is no model");
    assert_eq!(
        (
            report.users,
            report.users_skipped,
            report.counts.templates_skipped,
            report.counts.presets_skipped
        ),
        (1, 1, 2, 1)
    );
    let said = report.problems.join("\n");
    for expected in [
        "has no message; its children moved up",
        "template \"\"",
        "temperature \"hot\" is not a number",
        "a template of \"alice\": a row cannot be read",
        "\"no spaces allowed\": not a valid Arbor username",
    ] {
        assert!(said.contains(expected), "{expected:?} in:\n{said}");
    }
}

#[tokio::test]
async fn a_name_taken_by_another_account_skips_that_user_and_goes_on() {
    let repo = Recorder {
        refuse: Some(|| RepoError::Conflict("username is taken")),
        ..Recorder::default()
    };
    let service = ImportService::new(repo, Export(Vec::new(), false));
    let report = service
        .import_legacy(&Accounts(vec![account("alice")]), false, &|_| {})
        .await
        .unwrap();
    assert_eq!((report.users, report.users_skipped), (0, 1));
    assert!(report.problems[report.problems.len() - 1].contains("belongs to another account"));
}

fn conversation(n: u128) -> ForeignConversation {
    ForeignConversation {
        id: ChatId::from_u128(n),
        title: Some(format!("Conversation {n}")),
        created_at: at(0),
        updated_at: at(1),
        root: ForeignRoot {
            id: MessageId::from_u128(n * 10),
            content: String::new(),
            created_at: at(0),
        },
        nodes: Vec::new(),
        current: None,
    }
}

#[tokio::test]
async fn a_broken_export_imports_nothing_and_a_whole_one_everything() {
    let broken = ImportService::new(
        Recorder::default(),
        Export(vec![conversation(1), conversation(2)], true),
    );
    let refused = broken
        .import_export(UserId::from_u128(7), Path::new("x"), false, &|_| {})
        .await;
    assert!(matches!(
        refused,
        Err(ImportError::Export(ExportError::Malformed(_)))
    ));
    assert!(
        broken.repo.accounts.lock().unwrap().is_empty(),
        "nothing stored"
    );

    let progress = Mutex::new(Vec::new());
    let whole = ImportService::new(
        Recorder::default(),
        Export(vec![conversation(1), conversation(2)], false),
    );
    let report = whole
        .import_export(UserId::from_u128(7), Path::new("x"), false, &|p| {
            progress.lock().unwrap().push((p.done, p.total));
        })
        .await
        .unwrap();
    assert_eq!(report.counts.chats, 2);
    assert_eq!(*progress.lock().unwrap(), vec![(1, 2), (2, 2)]);
    let all_owned = whole
        .repo
        .accounts
        .lock()
        .unwrap()
        .iter()
        .all(|a| a.user.is_none() && a.owner == UserId::from_u128(7));
    assert!(
        all_owned,
        "every chat is the caller's, and no account is made"
    );

    let gone = ImportService::new(
        Recorder {
            refuse: Some(|| RepoError::NotFound(Entity::User)),
            ..Recorder::default()
        },
        Export(vec![conversation(1)], false),
    );
    let missing = gone
        .import_export(UserId::from_u128(7), Path::new("x"), false, &|_| {})
        .await;
    assert!(matches!(missing, Err(ImportError::UnknownUser)));
}
