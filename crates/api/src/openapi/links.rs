//! OpenAPI links: which ids of a response the next operations take (a new chat's `uuid` is
//! the `{id}` of its tree, its messages, …). Clients and API tools follow them; schemathesis'
//! stateful phase chains calls along them instead of guessing ids.

use std::collections::HashMap;

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::{OpenApi, RefOr};

/// `(method, path, status)` of a response, the link's name, the operation it leads to
/// (`method`, `path`) and the target's parameters as runtime expressions.
type LinkSpec = (
    (&'static str, &'static str, &'static str),
    &'static str,
    (&'static str, &'static str),
    &'static [(&'static str, &'static str)],
);

const NEW_CHAT: (&str, &str, &str) = ("post", "/api/v1/chats", "201");
const CHAT_ID: &[(&str, &str)] = &[("id", "$response.body#/uuid")];
const SENT: (&str, &str, &str) = ("post", "/api/v1/chats/{id}/messages", "201");
const ANSWER: &[(&str, &str)] = &[
    ("id", "$request.path.id"),
    ("mid", "$response.body#/message_uuid"),
];
const QUESTION: &[(&str, &str)] = &[
    ("id", "$request.path.id"),
    ("mid", "$response.body#/user_message_uuid"),
];
const NEW_PRESET: (&str, &str, &str) = ("post", "/api/v1/presets", "201");
const NEW_TEMPLATE: (&str, &str, &str) = ("post", "/api/v1/templates", "201");
const UUID: &[(&str, &str)] = &[("id", "$response.body#/uuid")];

const LINKS: &[LinkSpec] = &[
    (NEW_CHAT, "GetChat", ("get", "/api/v1/chats/{id}"), CHAT_ID),
    (
        NEW_CHAT,
        "ChangeChat",
        ("patch", "/api/v1/chats/{id}"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "DeleteChat",
        ("delete", "/api/v1/chats/{id}"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "Tree",
        ("get", "/api/v1/chats/{id}/tree"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "Branch",
        ("get", "/api/v1/chats/{id}/messages"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "Send",
        ("post", "/api/v1/chats/{id}/messages"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "SendStreamed",
        ("post", "/api/v1/chats/{id}/messages/stream"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "Export",
        ("get", "/api/v1/chats/{id}/export"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "Search",
        ("get", "/api/v1/chats/{id}/search"),
        CHAT_ID,
    ),
    (
        NEW_CHAT,
        "Generation",
        ("get", "/api/v1/chats/{id}/generation"),
        CHAT_ID,
    ),
    (
        SENT,
        "Retry",
        ("post", "/api/v1/chats/{id}/messages/{mid}/retry"),
        ANSWER,
    ),
    (
        SENT,
        "DeleteAnswer",
        ("delete", "/api/v1/chats/{id}/messages/{mid}"),
        ANSWER,
    ),
    (
        SENT,
        "EditQuestion",
        ("patch", "/api/v1/chats/{id}/messages/{mid}"),
        QUESTION,
    ),
    (
        NEW_PRESET,
        "GetPreset",
        ("get", "/api/v1/presets/{id}"),
        UUID,
    ),
    (
        NEW_PRESET,
        "ChangePreset",
        ("put", "/api/v1/presets/{id}"),
        UUID,
    ),
    (
        NEW_PRESET,
        "UsePreset",
        ("post", "/api/v1/presets/{id}/use"),
        UUID,
    ),
    (
        NEW_PRESET,
        "DeletePreset",
        ("delete", "/api/v1/presets/{id}"),
        UUID,
    ),
    (
        NEW_TEMPLATE,
        "GetTemplate",
        ("get", "/api/v1/templates/{id}"),
        UUID,
    ),
    (
        NEW_TEMPLATE,
        "ChangeTemplate",
        ("put", "/api/v1/templates/{id}"),
        UUID,
    ),
    (
        NEW_TEMPLATE,
        "RenderTemplate",
        ("post", "/api/v1/templates/{id}/render"),
        UUID,
    ),
    (
        NEW_TEMPLATE,
        "UseTemplate",
        ("post", "/api/v1/templates/{id}/use"),
        UUID,
    ),
    (
        NEW_TEMPLATE,
        "DeleteTemplate",
        ("delete", "/api/v1/templates/{id}"),
        UUID,
    ),
    (
        ("post", "/api/v1/auth/api-keys", "201"),
        "RevokeKey",
        ("delete", "/api/v1/auth/api-keys/{id}"),
        &[("id", "$response.body#/id")],
    ),
];

fn operation<'a>(
    openapi: &'a mut OpenApi,
    method: &str,
    path: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "put" => item.put.as_mut(),
        "patch" => item.patch.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
}

/// Adds every link whose operations are in `openapi` (targets by their operation id).
pub(crate) fn add(openapi: &mut OpenApi) {
    let mut ids = HashMap::new();
    for ((_, _, _), _, (method, path), _) in LINKS {
        if let Some(id) = operation(openapi, method, path).and_then(|op| op.operation_id.clone()) {
            ids.insert((*method, *path), id);
        }
    }
    for ((method, path, status), name, target, parameters) in LINKS {
        let Some(target_id) = ids.get(target) else {
            continue;
        };
        let Some(op) = operation(openapi, method, path) else {
            continue;
        };
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
            continue;
        };
        let mut link = LinkBuilder::new().operation_id(target_id.clone());
        for (parameter, expression) in *parameters {
            link = link.parameter(*parameter, *expression);
        }
        response
            .links
            .insert((*name).to_owned(), RefOr::T(link.build()));
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::*;

    #[test]
    fn every_link_leads_to_a_documented_operation_with_the_parameters_it_names() {
        let json = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap_or_default();
        let mut by_id = HashMap::new();
        for (path, item) in json["paths"].as_object().into_iter().flatten() {
            for (_, op) in item.as_object().into_iter().flatten() {
                if let Some(id) = op["operationId"].as_str() {
                    by_id.insert(id.to_owned(), (path.clone(), op.clone()));
                }
            }
        }
        let mut links = 0;
        for ((method, path, status), name, _, parameters) in LINKS {
            let link = &json["paths"][path][method]["responses"][status]["links"][name];
            let target = link["operationId"].as_str().unwrap_or_default();
            let (target_path, _) = by_id
                .get(target)
                .unwrap_or_else(|| panic!("{name}: {link}"));
            for (parameter, expression) in *parameters {
                assert!(target_path.contains(&format!("{{{parameter}}}")), "{name}");
                assert_eq!(link["parameters"][parameter], *expression, "{name}");
            }
            links += 1;
        }
        assert_eq!(links, LINKS.len());
    }
}
