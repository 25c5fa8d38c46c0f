//! ChatGPT exports: `conversations.json` (a JSON list of conversations, each a `mapping` of
//! nodes with `parent`/`children` and a `current_node`), alone or in the export's zip.
//!
//! The file is parsed as a stream, one conversation at a time, on a blocking thread; each
//! arrives through a small channel, so memory holds a conversation, not the export. A zip is
//! never trusted: its entry must say how large it is, stay under the limit while it is
//! inflated, and not be made of air (a zip bomb).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use domain::{ChatId, ForeignMessage, ForeignNode, ForeignRoot, MessageId, Role, UserId};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::sync::mpsc;
use usecase::import::{ConversationSource, ExportError, ForeignConversation};

use crate::from_seconds;

/// Conversations waiting in the channel.
const IN_FLIGHT: usize = 4;
/// The most nodes one conversation may have.
const NODES_MAX: usize = 100_000;
/// The most parts one message may have.
const PARTS_MAX: usize = 1_000;
/// The most bytes of JSON one conversation may take: a conversation is held in memory whole
/// while it is converted, so this bounds memory whatever the file's size.
const CONVERSATION_MAX_BYTES: u64 = 32 << 20;
/// The most entries a zip may list. The zip reader holds its whole directory in memory (about
/// 200 bytes an entry), so the count its end record declares is checked before it is opened.
const ZIP_ENTRIES_MAX: u64 = 100_000;
/// How much a zip entry may inflate relative to its compressed size (text compresses about
/// 5–10 times; a bomb, a thousand).
const ZIP_RATIO_MAX: u64 = 100;

/// Reads ChatGPT exports.
#[derive(Debug, Clone, Copy)]
pub struct ChatGptExports {
    max_expanded: u64,
}

impl ChatGptExports {
    /// A reader that refuses a `conversations.json` larger than `max_expanded` bytes (inside
    /// a zip: once inflated).
    #[must_use]
    pub const fn new(max_expanded: u64) -> Self {
        Self { max_expanded }
    }
}

/// What the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Zip,
}

fn io(e: std::io::Error) -> ExportError {
    ExportError::Io(Box::new(e))
}

/// Tells a zip from JSON by the first bytes (and anything else from both).
fn sniff(file: &mut File) -> Result<Kind, ExportError> {
    let mut head = [0u8; 512];
    let n = file.read(&mut head).map_err(io)?;
    file.rewind().map_err(io)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Kind::Zip);
    }
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Ok(Kind::Json),
        Some(b'{') => Err(ExportError::Malformed(
            "expected a list of conversations, found one object".into(),
        )),
        _ => Err(ExportError::NotAnExport),
    }
}

impl ConversationSource for ChatGptExports {
    fn conversations(
        &self,
        path: &Path,
        owner: UserId,
    ) -> Result<mpsc::Receiver<Result<ForeignConversation, ExportError>>, ExportError> {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let (path, max) = (path.to_owned(), self.max_expanded);
        // Everything that touches the file runs off the async runtime; what goes wrong, even
        // opening it, arrives through the channel.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_file(&path, owner, max, &tx) {
                // The receiver may be gone (the caller stopped): nothing to tell then.
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(rx)
    }
}

/// The export at `path`, whichever kind it is.
fn read_file(
    path: &Path,
    owner: UserId,
    max: u64,
    tx: &mpsc::Sender<Result<ForeignConversation, ExportError>>,
) -> Result<(), ExportError> {
    let mut file = File::open(path).map_err(io)?;
    match sniff(&mut file)? {
        Kind::Json if file.metadata().map_err(io)?.len() > max => Err(ExportError::TooLarge(
            format!("conversations.json is larger than {max} bytes"),
        )),
        Kind::Json => read_list(file, owner, (max, false), tx),
        Kind::Zip => read_zip(file, owner, max, tx),
    }
}

/// `conversations.json` out of the export's zip, inflated within `max` bytes.
fn read_zip(
    file: File,
    owner: UserId,
    max: u64,
    tx: &mpsc::Sender<Result<ForeignConversation, ExportError>>,
) -> Result<(), ExportError> {
    let malformed = |e: zip::result::ZipError| ExportError::Malformed(format!("a broken zip: {e}"));
    let mut file = BufReader::new(file);
    match declared_entries(&mut file).map_err(io)? {
        None => {
            return Err(ExportError::Malformed(
                "a broken zip: its zip64 end record is not where it says".into(),
            ));
        }
        Some(entries) if entries > ZIP_ENTRIES_MAX => {
            return Err(ExportError::TooLarge(format!(
                "the zip lists more than {ZIP_ENTRIES_MAX} files"
            )));
        }
        Some(_) => {}
    }
    let mut archive = zip::ZipArchive::new(file).map_err(malformed)?;
    let index = (0..archive.len())
        .find(|i| {
            archive.name_for_index(*i).is_some_and(|name| {
                name.is_ok_and(|n| n == "conversations.json" || n.ends_with("/conversations.json"))
            })
        })
        .ok_or_else(|| ExportError::Malformed("the zip holds no conversations.json".into()))?;
    let entry = archive.by_index(index).map_err(malformed)?;
    let (size, packed) = (entry.size(), entry.compressed_size());
    if size > max {
        return Err(ExportError::TooLarge(format!(
            "conversations.json inflates to {size} bytes, more than {max}"
        )));
    }
    if size > 1 << 20 && size / packed.max(1) > ZIP_RATIO_MAX {
        return Err(ExportError::TooLarge(format!(
            "conversations.json inflates {}-fold: a zip bomb, not an export",
            size / packed.max(1)
        )));
    }
    // The sizes in a zip are claims: inflating stops at the limit whatever they say.
    read_list(entry, owner, (max, true), tx)
}

/// How many entries a zip may hold as its reader will see it: the largest count declared by
/// any end record in the last 64 KiB (the reader falls back to an earlier one when a later one
/// is broken), a zip64 record's count standing for its end record's. `None` when a zip64
/// locator is not preceded by the plain zip64 record it points to (56 bytes, no extensible
/// data): the reader would then go looking for another one. Only the last 64 KiB and at
/// most one more record are read; no offset the file states is sought.
fn declared_entries(file: &mut (impl Read + Seek)) -> std::io::Result<Option<u64>> {
    use std::io::SeekFrom;
    const END: &[u8; 4] = b"PK\x05\x06";
    const LOCATOR: &[u8; 4] = b"PK\x06\x07";
    const END64: &[u8; 4] = b"PK\x06\x06";
    const END64_LEN: u64 = 56;
    let u16_at = |bytes: &[u8], at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |bytes: &[u8], at: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| bytes[at + i]));
    let u64_at = |bytes: &[u8], at: usize| {
        u64::from(u32_at(bytes, at)) | (u64::from(u32_at(bytes, at + 4)) << 32)
    };
    let length = file.seek(SeekFrom::End(0))?;
    let tail_len = length.min(20 + 22 + u64::from(u16::MAX));
    let tail_start = length - tail_len;
    let mut tail = vec![0; usize::try_from(tail_len).unwrap_or(0)];
    file.seek(SeekFrom::Start(tail_start))?;
    file.read_exact(&mut tail)?;
    let mut most = Some(0);
    for end in (0..tail.len().saturating_sub(21)).filter(|&at| &tail[at..at + 4] == END) {
        let classic = u16_at(&tail, end + 10);
        let zip64 = classic == u16::MAX
            || u32_at(&tail, end + 12) == u32::MAX
            || u32_at(&tail, end + 16) == u32::MAX;
        // Without a zip64 locator just before it, the reader takes the classic count.
        let locator = end
            .checked_sub(20)
            .filter(|&at| &tail[at..at + 4] == LOCATOR);
        let declared = match locator.filter(|_| zip64) {
            None => Some(u64::from(classic)),
            Some(at) => {
                let record_at = (tail_start + at as u64).checked_sub(END64_LEN);
                let mut record = [0; END64_LEN as usize];
                match record_at.filter(|&r| u64_at(&tail, at + 8) == r) {
                    None => None,
                    Some(r) => {
                        file.seek(SeekFrom::Start(r))?;
                        file.read_exact(&mut record)?;
                        // The plain record (its size field says 44), whose total count is a
                        // u64 at byte 32.
                        (&record[..4] == END64 && u64_at(&record, 4) == END64_LEN - 12)
                            .then(|| u64_at(&record, 32))
                    }
                }
            }
        };
        most = most.zip(declared).map(|(a, b)| a.max(b));
    }
    file.rewind()?;
    Ok(most)
}

/// Which bound a [`Metered`] reader hit.
const WITHIN: u8 = 0;
const FILE_OVER: u8 = 1;
const CONVERSATION_OVER: u8 = 2;
/// Nobody reads any more (the request is gone): stop.
const ABANDONED: u8 = 3;

/// A reader that fails past `limit` bytes in all, or past [`CONVERSATION_MAX_BYTES`] since
/// the last conversation ended (`mark`), saying which in `over`.
struct Metered<R> {
    inner: R,
    tx: mpsc::Sender<Result<ForeignConversation, ExportError>>,
    limit: u64,
    mark: Arc<AtomicU64>,
    at: Arc<AtomicU64>,
    over: Arc<AtomicU8>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.tx.is_closed() {
            self.over.store(ABANDONED, Ordering::SeqCst);
            return Err(std::io::Error::other("the import was abandoned"));
        }
        let n = self.inner.read(buf)?;
        let read = self.at.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let bound = if read > self.limit {
            FILE_OVER
        } else if read - self.mark.load(Ordering::SeqCst).min(read) > CONVERSATION_MAX_BYTES {
            CONVERSATION_OVER
        } else {
            return Ok(n);
        };
        self.over.store(bound, Ordering::SeqCst);
        Err(std::io::Error::other("the export is larger than allowed"))
    }
}

/// Streams the list of conversations from `reader` into `tx`, at most `max` bytes in all and
/// [`CONVERSATION_MAX_BYTES`] per conversation; `zipped` when `reader` inflates a zip entry
/// (whose read errors are a damaged archive, not the machine's).
fn read_list(
    reader: impl Read,
    owner: UserId,
    (max, zipped): (u64, bool),
    tx: &mpsc::Sender<Result<ForeignConversation, ExportError>>,
) -> Result<(), ExportError> {
    let (mark, at, over) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU8::new(WITHIN)),
    );
    let metered = Metered {
        inner: reader,
        tx: tx.clone(),
        limit: max,
        mark: Arc::clone(&mark),
        at: Arc::clone(&at),
        over: Arc::clone(&over),
    };
    let mut buffered = BufReader::new(metered);
    // A byte-order mark, as some editors write, is not JSON: skipped.
    if buffered
        .fill_buf()
        .is_ok_and(|head| head.starts_with(b"\xef\xbb\xbf"))
    {
        buffered.consume(3);
    }
    let mut parser = serde_json::Deserializer::from_reader(buffered);
    let mut sent = 0usize;
    let mut each = |raw: RawConversation| -> Result<bool, String> {
        sent += 1;
        // The next conversation's bytes count from here.
        mark.store(at.load(Ordering::SeqCst), Ordering::SeqCst);
        let conversation = convert(raw, owner).map_err(|e| format!("conversation {sent}: {e}"))?;
        // `false`: the receiver is gone; stop reading.
        Ok(tx.blocking_send(Ok(conversation)).is_ok())
    };
    let malformed = |e: serde_json::Error| match over.load(Ordering::SeqCst) {
        FILE_OVER => {
            ExportError::TooLarge(format!("conversations.json is larger than {max} bytes"))
        }
        CONVERSATION_OVER => ExportError::TooLarge(format!(
            "a conversation is larger than {CONVERSATION_MAX_BYTES} bytes"
        )),
        ABANDONED => ExportError::Io("the import was abandoned".into()),
        _ if e.is_io() && zipped => ExportError::Malformed(format!("a damaged zip: {e}")),
        _ if e.is_io() => ExportError::Io(Box::new(e)),
        _ => ExportError::Malformed(brief(&e)),
    };
    let finished = Conversations { each: &mut each }
        .deserialize(&mut parser)
        .map_err(malformed)?;
    if finished {
        parser.end().map_err(malformed)?;
    }
    Ok(())
}

/// What is wrong with the JSON, short: serde quotes offending values whole, and an error
/// must not carry megabytes of someone's text back.
fn brief(e: &serde_json::Error) -> String {
    const MAX_CHARS: usize = 200;
    let full = e.to_string();
    match full.char_indices().nth(MAX_CHARS) {
        None => full,
        Some((cut, _)) => format!(
            "{}… at line {} column {}",
            &full[..cut],
            e.line(),
            e.column()
        ),
    }
}

/// The top-level list, one conversation at a time.
struct Conversations<'a> {
    each: &'a mut dyn FnMut(RawConversation) -> Result<bool, String>,
}

impl<'de> DeserializeSeed<'de> for Conversations<'_> {
    /// Whether the whole list was read (not stopped early).
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Conversations<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of conversations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(raw) = seq.next_element::<RawConversation>()? {
            if !(self.each)(raw).map_err(serde::de::Error::custom)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[derive(Deserialize)]
struct RawConversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    create_time: Option<f64>,
    #[serde(default)]
    update_time: Option<f64>,
    #[serde(deserialize_with = "bounded_mapping")]
    mapping: BTreeMap<String, RawNode>,
    #[serde(default)]
    current_node: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    message: Option<RawMessage>,
    #[serde(default)]
    parent: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    author: RawAuthor,
    #[serde(default)]
    create_time: Option<f64>,
    #[serde(default)]
    content: Option<RawContent>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    recipient: Option<String>,
}

#[derive(Deserialize)]
struct RawAuthor {
    role: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawContent {
    content_type: String,
    #[serde(default, deserialize_with = "bounded_parts")]
    parts: Vec<Part>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    language: Option<String>,
}

/// One part of a message: text, or what a non-text part was (its other fields are skipped
/// unread, so a part costs what its text does).
enum Part {
    Text(String),
    Object {
        content_type: Option<String>,
        text: Option<String>,
    },
    Other,
}

#[derive(Deserialize)]
struct PartObject {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PartVisitor;
        impl<'de> Visitor<'de> for PartVisitor {
            type Value = Part;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a message part")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Part, E> {
                Ok(Part::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Part, E> {
                Ok(Part::Text(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Part, A::Error> {
                let o = PartObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Part::Object {
                    content_type: o.content_type,
                    text: o.text,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Part, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Part, E> {
                Ok(Part::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Part, E> {
                Ok(Part::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Part, E> {
                Ok(Part::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Part, E> {
                Ok(Part::Other)
            }
            fn visit_unit<E>(self) -> Result<Part, E> {
                Ok(Part::Other)
            }
        }
        d.deserialize_any(PartVisitor)
    }
}

/// A message's parts, refused past [`PARTS_MAX`] (so a list of tiny values cannot grow
/// memory far beyond the bytes it took).
fn bounded_parts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Part>, D::Error> {
    struct Parts;
    impl<'de> Visitor<'de> for Parts {
        type Value = Vec<Part>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of message parts")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Part>, A::Error> {
            let mut parts = Vec::new();
            while let Some(part) = seq.next_element::<Part>()? {
                if parts.len() == PARTS_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "a message has more than {PARTS_MAX} parts"
                    )));
                }
                parts.push(part);
            }
            Ok(parts)
        }
    }
    d.deserialize_seq(Parts)
}

/// A conversation's nodes, refused past [`NODES_MAX`] while they are read (not after).
fn bounded_mapping<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, RawNode>, D::Error> {
    struct Nodes;
    impl<'de> Visitor<'de> for Nodes {
        type Value = BTreeMap<String, RawNode>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a mapping of message nodes")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut nodes = BTreeMap::new();
            while let Some((key, node)) = map.next_entry::<String, RawNode>()? {
                if nodes.len() == NODES_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "a conversation has more than {NODES_MAX} messages"
                    )));
                }
                nodes.insert(key, node);
            }
            Ok(nodes)
        }
    }
    d.deserialize_map(Nodes)
}

#[derive(Deserialize, Default)]
struct RawMetadata {
    #[serde(default)]
    is_visually_hidden_from_conversation: bool,
}

/// An id derived from the owner and a name: the same export imported again by the same
/// user names the same chats; by another user, other ones.
fn derived(owner: UserId, name: &str) -> u128 {
    let namespace = uuid::Uuid::from_u128(owner.as_u128());
    uuid::Uuid::new_v5(&namespace, name.as_bytes()).as_u128()
}

/// What a message says, as text: non-text parts become a placeholder naming what was there.
fn text_of(content: Option<RawContent>) -> String {
    let Some(content) = content else {
        return String::new();
    };
    let placeholder = |what: &str| format!("[{what} not imported]");
    match content.content_type.as_str() {
        "text" | "multimodal_text" => content
            .parts
            .iter()
            .map(|part| match part {
                Part::Text(s) => s.clone(),
                Part::Object { content_type, text } => match content_type.as_deref() {
                    Some("audio_transcription") => text.clone().unwrap_or_default(),
                    Some("image_asset_pointer") => placeholder("image"),
                    Some("audio_asset_pointer" | "real_time_user_audio_video_asset_pointer") => {
                        placeholder("audio")
                    }
                    Some(other) => placeholder(other),
                    None => placeholder("attachment"),
                },
                Part::Other => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        "code" => {
            let language = content
                .language
                .filter(|l| l != "unknown")
                .unwrap_or_default();
            format!("```{language}\n{}\n```", content.text.unwrap_or_default())
        }
        "execution_output" => format!("```\n{}\n```", content.text.unwrap_or_default()),
        other => placeholder(other),
    }
}

/// A node's message as Arbor keeps it: hidden ones (the export's empty system message, the
/// user's custom instructions) become blank system messages, which the tree leaves out.
fn message_of(m: RawMessage, fallback_time: domain::Timestamp) -> ForeignMessage {
    let created_at = m.create_time.map_or(fallback_time, from_seconds);
    let hidden = m
        .metadata
        .unwrap_or_default()
        .is_visually_hidden_from_conversation
        || m.content
            .as_ref()
            .is_some_and(|c| c.content_type == "user_editable_context");
    if hidden {
        return ForeignMessage {
            role: Role::System,
            content: String::new(),
            created_at,
        };
    }
    let text = text_of(m.content);
    let (role, content) = match (m.author.role.as_str(), m.recipient.as_deref()) {
        ("user", _) => (Role::User, text),
        ("system", _) => (Role::System, text),
        ("tool", _) => {
            let tool = m.author.name.unwrap_or_else(|| "a tool".into());
            (Role::Assistant, format!("[output of {tool}]\n{text}"))
        }
        (_, Some(to)) if to != "all" => (Role::Assistant, format!("[call to {to}]\n{text}")),
        _ => (Role::Assistant, text),
    };
    ForeignMessage {
        role,
        content,
        created_at,
    }
}

/// One conversation in Arbor's terms.
fn convert(raw: RawConversation, owner: UserId) -> Result<ForeignConversation, String> {
    let key = raw
        .conversation_id
        .or(raw.id)
        .filter(|k| !k.is_empty())
        .ok_or("it has no id")?;
    let created_at = raw
        .create_time
        .map_or(domain::Timestamp::from_unix_micros(0), from_seconds);
    let updated_at = raw.update_time.map_or(created_at, from_seconds);
    // Length-prefixed, so no conversation id and node id can name another pair's message.
    let id_of = |node: &str| {
        MessageId::from_u128(derived(
            owner,
            &format!("chatgpt-message:{}:{key}:{node}", key.len()),
        ))
    };
    // The root: a node without a (known) parent — the one above the current node when
    // there are several.
    let mut roots: Vec<&String> = raw
        .mapping
        .iter()
        .filter(|(_, n)| {
            n.parent
                .as_ref()
                .is_none_or(|p| !raw.mapping.contains_key(p))
        })
        .map(|(k, _)| k)
        .collect();
    roots.sort();
    let above_current = raw.current_node.as_ref().and_then(|current| {
        let mut at = current;
        for _ in 0..=raw.mapping.len() {
            match raw.mapping.get(at).and_then(|n| n.parent.as_ref()) {
                Some(parent) if raw.mapping.contains_key(parent) => at = parent,
                _ => return Some(at.clone()),
            }
        }
        None
    });
    let root_key = above_current
        .filter(|r| roots.contains(&r))
        .or_else(|| roots.first().map(|r| (*r).clone()))
        .ok_or("it has no root message")?;
    let current = raw.current_node.as_deref().map(id_of);
    let mut root = ForeignRoot {
        id: id_of(&root_key),
        content: String::new(),
        created_at,
    };
    let mut nodes = Vec::with_capacity(raw.mapping.len());
    for (node_key, node) in raw.mapping {
        let parent = node
            .parent
            .as_deref()
            .filter(|_| node_key != root_key)
            .map(id_of);
        let message = node.message.map(|m| message_of(m, created_at));
        if node_key == root_key {
            match message {
                // A root that says something hangs below an empty root of Arbor's.
                Some(m) if !m.content.is_empty() && m.role != Role::System => {
                    let under = id_of(&root_key);
                    root.id = MessageId::from_u128(derived(owner, &format!("chatgpt-root:{key}")));
                    nodes.push(ForeignNode {
                        id: under,
                        parent: Some(root.id),
                        message: Some(m),
                    });
                }
                Some(m) => root.content = m.content,
                None => {}
            }
            continue;
        }
        nodes.push(ForeignNode {
            id: id_of(&node_key),
            // A node below another root hangs from a node that is not there (and is reported).
            parent,
            message: Some(message.unwrap_or(ForeignMessage {
                role: Role::System,
                content: String::new(),
                created_at,
            })),
        });
    }
    Ok(ForeignConversation {
        id: ChatId::from_u128(derived(owner, &format!("chatgpt-chat:{key}"))),
        title: raw.title,
        created_at,
        updated_at,
        root,
        nodes,
        current,
    })
}
