//! The OpenAPI document and the interactive docs, served entirely by Arbor (no network).

use infra_db::or_skip;
use infra_db::testing::Backend;
use serde_json::Value;

use crate::helpers::TestApp;

/// `src="…"` and `href="…"` values of a page.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_and_all_their_assets_come_from_the_server() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    let spec = app.get("/api/v1/openapi.json").await;
    assert_eq!(spec.status(), 200);
    let spec: Value = spec.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(spec["paths"]["/api/v1/chats/{id}/messages/stream"].is_object());
    let openai: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    assert!(
        openai["paths"]["/v1/chat/completions"]["post"].is_object(),
        "{openai}"
    );
    assert!(openai["components"]["schemas"]["OpenAiErrorBody"].is_object());

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .unwrap();
    let page = client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.url().path().starts_with("/docs/"), "{}", page.url());
    let base = page.url().clone();
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "{html:.300}");
    assert!(
        !html.contains("<script>"),
        "no inline script: the CSP allows same-origin scripts only"
    );
    let assets = references(&html);
    assert!(assets.len() >= 3, "{assets:?}");
    assert!(
        assets.iter().any(|a| a.ends_with("swagger-initializer.js")),
        "{assets:?}"
    );
    for asset in &assets {
        assert!(
            !asset.starts_with("http://")
                && !asset.starts_with("https://")
                && !asset.starts_with("//"),
            "an external asset would need the network: {asset}"
        );
        let url = base.join(asset).unwrap();
        let r = client.get(url.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body = r.text().await.unwrap();
        assert!(!body.is_empty(), "{url}");
        if asset.ends_with("swagger-initializer.js") {
            assert!(body.contains("/api/v1/openapi.json"), "{body}");
            assert!(body.contains("\"/v1/openapi.json\""), "{body}");
        }
    }
    app.finish().await;
}
