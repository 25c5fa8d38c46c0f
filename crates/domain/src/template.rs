//! Prompt templates with `{{variable}}` placeholders.
//!
//! Syntax: `{{name}}` (white space inside the braces is ignored) is replaced by the value of
//! `name`, which is 1–64 characters of `[A-Za-z0-9_]` not starting with a digit. `\{{` stands
//! for a literal `{{`. A lone `{` or `}` is literal text. An unclosed `{{` is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::id::{TemplateId, UserId};
use crate::time::Timestamp;
use crate::validation::{InvalidInput, Problem, bounded_text, limits};

bounded_text!(
    /// A template name: 1–100 characters.
    TemplateName,
    "name",
    1,
    limits::TEMPLATE_NAME_MAX
);
bounded_text!(
    /// A template description: at most 500 characters.
    TemplateDescription,
    "description",
    0,
    limits::TEMPLATE_DESCRIPTION_MAX
);
bounded_text!(
    /// A template category: 1–50 characters.
    Category,
    "category",
    1,
    limits::CATEGORY_MAX
);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Variable(String),
}

/// Template content, parsed: 1–20,000 characters with well-formed placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateContent {
    raw: String,
    segments: Vec<Segment>,
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= limits::TEMPLATE_VARIABLE_NAME_MAX
}

impl TemplateContent {
    /// Rewrites text in Python's `str.format` syntax — the original service's templates:
    /// `{name}` placeholders, `{{` and `}}` for literal braces — into this syntax, for
    /// [`TemplateContent::parse`]. A `{` that starts no placeholder stays literal.
    #[must_use]
    pub fn from_brace_format(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 8);
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                out.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                out.push('}');
                rest = after;
            } else if let Some((name, after)) = rest
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .filter(|(name, _)| is_variable_name(name))
            {
                out.push_str("{{");
                out.push_str(name);
                out.push_str("}}");
                rest = after;
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// Parses template content.
    ///
    /// # Errors
    /// [`InvalidInput`] on `content` when blank, too long, with an unclosed `{{`, with an
    /// invalid variable name, or with more than 50 distinct variables.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        crate::validation::check_text("content", &raw, 1, limits::TEMPLATE_CONTENT_MAX)?;
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut rest = raw.as_str();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("\\{{") {
                text.push_str("{{");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{{") {
                let end = after.find("}}").ok_or(InvalidInput::new(
                    "content",
                    Problem::Malformed("a {{ placeholder is not closed with }}"),
                ))?;
                let name = after[..end].trim();
                if !is_variable_name(name) {
                    return Err(InvalidInput::new(
                        "content",
                        Problem::Malformed(
                            "a placeholder name must be letters, digits or _ and not start with a digit",
                        ),
                    ));
                }
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Variable(name.to_owned()));
                rest = &after[end + 2..];
            } else {
                let mut chars = rest.chars();
                if let Some(c) = chars.next() {
                    text.push(c);
                }
                rest = chars.as_str();
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        let content = Self { raw, segments };
        if content.variables().len() > limits::TEMPLATE_VARIABLES_MAX {
            return Err(InvalidInput::new(
                "content",
                Problem::Malformed("a template may use at most 50 distinct variables"),
            ));
        }
        Ok(content)
    }

    /// The content as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The distinct variable names, in order of first use.
    #[must_use]
    pub fn variables(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Variable(name) if seen.insert(name.as_str()) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Checks a declared variable list against the content: it must name exactly the
    /// variables the content uses (in any order). `None` derives the list from the content.
    ///
    /// # Errors
    /// [`InvalidInput`] on `variables` when the sets differ.
    pub fn declared_variables(
        &self,
        given: Option<Vec<String>>,
    ) -> Result<Vec<String>, InvalidInput> {
        let used = self.variables();
        let Some(given) = given else {
            return Ok(used);
        };
        let used_set: BTreeSet<&str> = used.iter().map(String::as_str).collect();
        let given_set: BTreeSet<&str> = given.iter().map(String::as_str).collect();
        if used_set != given_set || given_set.len() != given.len() {
            return Err(InvalidInput::new(
                "variables",
                Problem::Malformed("variables must list exactly the placeholders the content uses"),
            ));
        }
        Ok(used)
    }

    /// Substitutes every placeholder.
    ///
    /// # Errors
    /// [`RenderError::Variables`] listing every missing variable and every value given for a
    /// name the template does not use; [`RenderError::TooLong`] when the text would be longer
    /// than [`limits::RENDERED_TEMPLATE_MAX`] characters (a placeholder may stand many times).
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, RenderError> {
        let used = self.variables();
        let missing: Vec<String> = used
            .iter()
            .filter(|v| !values.contains_key(v.as_str()))
            .cloned()
            .collect();
        let unknown: Vec<String> = values
            .keys()
            .filter(|k| !used.iter().any(|u| u == *k))
            .cloned()
            .collect();
        if !missing.is_empty() || !unknown.is_empty() {
            return Err(RenderError::Variables { missing, unknown });
        }
        let pieces = || {
            self.segments.iter().map(|segment| match segment {
                Segment::Text(t) => t.as_str(),
                Segment::Variable(name) => values.get(name).map_or("", String::as_str),
            })
        };
        // Counted before anything is copied (each value once, however often it stands): the
        // text is built only once it is known to fit.
        let lengths: BTreeMap<&str, usize> = values
            .iter()
            .map(|(name, value)| (name.as_str(), value.chars().count()))
            .collect();
        let chars: usize = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Text(t) => t.chars().count(),
                Segment::Variable(name) => lengths.get(name.as_str()).copied().unwrap_or(0),
            })
            .sum();
        if chars > limits::RENDERED_TEMPLATE_MAX {
            return Err(RenderError::TooLong { chars });
        }
        Ok(pieces().collect())
    }
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The values do not match the template's variables.
    Variables {
        /// Variables the template uses but no value was given for.
        missing: Vec<String>,
        /// Values given for names the template does not use.
        unknown: Vec<String>,
    },
    /// The rendered text would be this many characters, more than
    /// [`limits::RENDERED_TEMPLATE_MAX`].
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Variables { missing, unknown } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing variables: {}", missing.join(", ")));
                }
                if !unknown.is_empty() {
                    parts.push(format!("unknown variables: {}", unknown.join(", ")));
                }
                f.write_str(&parts.join("; "))
            }
            Self::TooLong { chars } => write!(
                f,
                "the rendered text would be {chars} characters, more than {}",
                limits::RENDERED_TEMPLATE_MAX
            ),
        }
    }
}

impl std::error::Error for RenderError {}

/// A stored prompt template.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    /// Identity.
    pub id: TemplateId,
    /// Owner; the only one who may change it.
    pub owner: UserId,
    /// Name.
    pub name: TemplateName,
    /// Description.
    pub description: Option<TemplateDescription>,
    /// Content with placeholders.
    pub content: TemplateContent,
    /// Category.
    pub category: Option<Category>,
    /// Whether other users can see and use it.
    pub is_public: bool,
    /// Owner's favourite flag.
    pub is_favorite: bool,
    /// How many times it was used.
    pub usage_count: u64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl PromptTemplate {
    /// Whether it is one of `viewer`'s favourites: the flag is its owner's, so someone
    /// else's public template never is (and never shows the owner's choice).
    #[must_use]
    pub fn is_favorite_of(&self, viewer: UserId) -> bool {
        self.is_favorite && self.owner == viewer
    }

    /// The template as `viewer` sees it (see [`Self::is_favorite_of`]).
    #[must_use]
    pub fn seen_by(mut self, viewer: UserId) -> Self {
        self.is_favorite = self.is_favorite_of(viewer);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_format_templates_become_placeholders_with_literal_braces_kept() {
        let converted =
            TemplateContent::from_brace_format("Review {code} in {lang}: {{not}} {} {1}");
        assert_eq!(converted, "Review {{code}} in {{lang}}: {not} {} {1}");
        let parsed = TemplateContent::parse(converted).unwrap();
        assert_eq!(parsed.variables(), vec!["code", "lang"]);
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn placeholders_are_found_in_order_without_duplicates() {
        let t = TemplateContent::parse("Review {{ code }} in {{lang}}; again: {{code}}").unwrap();
        assert_eq!(t.variables(), vec!["code", "lang"]);
    }

    #[test]
    fn rendering_substitutes_every_placeholder() {
        let t = TemplateContent::parse("Hello {{name}}, {a} {{ name }}!").unwrap();
        assert_eq!(
            t.render(&vars(&[("name", "Ann")])).unwrap(),
            "Hello Ann, {a} Ann!"
        );
    }

    #[test]
    fn escaped_braces_stay_literal() {
        let t = TemplateContent::parse(r"Use \{{name}} for {{name}}").unwrap();
        assert_eq!(t.variables(), vec!["name"]);
        assert_eq!(
            t.render(&vars(&[("name", "x")])).unwrap(),
            "Use {{name}} for x"
        );
    }

    #[test]
    fn missing_and_unknown_variables_are_both_reported() {
        let t = TemplateContent::parse("{{a}} {{b}}").unwrap();
        let err = t.render(&vars(&[("a", "1"), ("c", "3")])).unwrap_err();
        assert_eq!(
            err,
            RenderError::Variables {
                missing: vec!["b".into()],
                unknown: vec!["c".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "missing variables: b; unknown variables: c"
        );
    }

    #[test]
    fn a_placeholder_repeated_cannot_multiply_a_value_past_the_rendered_limit() {
        let t = TemplateContent::parse("{{a}}".repeat(4_000)).unwrap();
        let fits = "é".repeat(limits::RENDERED_TEMPLATE_MAX / 4_000);
        let rendered = t.render(&vars(&[("a", &fits)])).unwrap();
        assert_eq!(rendered.chars().count(), limits::RENDERED_TEMPLATE_MAX);
        let one_more = format!("{fits}é");
        let err = t.render(&vars(&[("a", &one_more)])).unwrap_err();
        assert_eq!(
            err,
            RenderError::TooLong {
                chars: limits::RENDERED_TEMPLATE_MAX + 4_000
            }
        );
        assert_eq!(
            err.to_string(),
            "the rendered text would be 104000 characters, more than 100000"
        );
    }

    #[test]
    fn values_are_not_re_expanded() {
        let t = TemplateContent::parse("{{a}}").unwrap();
        assert_eq!(t.render(&vars(&[("a", "{{a}}")])).unwrap(), "{{a}}");
    }

    #[test]
    fn malformed_placeholders_are_rejected() {
        for bad in ["{{unclosed", "{{}}", "{{1abc}}", "{{a b}}", "{{a-b}}"] {
            assert!(TemplateContent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_declared_variable_list_must_match_the_content() {
        let t = TemplateContent::parse("{{a}} {{b}}").unwrap();
        assert_eq!(t.declared_variables(None).unwrap(), vec!["a", "b"]);
        assert!(
            t.declared_variables(Some(vec!["b".into(), "a".into()]))
                .is_ok()
        );
        assert!(t.declared_variables(Some(vec!["a".into()])).is_err());
        assert!(
            t.declared_variables(Some(vec!["a".into(), "b".into(), "c".into()]))
                .is_err()
        );
        assert!(
            t.declared_variables(Some(vec!["a".into(), "a".into(), "b".into()]))
                .is_err()
        );
    }
}
