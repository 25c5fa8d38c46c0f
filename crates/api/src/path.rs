//! Typed path extractors: a route's `{id}` (and `{mid}`) as domain ids. A segment that is not
//! a UUID answers 422 naming the field, before the handler runs.

use std::future::{Ready, ready};
use std::str::FromStr;

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use domain::{ApiKeyId, ChatId, MessageId, PresetId, TemplateId, TokenId, UserId};

use crate::error::ApiError;

/// An id type a route's `{id}` holds, and the field an error names.
pub trait PathId: FromStr {
    /// The field named when the segment is not a UUID.
    const FIELD: &'static str;
}

impl PathId for ChatId {
    const FIELD: &'static str = "chat_id";
}
impl PathId for PresetId {
    const FIELD: &'static str = "preset_id";
}
impl PathId for TemplateId {
    const FIELD: &'static str = "template_id";
}
impl PathId for UserId {
    const FIELD: &'static str = "id";
}
impl PathId for TokenId {
    const FIELD: &'static str = "id";
}
impl PathId for ApiKeyId {
    const FIELD: &'static str = "id";
}

fn segment<T: FromStr>(req: &HttpRequest, name: &str, field: &'static str) -> Result<T, ApiError> {
    req.match_info()
        .get(name)
        .and_then(|raw| raw.parse().ok())
        .ok_or_else(|| ApiError::Validation {
            message: "not a valid UUID".into(),
            field: Some(field.into()),
        })
}

/// The route's `{id}` as a `T`.
#[derive(Debug, Clone, Copy)]
pub struct Id<T>(pub T);

impl<T: PathId> FromRequest for Id<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(segment(req, "id", T::FIELD).map(Id))
    }
}

/// `/chats/{id}/messages/{mid}…`: the chat and the message.
#[derive(Debug, Clone, Copy)]
pub struct MessagePath {
    /// The chat (`{id}`).
    pub chat: ChatId,
    /// The message (`{mid}`).
    pub message: MessageId,
}

impl FromRequest for MessagePath {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            Ok(Self {
                chat: segment(req, "id", ChatId::FIELD)?,
                message: segment(req, "mid", "message_id")?,
            })
        })())
    }
}

/// Parses a uuid given in a body or query (422 naming `field` when it is not one).
pub(crate) fn parse_id<T: FromStr>(raw: &str, field: &'static str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::Validation {
        message: "not a valid UUID".into(),
        field: Some(field.into()),
    })
}
