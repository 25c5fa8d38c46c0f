//! Prompt templates over HTTP on every backend.

use infra_db::{on_every_backend, or_skip};

use infra_db::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::probe::{get, post, put};
use crate::helpers::{TestApp, assert_envelope, assert_malformed_cases, at_once, json_of};

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.post_json_as("/api/v1/templates", token, &body).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn visibility_rendering_and_lists(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let public = create(
        &app,
        &alice,
        json!({"name": "Review", "content": "Review {{code}} in {{ lang }}; literal \\{{x}}", "category": "dev", "is_public": true, "is_favorite": true}),
    )
    .await;
    assert_eq!(public["variables"], json!(["code", "lang"]));
    let private = create(
        &app,
        &alice,
        json!({"name": "Diary", "content": "Dear {{name}}", "category": "personal"}),
    )
    .await;
    let bobs = create(
        &app,
        &bob,
        json!({"name": "Bob's", "content": "Hi", "category": "dev"}),
    )
    .await;
    let (pub_id, priv_id) = (
        public["uuid"].as_str().unwrap(),
        private["uuid"].as_str().unwrap(),
    );

    // Bob sees Alice's public template but not her private one, and cannot change either.
    // Her favourite flag is hers: it is not his, and he cannot learn it.
    let seen = json_of(app.get_as(&format!("/api/v1/templates/{pub_id}"), &bob)).await;
    assert_eq!(seen["is_favorite"], false, "{seen}");
    let own = json_of(app.get_as(&format!("/api/v1/templates/{pub_id}"), &alice)).await;
    assert_eq!(own["is_favorite"], true, "{own}");
    let favourites = json_of(app.get_as("/api/v1/templates?is_favorite=true", &bob)).await;
    assert_eq!(favourites["total"], 0, "{favourites}");
    let others = json_of(app.get_as("/api/v1/templates?is_favorite=false", &bob)).await;
    assert_eq!(others["total"], 2, "{others}");
    let favourites = json_of(app.get_as("/api/v1/templates?is_favorite=true", &alice)).await;
    assert_eq!(favourites["total"], 1, "{favourites}");
    assert_envelope(
        app.get_as(&format!("/api/v1/templates/{priv_id}"), &bob)
            .await,
        404,
        "not_found",
    )
    .await;
    let put = |token: &str, id: &str| {
        app.client
            .put(app.url(&format!("/api/v1/templates/{id}")))
            .bearer_auth(token)
            .json(&json!({"name": "mine", "content": "x"}))
            .send()
    };
    assert_envelope(put(&bob, pub_id).await.unwrap(), 403, "forbidden").await;
    assert_envelope(put(&bob, priv_id).await.unwrap(), 404, "not_found").await;
    let del = app
        .delete_as(&format!("/api/v1/templates/{pub_id}"), &bob)
        .await;
    assert_envelope(del, 403, "forbidden").await;

    // Rendering: substitution, escapes, and clear errors.
    let rendered = json_of(app.post_json_as(
        &format!("/api/v1/templates/{pub_id}/render"),
        &bob,
        &json!({"variables": {"code": "fn main()", "lang": "Rust"}}),
    ))
    .await;
    assert_eq!(
        rendered["content"],
        "Review fn main() in Rust; literal {{x}}"
    );
    let missing = app
        .post_json_as(
            &format!("/api/v1/templates/{pub_id}/render"),
            &bob,
            &json!({"variables": {"code": "x", "extra": "y"}}),
        )
        .await;
    let body = assert_envelope(missing, 422, "validation_error").await;
    let problem = body["detail"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("missing variables: lang") && problem.contains("unknown variables: extra"),
        "{problem}"
    );
    // One placeholder 4,000 times and a 20,000-character value: refused, not 80 million
    // characters built and sent.
    let echo = create(
        &app,
        &bob,
        json!({"name": "E", "content": "{{a}}".repeat(4_000)}),
    )
    .await;
    let echo_id = echo["uuid"].as_str().unwrap();
    let multiplied = app
        .post_json_as(
            &format!("/api/v1/templates/{echo_id}/render"),
            &bob,
            &json!({"variables": {"a": "😀".repeat(20_000)}}),
        )
        .await;
    let body = assert_envelope(multiplied, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "variables", "{body}");
    assert!(
        body["detail"]["problem"]
            .as_str()
            .unwrap()
            .contains("would be 80000000 characters, more than 100000"),
        "{body}"
    );
    let removed = app
        .delete_as(&format!("/api/v1/templates/{echo_id}"), &bob)
        .await;
    assert_eq!(removed.status(), 204);

    // Declared variables must match the content; malformed placeholders are refused.
    let mismatch = app
        .post_json_as(
            "/api/v1/templates",
            &alice,
            &json!({"name": "x", "content": "{{a}}", "variables": ["b"]}),
        )
        .await;
    assert_envelope(mismatch, 422, "validation_error").await;
    let unclosed = app
        .post_json_as(
            "/api/v1/templates",
            &alice,
            &json!({"name": "x", "content": "{{a"}),
        )
        .await;
    assert_envelope(unclosed, 422, "validation_error").await;

    // Categories is a real route; lists filter and count truly.
    let cats = json_of(app.get_as("/api/v1/templates/categories", &bob)).await;
    assert_eq!(cats, json!([{"category": "dev", "count": 2}]));
    let mine = json_of(app.get_as("/api/v1/templates?mine=true", &bob)).await;
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["items"][0]["uuid"], bobs["uuid"]);
    let visible = json_of(app.get_as("/api/v1/templates", &bob)).await;
    assert_eq!(visible["total"], 2);
    let searched = json_of(app.get_as("/api/v1/templates?q=LANG", &alice)).await;
    assert_eq!(searched["total"], 1);
    let by_category = json_of(app.get_as("/api/v1/templates?category=personal", &alice)).await;
    assert_eq!(by_category["total"], 1);
    let public_only = json_of(app.get_as("/api/v1/templates?is_public=true", &alice)).await;
    assert_eq!(public_only["total"], 1);
    app.post_json_as(
        &format!("/api/v1/templates/{priv_id}/use"),
        &alice,
        &json!({}),
    )
    .await;
    let by_usage = json_of(app.get_as("/api/v1/templates?sort=usage", &alice)).await;
    assert_eq!(by_usage["items"][0]["uuid"], private["uuid"]);
    assert_eq!(
        app.get_as("/api/v1/templates?sort=random", &alice)
            .await
            .status(),
        422
    );

    // The owner updates and deletes.
    let updated = put(&alice, pub_id).await.unwrap();
    assert_eq!(updated.status(), 200);
    let gone = app
        .delete_as(&format!("/api/v1/templates/{pub_id}"), &alice)
        .await;
    assert_eq!(gone.status(), 204);
    assert_eq!(
        app.get_as(&format!("/api/v1/templates/{pub_id}"), &bob)
            .await
            .status(),
        404
    );
    app.finish().await;
}

async fn a_thousand_concurrent_uses_of_a_public_template_count_a_thousand(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let t = create(
        &app,
        &alice,
        json!({"name": "Shared", "content": "x", "is_public": true}),
    )
    .await;
    let url = app.url(&format!(
        "/api/v1/templates/{}/use",
        t["uuid"].as_str().unwrap()
    ));
    // Half of the uses are the owner's, half another user's.
    let statuses = at_once((0..1_000).map(|i| {
        let token = if i % 2 == 0 { &alice } else { &bob };
        app.client.post(&url).bearer_auth(token)
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = json_of(app.get_as(
        &format!("/api/v1/templates/{}", t["uuid"].as_str().unwrap()),
        &alice,
    ))
    .await;
    assert_eq!(after["usage_count"], 1_000);
    app.finish().await;
}

const TEMPLATES: &str = "/api/v1/templates";
const PRESETS: &str = "/api/v1/presets";

async fn malformed_input_on_template_preset_and_analytics_routes_is_a_4xx_envelope(
    backend: Backend,
) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    let t = create(&app, &token, json!({"name": "T", "content": "{{a}}"})).await;
    let tid = t["uuid"].as_str().unwrap().to_owned();
    let p = json_of(app.post_json_as("/api/v1/presets", &token, &json!({"name": "P"}))).await;
    let pid = p["uuid"].as_str().unwrap().to_owned();
    let nobody = "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f";
    let long = |n: usize| "x".repeat(n);
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("v{i}"), json!("x"))).collect();
    let render = format!("/api/v1/templates/{tid}/render");
    let cases = [
        (post(TEMPLATES, "{bad"), 400),
        (post(TEMPLATES, json!({"name": "", "content": "x"})), 422),
        (
            post(TEMPLATES, json!({"name": long(101), "content": "x"})),
            422,
        ),
        (
            post(TEMPLATES, json!({"name": "n", "content": long(20_001)})),
            422,
        ),
        (
            post(
                TEMPLATES,
                json!({"name": "n", "content": "x", "description": long(501)}),
            ),
            422,
        ),
        (
            post(
                TEMPLATES,
                json!({"name": "n", "content": "x", "category": long(51)}),
            ),
            422,
        ),
        (
            post(
                TEMPLATES,
                json!({"name": "n", "content": "x", "is_public": "yes"}),
            ),
            422,
        ),
        (
            post(TEMPLATES, json!({"name": "n", "content": long(300_000)})),
            413,
        ),
        (get("/api/v1/templates?limit=0"), 422),
        (get("/api/v1/templates?is_public=maybe"), 422),
        (get("/api/v1/templates/not-a-uuid"), 422),
        (get(format!("/api/v1/templates/{nobody}")), 404),
        (
            put(format!("/api/v1/templates/{tid}"), json!({"name": "n"})),
            422,
        ),
        (post(&render, json!({"variables": {"a": 1}})), 422),
        (post(&render, json!({"variables": many})), 422),
        (post(&render, json!({"variables": {}})), 422),
        (post(format!("/api/v1/templates/{nobody}/use"), ""), 404),
        (post(PRESETS, json!({"name": ""})), 422),
        (post(PRESETS, json!({"name": "n", "max_tokens": 0})), 422),
        (post(PRESETS, json!({"name": "n", "temperature": -1})), 422),
        (
            post(PRESETS, json!({"name": "n", "system_prompt": long(8_001)})),
            422,
        ),
        (
            post(PRESETS, json!({"name": "n", "max_tokens": "lots"})),
            422,
        ),
        (put(format!("/api/v1/presets/{pid}"), "[]"), 422),
        (get("/api/v1/presets?page=abc"), 422),
        (get("/api/v1/presets?q=a"), 422),
        (post(format!("/api/v1/presets/{nobody}/use"), ""), 404),
        (get("/api/v1/analytics?period=5d"), 422),
        (get("/api/v1/analytics/hourly?period=7d&extra=1"), 422),
        (
            get(format!("/api/v1/analytics/overview?model={}", long(201))),
            422,
        ),
        (
            put("/api/v1/users/me/settings", json!({"default_model_id": 5})),
            422,
        ),
        (get("/api/v1/models?limit=1000"), 422),
    ];
    assert_malformed_cases(&app, Some(&token), cases).await;
    app.finish().await;
}

on_every_backend!(
    malformed_input_on_template_preset_and_analytics_routes_is_a_4xx_envelope,
    visibility_rendering_and_lists,
    a_thousand_concurrent_uses_of_a_public_template_count_a_thousand
);
