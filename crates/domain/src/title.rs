//! Automatic chat titles: the prompt that asks a model for one, the clean-up of its answer,
//! and the fallback when it gives none. Pure text rules; calling the model is the use case's
//! job.

use crate::chat::ChatTitle;
use crate::message::Role;

/// The longest generated title, in characters.
pub const TITLE_MAX_CHARS: usize = 100;
/// A cleaned answer shorter than this is no title.
pub const TITLE_MIN_CHARS: usize = 3;
/// The conversation preview in the prompt stops before this many characters.
pub const PREVIEW_MAX_CHARS: usize = 500;
/// How many leading messages decide the language.
const LANGUAGE_SAMPLE: usize = 3;
/// Japanese is chosen above this share of Japanese characters.
const JAPANESE_SHARE: f64 = 0.3;

/// Prefixes a model tends to put before the title.
const PREFIXES: [&str; 9] = [
    "タイトル:",
    "Title:",
    "title:",
    "題名:",
    "件名:",
    "Subject:",
    "subject:",
    "Topic:",
    "topic:",
];

/// The language a title is asked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TitleLanguage {
    /// More than 30 % of the sampled characters are kana or kanji.
    Japanese,
    /// Everything else.
    English,
}

const fn is_japanese(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{309F}' | '\u{30A0}'..='\u{30FF}' | '\u{4E00}'..='\u{9FAF}')
}

/// Japanese when more than 30 % of the non-whitespace characters of the first three messages
/// are hiragana, katakana or CJK ideographs.
#[must_use]
pub fn title_language(messages: &[(Role, &str)]) -> TitleLanguage {
    let (mut total, mut japanese) = (0_u32, 0_u32);
    for c in messages
        .iter()
        .take(LANGUAGE_SAMPLE)
        .flat_map(|(_, text)| text.chars())
        .filter(|c| !c.is_whitespace())
    {
        total += 1;
        japanese += u32::from(is_japanese(c));
    }
    if total > 0 && f64::from(japanese) / f64::from(total) > JAPANESE_SHARE {
        TitleLanguage::Japanese
    } else {
        TitleLanguage::English
    }
}

/// `text` cut to `max` characters, the last three replaced by `...` when it was longer.
fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// One line per message (`User: …` or `Assistant: …`; any role but `user` reads as the
/// assistant), stopping before the preview would pass [`PREVIEW_MAX_CHARS`]; a first line
/// alone longer than that is cut.
fn preview(messages: &[(Role, &str)]) -> String {
    let mut out = String::new();
    let mut used = 0;
    for (role, text) in messages.iter().filter(|(_, t)| !t.trim().is_empty()) {
        let label = if *role == Role::User {
            "User"
        } else {
            "Assistant"
        };
        let line = format!("{label}: {}", text.trim());
        let len = line.chars().count() + usize::from(used > 0);
        if used + len > PREVIEW_MAX_CHARS {
            if used == 0 {
                out = ellipsize(&line, PREVIEW_MAX_CHARS);
            }
            break;
        }
        if used > 0 {
            out.push('\n');
        }
        out.push_str(&line);
        used += len;
    }
    out
}

/// The single user message that asks a model for a title of this conversation.
#[must_use]
pub fn title_prompt(messages: &[(Role, &str)]) -> String {
    let conversation = preview(messages);
    match title_language(messages) {
        TitleLanguage::Japanese => format!(
            "次の会話に短いタイトルを付けてください。\n\n{conversation}\n\n条件:\n\
             - {TITLE_MAX_CHARS}文字以内\n- 会話と同じ言語で書く\n\
             - 「タイトル:」などの前置きを付けない\n- タイトルだけを出力する\n\nタイトル:"
        ),
        TitleLanguage::English => format!(
            "Give the following conversation a short title.\n\n{conversation}\n\nRules:\n\
             - at most {TITLE_MAX_CHARS} characters\n- in the language of the conversation\n\
             - no \"Title:\" prefix\n- output the title only\n\nTitle:"
        ),
    }
}

/// A model's answer made into a title: trimmed, a leading `Title:`-like prefix and matching
/// surrounding quotes removed, cut to [`TITLE_MAX_CHARS`] (ending in `...`). `None` when
/// fewer than [`TITLE_MIN_CHARS`] characters remain.
#[must_use]
pub fn clean_title(raw: &str) -> Option<ChatTitle> {
    let mut text = raw.trim();
    if let Some(rest) = PREFIXES.iter().find_map(|p| text.strip_prefix(p)) {
        text = rest.trim();
    }
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            text = text[1..text.len() - 1].trim();
        }
    }
    // A title is one line.
    let text = text.lines().next().unwrap_or_default().trim();
    if text.chars().count() < TITLE_MIN_CHARS {
        return None;
    }
    ChatTitle::parse(ellipsize(text, TITLE_MAX_CHARS)).ok()
}

/// The title used when the model gives none: the first non-blank user message, trimmed and
/// cut to [`TITLE_MAX_CHARS`]. `None` without a user message.
#[must_use]
pub fn fallback_title(messages: &[(Role, &str)]) -> Option<ChatTitle> {
    messages
        .iter()
        .filter(|(role, text)| *role == Role::User && !text.trim().is_empty())
        .find_map(|(_, text)| {
            let first_line = text.trim().lines().next().unwrap_or_default().trim();
            ChatTitle::parse(ellipsize(first_line, TITLE_MAX_CHARS)).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title(t: Option<ChatTitle>) -> Option<String> {
        t.map(ChatTitle::into_inner)
    }

    #[test]
    fn the_language_follows_the_share_of_japanese_characters() {
        assert_eq!(
            title_language(&[(Role::User, "東京の天気を教えて")]),
            TitleLanguage::Japanese
        );
        assert_eq!(
            title_language(&[(Role::User, "What is the weather in Tokyo?")]),
            TitleLanguage::English
        );
        // 3 of 13 non-space characters (23 %) stay English; 5 of 13 (38 %) become Japanese.
        assert_eq!(
            title_language(&[(Role::User, "abcde fghij 東京都")]),
            TitleLanguage::English
        );
        assert_eq!(
            title_language(&[(Role::User, "abcd efgh 東京都です")]),
            TitleLanguage::Japanese
        );
        // Only the first three messages count.
        let messages = [
            (Role::System, ""),
            (Role::User, "hello there"),
            (Role::Assistant, "hi"),
            (Role::User, "日本語日本語日本語日本語日本語日本語"),
        ];
        assert_eq!(title_language(&messages), TitleLanguage::English);
        assert_eq!(title_language(&[]), TitleLanguage::English);
    }

    #[test]
    fn the_prompt_is_in_the_conversation_language_and_previews_it() {
        let en = title_prompt(&[(Role::User, "Plan a trip"), (Role::Assistant, "Sure!")]);
        assert!(en.contains("User: Plan a trip\nAssistant: Sure!"), "{en}");
        assert!(en.ends_with("Title:"));
        let ja = title_prompt(&[
            (Role::User, "旅行の計画を立てて"),
            (Role::Assistant, "はい"),
        ]);
        assert!(ja.contains("User: 旅行の計画を立てて"), "{ja}");
        assert!(ja.ends_with("タイトル:"));
    }

    #[test]
    fn the_preview_is_bounded() {
        let long = "x".repeat(2_000);
        let p = preview(&[(Role::User, &long), (Role::Assistant, "ok")]);
        assert_eq!(p.chars().count(), PREVIEW_MAX_CHARS);
        assert!(p.ends_with("..."));
        let line = "y".repeat(300);
        let p = preview(&[(Role::User, &line), (Role::Assistant, &line)]);
        assert_eq!(
            p,
            format!("User: {line}"),
            "the second line would pass the cap"
        );
    }

    #[test]
    fn answers_are_cleaned_into_titles() {
        assert_eq!(
            title(clean_title("Title: \"Greeting chat\"")),
            Some("Greeting chat".into())
        );
        assert_eq!(
            title(clean_title("  タイトル: 東京旅行の計画  ")),
            Some("東京旅行の計画".into())
        );
        assert_eq!(title(clean_title("'Quoted'")), Some("Quoted".into()));
        assert_eq!(
            title(clean_title("Topic: Rust lifetimes\nMore text")),
            Some("Rust lifetimes".into())
        );
        assert_eq!(title(clean_title("Title: ok")), None, "too short");
        assert_eq!(title(clean_title("   ")), None);
        let long = title(clean_title(&"z".repeat(150))).unwrap();
        assert_eq!(long.chars().count(), TITLE_MAX_CHARS);
        assert!(long.ends_with("..."));
        let kanji = title(clean_title(&"漢".repeat(150))).unwrap();
        assert_eq!(kanji.chars().count(), TITLE_MAX_CHARS);
    }

    #[test]
    fn the_fallback_is_the_first_user_message() {
        let messages = [
            (Role::System, "You are helpful"),
            (Role::User, "   "),
            (Role::User, "  Hello world how are you  "),
            (Role::User, "later"),
        ];
        assert_eq!(
            title(fallback_title(&messages)),
            Some("Hello world how are you".into())
        );
        let long = "w".repeat(120);
        let cut = title(fallback_title(&[(Role::User, &long)])).unwrap();
        assert_eq!(cut.chars().count(), TITLE_MAX_CHARS);
        assert_eq!(title(fallback_title(&[(Role::System, "only")])), None);
    }
}
