//! `GET /chats`: pages by number (with a total) or by cursor (keyset, no total).

use super::*;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Case-insensitive substring of the title (2–200 characters).
    q: Option<String>,
    /// `updated_at`, `created_at` or `title`, ascending; a `-` prefix descends. Default
    /// `-updated_at` (most recently changed first).
    sort: Option<String>,
    /// Page number (1–10,000), counted with a total. Not with `cursor`.
    page: Option<u32>,
    /// Items per page (1–100, default 20).
    limit: Option<u32>,
    /// Keyset pagination: empty for the first page, then the `next_cursor` of the previous
    /// page (same `sort`). Pages fetched this way cost the same however deep they are, and
    /// carry no total.
    cursor: Option<String>,
}

/// A page of chats: by number (`page`, with `total` and `pages`) or after a cursor
/// (without them); `next_cursor` continues the list, `null` at its end.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ChatListResponse {
    items: Vec<ChatListItem>,
    /// How many chats match (page-number requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    /// The page number (page-number requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u32>,
    limit: u32,
    /// How many pages there are (page-number requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pages: Option<u64>,
    /// Pass as `cursor` for the next page; `null` when this is the last.
    next_cursor: Option<String>,
}

/// The longest cursor accepted (a 200-character title encodes well below it).
const CURSOR_MAX_LEN: usize = 2_048;

fn sort_code(sort: ChatSort) -> &'static str {
    match sort {
        ChatSort::UpdatedDesc => "u",
        ChatSort::UpdatedAsc => "+u",
        ChatSort::CreatedDesc => "c",
        ChatSort::CreatedAsc => "+c",
        ChatSort::TitleAsc => "t",
        ChatSort::TitleDesc => "-t",
    }
}

/// A cursor as the client sees it: opaque URL-safe base64 of `[sort, key, id]`.
fn encode_cursor(cursor: &ChatCursor, sort: ChatSort) -> String {
    use base64::Engine as _;
    let key = match &cursor.key {
        CursorKey::Time(t) => serde_json::json!(t),
        CursorKey::Title(t) => serde_json::json!(t),
    };
    let raw = serde_json::json!([sort_code(sort), key, cursor.id.to_string()]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(text: &str, sort: ChatSort) -> Result<ChatCursor, ApiError> {
    use base64::Engine as _;
    let invalid = |message: &str| ApiError::Validation {
        message: message.to_owned(),
        field: Some("cursor".into()),
    };
    if text.len() > CURSOR_MAX_LEN {
        return Err(invalid("cursor is too long"));
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid("cursor is not one this server made"))?;
    let (code, key, id): (String, serde_json::Value, String) =
        serde_json::from_slice(&raw).map_err(|_| invalid("cursor is not one this server made"))?;
    if code != sort_code(sort) {
        return Err(invalid("cursor was made for another sort order"));
    }
    let key = match (sort, key) {
        (
            ChatSort::UpdatedDesc
            | ChatSort::UpdatedAsc
            | ChatSort::CreatedDesc
            | ChatSort::CreatedAsc,
            serde_json::Value::Number(n),
        ) => CursorKey::Time(
            n.as_i64()
                .ok_or_else(|| invalid("cursor is not one this server made"))?,
        ),
        (ChatSort::TitleAsc | ChatSort::TitleDesc, serde_json::Value::String(t)) => {
            // Only a title this server could have stored (never, say, a NUL byte).
            let title =
                ChatTitle::parse(t).map_err(|_| invalid("cursor is not one this server made"))?;
            CursorKey::Title(Some(title.as_str().to_owned()))
        }
        (ChatSort::TitleAsc | ChatSort::TitleDesc, serde_json::Value::Null) => {
            CursorKey::Title(None)
        }
        _ => return Err(invalid("cursor is not one this server made")),
    };
    let id = id
        .parse::<ChatId>()
        .map_err(|_| invalid("cursor is not one this server made"))?;
    Ok(ChatCursor { key, id })
}

#[utoipa::path(get, path = "/api/v1/chats", summary = "List your chats: search, sort, pages or cursor", tag = "chats", params(ListQuery), responses((status = 200, description = "A page of chats", body = ChatListResponse)), security(("bearer" = [])))]
pub(crate) async fn list_chats<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let sort = match q.sort.as_deref() {
        None | Some("-updated_at") => ChatSort::UpdatedDesc,
        Some("updated_at") => ChatSort::UpdatedAsc,
        Some("-created_at") => ChatSort::CreatedDesc,
        Some("created_at") => ChatSort::CreatedAsc,
        Some("title") => ChatSort::TitleAsc,
        Some("-title") => ChatSort::TitleDesc,
        Some(_) => {
            return Err(ApiError::Validation {
                message: "sort must be updated_at, created_at or title, each optionally with a - \
                          prefix for descending order"
                    .into(),
                field: Some("sort".into()),
            });
        }
    };
    if q.cursor.is_some() && q.page.is_some() {
        return Err(ApiError::Validation {
            message: "give either page or cursor, not both".into(),
            field: Some("cursor".into()),
        });
    }
    // An empty cursor starts a keyset walk: the first page, without a total.
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(c, sort))
        .transpose()?;
    let page = PageRequest::new(q.page, q.limit)?;
    let title = q.q.map(SearchQuery::parse).transpose()?;
    let by_number = q.cursor.is_none();
    let result = chats
        .list_chats(
            caller.id(),
            ChatQuery {
                title,
                sort,
                page,
                after,
                without_total: !by_number,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(ChatListResponse {
        items: result.items.iter().map(ChatListItem::from).collect(),
        total: result.total,
        page: by_number.then(|| page.page()),
        limit: page.limit(),
        pages: result.total.map(|t| page.pages_for(t)),
        next_cursor: result.next.map(|c| encode_cursor(&c, sort)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_or_forged_ones_are_refused() {
        use base64::Engine as _;
        let id = ChatId::from_u128(42);
        for (sort, key) in [
            (
                ChatSort::UpdatedDesc,
                CursorKey::Time(1_800_000_000_000_000),
            ),
            (
                ChatSort::TitleAsc,
                CursorKey::Title(Some("日本語 title".into())),
            ),
            (ChatSort::TitleDesc, CursorKey::Title(None)),
        ] {
            let cursor = ChatCursor { key, id };
            let text = encode_cursor(&cursor, sort);
            assert_eq!(decode_cursor(&text, sort).ok(), Some(cursor));
            let other = if sort == ChatSort::TitleAsc {
                ChatSort::CreatedDesc
            } else {
                ChatSort::TitleAsc
            };
            assert!(decode_cursor(&text, other).is_err(), "{sort:?} → {other:?}");
        }
        let forge = |raw: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        for raw in [
            r#"["t","a\u0000b","00000000-0000-0000-0000-00000000002a"]"#,
            r#"["t","","00000000-0000-0000-0000-00000000002a"]"#,
            r#"["u",1.5,"00000000-0000-0000-0000-00000000002a"]"#,
            r#"["u",1,"not-a-uuid"]"#,
            r#"{"u":1}"#,
        ] {
            let sort = if raw.contains("\"t\"") {
                ChatSort::TitleAsc
            } else {
                ChatSort::UpdatedDesc
            };
            assert!(decode_cursor(&forge(raw), sort).is_err(), "{raw}");
        }
        assert!(decode_cursor("%%%", ChatSort::UpdatedDesc).is_err());
    }
}
