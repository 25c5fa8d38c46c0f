//! `GET /chats/{id}/export`: a chat as a download, its whole tree as JSON or its current
//! branch as Markdown.

use super::*;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/export", operation_id = "export_chat", summary = "Download a chat as JSON or Markdown", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ExportQuery), responses((status = 200, description = "A download: JSON (the whole tree) or Markdown (the current branch)", content((TreeResponse = "application/json"), (String = "text/markdown")))), security(("bearer" = [])))]
pub(crate) async fn export<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let t = chats.tree(caller.id(), id).await?;
    let name = format!("chat-{}", t.chat.id);
    match query.format.as_deref().unwrap_or("json") {
        "json" => Ok(HttpResponse::Ok()
            .insert_header((
                "content-disposition",
                format!("attachment; filename=\"{name}.json\""),
            ))
            .json(tree_response(&t))),
        "markdown" => {
            let mut md = format!("# {}\n\n", t.chat.display_title());
            if let Some(p) = &t.chat.system_prompt {
                md.push_str(&format!("> System prompt: {}\n\n", p.as_str()));
            }
            for m in t.tree.path_to(t.chat.current_leaf_id).unwrap_or_default() {
                if m.role == domain::Role::System && m.content.trim().is_empty() {
                    continue;
                }
                md.push_str(&format!("## {}\n\n{}\n\n", m.role, m.content));
            }
            Ok(HttpResponse::Ok()
                .content_type("text/markdown; charset=utf-8")
                .insert_header((
                    "content-disposition",
                    format!("attachment; filename=\"{name}.md\""),
                ))
                .body(md))
        }
        _ => Err(ApiError::Validation {
            message: "format must be json or markdown".into(),
            field: Some("format".into()),
        }),
    }
}
