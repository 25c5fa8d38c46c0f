//! The read cache of chats: their messages and renderings, each at the latest version seen.

use super::*;

/// `base` followed by `added`.
pub(super) fn extended(base: &[Message], added: Vec<Message>) -> Vec<Message> {
    let mut messages = Vec::with_capacity(base.len() + added.len());
    messages.extend_from_slice(base);
    messages.extend(added);
    messages
}

/// The version `chat` shows. Every change of a chat's messages bumps its `updated_at` or
/// `message_count`, so a version never names stale data, on any replica.
pub(super) fn version(chat: &Chat) -> ChatVersion {
    (chat.updated_at.as_unix_micros(), chat.message_count)
}

/// Whether `messages` are the chat's at the version `chat` shows: a write may have landed
/// between reading the chat and its messages, and only a matching list may be cached.
pub(super) fn matches_version(chat: &Chat, messages: &[Message]) -> bool {
    messages.len() as u64 == chat.message_count
        && messages.iter().all(|m| m.created_at <= chat.updated_at)
}

/// Weighs an entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct MessagesWeighter;

/// A chat's messages at one version.
pub(super) type Versioned = (ChatVersion, Arc<Vec<Message>>);

impl quick_cache::Weighter<ChatId, Versioned> for MessagesWeighter {
    /// What the entry holds on the heap: the list's allocation and each message's text as
    /// allocated (a streamed answer's capacity may be twice its length), so that the
    /// configured budget is the memory really kept.
    fn weight(&self, _key: &ChatId, (_, messages): &Versioned) -> u64 {
        let list = messages.capacity() * std::mem::size_of::<Message>();
        let texts: usize = messages
            .iter()
            .map(|m| {
                m.content.capacity()
                    + m.generation.as_ref().map_or(0, |g| {
                        g.provider.capacity()
                            + g.model.as_str().len()
                            + g.finish_reason.as_ref().map_or(0, String::capacity)
                    })
            })
            .sum();
        ((list + texts) as u64).max(1)
    }
}

/// Counts what the cache evicts to stay within its budget.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CountEvictions;

impl quick_cache::Lifecycle<ChatId, Versioned> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, (): &mut (), _key: ChatId, _messages: Versioned) {
        metrics::counter!("arbor_cache_evictions_total", "cache" => "messages").increment(1);
    }
}

/// One entry per chat, holding the last version written or read: an older version is never
/// asked for again (a reader that still does misses and reads the database), and kept it
/// would fill the budget with a copy per turn of every busy chat.
pub(super) type Entries = quick_cache::sync::Cache<
    ChatId,
    Versioned,
    MessagesWeighter,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// A rendering of a chat, e.g. its current branch as an HTTP body: one entry per chat and
/// kind, holding the latest one made (as for the messages, an older one is never asked for
/// again).
pub(super) type RenderedKey = (ChatId, &'static str);

/// A rendering, the chat version and the current leaf it shows (moving the leaf changes no
/// message, so it is not part of the version).
pub(super) type Rendering = (ChatVersion, MessageId, Arc<Vec<u8>>);

/// Weighs a rendering by its bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct BytesWeighter;

impl quick_cache::Weighter<RenderedKey, Rendering> for BytesWeighter {
    fn weight(&self, _key: &RenderedKey, (_, _, bytes): &Rendering) -> u64 {
        (bytes.capacity() as u64 + 64).max(1)
    }
}

/// Hot reads of a chat's messages (and renderings of them, a quarter of the budget again),
/// bounded by total bytes, with hit and miss counters.
pub struct MessageCache {
    pub(super) entries: Entries,
    pub(super) rendered: quick_cache::sync::Cache<RenderedKey, Rendering, BytesWeighter>,
    pub(super) hits: std::sync::atomic::AtomicU64,
    pub(super) misses: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MessageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCache")
            .field("weight", &self.entries.weight())
            .finish_non_exhaustive()
    }
}

/// Cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory.
    pub hits: u64,
    /// Reads that went to the database.
    pub misses: u64,
    /// Bytes held now (by the weigher's estimate).
    pub weight: u64,
}

impl MessageCache {
    /// A cache holding at most about `max_bytes` of messages.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        // quick_cache sizes its tables from an estimated item count.
        let estimated_items =
            usize::try_from((max_bytes / 4_096).clamp(16, 1_000_000)).unwrap_or(16);
        Self {
            entries: quick_cache::sync::Cache::with(
                estimated_items,
                max_bytes.max(1),
                MessagesWeighter,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions,
            ),
            rendered: Self::renderings(max_bytes / 4),
            hits: std::sync::atomic::AtomicU64::new(0),
            misses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The cache of renderings: two shards, so that one rendering may take almost half of
    /// the budget (quick_cache refuses an item heavier than its shard; the branch of a
    /// 10,000-message chat is a few MB of JSON).
    pub(super) fn renderings(
        max_bytes: u64,
    ) -> quick_cache::sync::Cache<RenderedKey, Rendering, BytesWeighter> {
        let options = quick_cache::OptionsBuilder::new()
            .shards(2)
            .estimated_items_capacity(
                usize::try_from((max_bytes / 65_536).clamp(64, 65_536)).unwrap_or(64),
            )
            .weight_capacity(max_bytes.max(1))
            .build();
        match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                BytesWeighter,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with_weighter(64, max_bytes.max(1), BytesWeighter),
        }
    }

    /// Keeps `messages` as the chat's at `version` (a write that knows exactly what it
    /// changed extends the copy it started from, so the next read needs no query); returns
    /// them.
    pub(super) fn put(
        &self,
        chat: ChatId,
        version: ChatVersion,
        messages: Vec<Message>,
    ) -> Arc<Vec<Message>> {
        let messages = Arc::new(messages);
        self.insert(chat, version, Arc::clone(&messages));
        messages
    }

    /// The chat's messages if the cache holds them at `version`.
    pub(super) fn get(&self, chat: ChatId, version: ChatVersion) -> Option<Arc<Vec<Message>>> {
        self.entries
            .get(&chat)
            .and_then(|(at, messages)| (at == version).then_some(messages))
    }

    /// Keeps `messages` as the chat's at `version`, in place of any other version of it.
    pub(super) fn insert(&self, chat: ChatId, version: ChatVersion, messages: Arc<Vec<Message>>) {
        self.entries.insert(chat, (version, messages));
    }

    /// The `kind` rendering of `chat` if the cache holds it at `version` and `leaf`.
    pub(super) fn rendering(
        &self,
        (chat, kind): RenderedKey,
        version: ChatVersion,
        leaf: MessageId,
    ) -> Option<Arc<Vec<u8>>> {
        self.rendered
            .get(&(chat, kind))
            .and_then(|(at, shown, bytes)| (at == version && shown == leaf).then_some(bytes))
    }

    /// Keeps `bytes` as the `kind` rendering of `chat` at `version` and `leaf`, in place of
    /// any other.
    pub(super) fn keep_rendering(
        &self,
        key: RenderedKey,
        version: ChatVersion,
        leaf: MessageId,
        bytes: Arc<Vec<u8>>,
    ) {
        self.rendered.insert(key, (version, leaf, bytes));
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            weight: self.entries.weight() + self.rendered.weight(),
        }
    }
}
