//! The OpenAPI 3.1 documents, generated from the handlers' annotations: Arbor's own at
//! `/api/v1/openapi.json` and the OpenAI-compatible surface's at `/v1/openapi.json`, both in
//! Swagger UI at `/docs` (its assets are compiled into the binary: nothing is fetched from the
//! network).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

mod links;

/// The whole API.
#[derive(OpenApi, Debug)]
#[openapi(
    info(
        title = "Arbor",
        description = "A multi-user LLM chat server: conversations as trees, streamed answers, presets, templates and analytics. Every error is `{error_type, user_message, retry_available, detail?, request_id}`.",
        license(name = "MIT")
    ),
    paths(
        crate::auth::register,
        crate::auth::login,
        crate::auth::refresh,
        crate::auth::logout,
        crate::auth::me,
        crate::auth::create_api_key,
        crate::auth::list_api_keys,
        crate::auth::revoke_api_key,
        crate::health::health,
        crate::health::ready,
        crate::models::list,
        crate::models::get,
        crate::models::get_settings,
        crate::models::put_settings,
        crate::chats::create_chat,
        crate::chats::list_chats,
        crate::chats::recent,
        crate::chats::search_all,
        crate::chats::get_chat,
        crate::chats::patch_chat,
        crate::chats::delete_chat,
        crate::chats::complete,
        crate::chats::search_chat,
        crate::chats::export::export,
        crate::chats::edit,
        crate::chats::delete_message,
        crate::chats::retry,
        crate::chats::current_branch,
        crate::chats::send,
        crate::chats::tree,
        crate::chats::select,
        crate::presets::create,
        crate::presets::list,
        crate::presets::get,
        crate::presets::update,
        crate::presets::delete,
        crate::presets::record_use,
        crate::templates::categories,
        crate::templates::create,
        crate::templates::list,
        crate::templates::get,
        crate::templates::update,
        crate::templates::delete,
        crate::templates::record_use,
        crate::templates::render,
        crate::analytics::all_route,
        crate::analytics::overview_route,
        crate::analytics::models_route,
        crate::analytics::daily_route,
        crate::analytics::hourly_route,
        crate::analytics::costs_route,
        crate::streaming::send_stream,
        crate::streaming::retry_stream,
        crate::streaming::edit_stream,
        crate::streaming::status,
        crate::streaming::cancel,
        crate::streaming::attach,
        crate::telemetry::scrape,
        crate::admin::list_users,
        crate::admin::patch_user,
        crate::admin::delete_user,
        crate::admin::reset_password,
        crate::admin::put_quota,
        crate::admin::audit,
        crate::admin::get_policy,
        crate::admin::put_policy,
        crate::admin::create_invite,
        crate::admin::list_invites,
        crate::admin::my_usage,
        crate::account::change_password,
        crate::account::sessions,
        crate::account::revoke_session,
        crate::account::delete_me,
        crate::account::export,
        crate::import::import_chatgpt,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "auth", description = "Accounts, tokens and API keys"),
        (name = "chats", description = "Conversations as trees"),
        (name = "messages", description = "Sending, retrying, editing and deleting messages"),
        (name = "streaming", description = "Server-Sent Events and running generations"),
        (name = "models", description = "The model catalogue and the caller's default model"),
        (name = "presets", description = "Saved generation settings"),
        (name = "templates", description = "Prompt templates"),
        (name = "analytics", description = "The caller's usage"),
        (name = "import", description = "Bringing conversations from elsewhere"),
        (name = "admin", description = "Administration (admin role): accounts, quotas, registration, invites, audit log"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// Adds what every route shares: the bearer scheme and the error responses that any route of
/// its kind can give, each with the error envelope.
struct Conventions;

/// An error response whose body is the component `schema`.
fn error(description: &str, schema: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build(),
    )
}

/// Adds each `(status, description)` that `op` does not document yet, with `schema` as body.
pub(crate) fn add_error_responses(op: &mut Operation, errors: &[(&str, &str)], schema: &str) {
    for (code, description) in errors {
        op.responses
            .responses
            .entry((*code).to_owned())
            .or_insert_with(|| error(description, schema));
    }
}

/// Adds the `bearer` scheme, then applies `each` to every operation with its path.
pub(crate) fn with_conventions(
    openapi: &mut utoipa::openapi::OpenApi,
    bearer_format: &str,
    mut each: impl FnMut(&str, &mut Operation),
) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format(bearer_format)
                .build(),
        ),
    );
    for (path, item) in &mut openapi.paths.paths {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            each(path, op);
        }
    }
}

fn add_errors(path: &str, op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_input = has_body || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let probe = matches!(path, "/api/v1/health" | "/api/v1/ready" | "/metrics");
    let mut standard: Vec<(&str, &str)> = Vec::new();
    if has_body {
        standard.push(("400", "The body is not well-formed JSON"));
        standard.push(("413", "The body is larger than the configured limit"));
        standard.push(("415", "The body is not JSON"));
    }
    if secured || path == "/metrics" {
        standard.push(("401", "Missing, invalid or expired credentials"));
    }
    if path.contains('{') {
        standard.push((
            "404",
            "No such resource for the caller (another user's is 404 too)",
        ));
    }
    if has_input {
        standard.push((
            "422",
            "Well-formed but invalid input (the field is named in detail)",
        ));
    }
    if !probe {
        standard.push(("429", "Rate limited; Retry-After says when to try again"));
    }
    standard.push(("500", "Unexpected failure (no internals are exposed)"));
    standard.push((
        "503",
        "A dependency is unavailable; Retry-After says when to try again",
    ));
    add_error_responses(op, &standard, "ErrorBody");
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        with_conventions(openapi, "JWT or arb_ API key", add_errors);
        links::add(openapi);
    }
}

/// Registers `/api/v1/openapi.json` and the interactive docs at `/docs`.
pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").urls(vec![
        (
            utoipa_swagger_ui::Url::new("Arbor", "/api/v1/openapi.json"),
            ApiDoc::openapi(),
        ),
        (
            utoipa_swagger_ui::Url::new("OpenAI-compatible (/v1)", "/v1/openapi.json"),
            crate::openai::OpenAiDoc::openapi(),
        ),
    ]));
    cfg.route(
        "/docs",
        actix_web::web::get().to(|| async {
            actix_web::HttpResponse::PermanentRedirect()
                .insert_header((actix_web::http::header::LOCATION, "/docs/"))
                .finish()
        }),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` of every `.route("…", web::method()…)` in the route modules.
    fn registered_routes() -> BTreeSet<(String, String)> {
        let sources = [
            ("/api/v1", include_str!("auth.rs")),
            ("/api/v1", include_str!("models.rs")),
            ("/api/v1", include_str!("chats.rs")),
            ("/api/v1", include_str!("presets.rs")),
            ("/api/v1", include_str!("templates.rs")),
            ("/api/v1", include_str!("analytics.rs")),
            ("/api/v1", include_str!("admin.rs")),
            ("/api/v1", include_str!("account.rs")),
            ("/api/v1", include_str!("import.rs")),
            ("/api/v1/chats/{id}", include_str!("streaming.rs")),
            ("", include_str!("lib.rs")),
        ];
        let mut routes = BTreeSet::new();
        for (mut prefix, source) in sources {
            let mut rest = source;
            let scoped_in = source.find("web::scope(\"").map(|at| {
                let path = &source[at + "web::scope(\"".len()..];
                (at, &path[..path.find('"').unwrap_or(0)])
            });
            let mut scope_prefix = String::new();
            while let Some(at) = rest.find("route(") {
                // Routes after `web::scope("…")` (one per file at most) are inside it.
                if let Some((scope_at, scope)) = scoped_in
                    && source.len() - rest.len() + at > scope_at
                    && scope_prefix.is_empty()
                {
                    scope_prefix = format!("{prefix}{scope}");
                    prefix = &scope_prefix;
                }
                rest = &rest[at + "route(".len()..];
                let text: String = rest
                    .chars()
                    .take(200)
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let Some(path) = text.strip_prefix('"').and_then(|t| t.split('"').next()) else {
                    continue;
                };
                let Some(method) = text.split("web::").nth(1).and_then(|m| m.split('(').next())
                else {
                    continue;
                };
                if path.contains("/docs") || path.starts_with("/api/v1/health") {
                    continue; // the docs themselves, and a test-only route
                }
                let scoped = if prefix.is_empty() && path != "/metrics" {
                    format!("/api/v1{path}")
                } else {
                    format!("{prefix}{path}")
                };
                let normalised = scoped.replace(":.+}", "}");
                routes.insert((method.to_uppercase(), normalised));
            }
        }
        routes
    }

    #[test]
    fn every_registered_route_is_documented_and_nothing_else() {
        let doc = ApiDoc::openapi();
        let mut documented = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    documented.insert((method.to_owned(), path.clone()));
                }
            }
        }
        let registered = registered_routes();
        assert!(registered.len() > 50, "the route scan found {registered:?}");
        assert_eq!(
            registered.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "registered but not documented"
        );
        assert_eq!(
            documented.difference(&registered).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not registered"
        );
    }

    #[test]
    fn errors_use_the_envelope_and_secured_routes_name_the_bearer_scheme() {
        let doc = ApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let send = &json["paths"]["/api/v1/chats/{id}/messages"]["post"];
        for code in ["401", "404", "422", "429", "502", "504"] {
            assert_eq!(
                send["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{code}"
            );
        }
        // utoipa names components by type name: two types of one name would silently
        // replace each other (a send's usage once took the quota's shape).
        let schemas = &json["components"]["schemas"];
        assert!(schemas["UsageResponse"]["properties"]["prompt_tokens"].is_object());
        assert!(schemas["QuotaUsageResponse"]["properties"]["day"].is_object());
        let stream = &json["paths"]["/api/v1/chats/{id}/messages/stream"]["post"];
        assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object());
        assert!(json["paths"]["/api/v1/health"]["get"]["security"].is_null());
    }

    /// A schema a generated client can type: a `$ref`, or an object with properties, or an
    /// array of such (an empty `{}` is `any`).
    fn typed(schema: &serde_json::Value) -> bool {
        schema.get("$ref").is_some()
            || schema.get("properties").is_some()
            || schema.get("allOf").is_some()
            || schema.get("oneOf").is_some()
            || schema.get("items").is_some_and(typed)
            || schema
                .get("type")
                .is_some_and(|t| t != "object" && !t.is_null())
    }

    #[test]
    fn every_json_success_response_is_typed() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut untyped = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (code, response) in op["responses"].as_object().into_iter().flatten() {
                    let Some(schema) = response["content"]["application/json"].get("schema") else {
                        continue;
                    };
                    if code.starts_with('2') && !typed(schema) {
                        untyped.push(format!("{method} {path} {code}"));
                    }
                }
            }
        }
        assert_eq!(untyped, Vec::<String>::new());
    }

    #[test]
    fn every_operation_says_what_it_does() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut unclear = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let summary = op["summary"].as_str().unwrap_or_default();
                // A summary that only names the route (`GET /api/v1/…`) says nothing.
                if summary.len() < 12 || summary.starts_with('`') || summary.contains("/api/v1/") {
                    unclear.push(format!("{method} {path}: {summary:?}"));
                }
            }
        }
        assert_eq!(unclear, Vec::<String>::new());
    }

    #[test]
    fn operation_ids_are_unique() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut seen = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                seen.entry(id).or_default().push(format!("{method} {path}"));
            }
        }
        let twice: Vec<_> = seen.into_iter().filter(|(_, ops)| ops.len() > 1).collect();
        assert_eq!(twice, Vec::<(String, Vec<String>)>::new());
    }
}
