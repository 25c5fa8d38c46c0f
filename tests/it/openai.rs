//! The OpenAI-compatible `/v1` surface: the catalogue in OpenAI's list shape for a client
//! holding an Arbor API key, and OpenAI's error object on every failure.

use infra_db::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, on_every_backend};

async fn the_models_are_listed_in_openai_shape_with_an_api_key(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let access = app.user_token("sdk-user").await;
    let created: Value = app
        .post_json_as("/api/v1/auth/api-keys", &access, &json!({"name": "sdk"}))
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();

    let list: Value = app.get_json_as("/v1/models", &key).await;
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{list}");
    let small = data.iter().find(|m| m["id"] == "fake/small").unwrap();
    assert_eq!(small["object"], "model");
    assert_eq!(small["owned_by"], "fake");
    assert!(small["created"].as_i64().unwrap() > 0);

    let one: Value = app.get_json_as("/v1/models/fake/small", &key).await;
    assert_eq!(one["id"], "fake/small");

    let missing = app.get_as("/v1/models/nobody/none", &key).await;
    assert_eq!(missing.status(), 404);
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(missing["error"]["code"], "model_not_found", "{missing}");
    assert_eq!(missing["error"]["type"], "invalid_request_error");
    assert!(missing["error"]["message"].as_str().is_some());
    assert!(missing.get("error_type").is_none(), "not Arbor's envelope");

    let forged = app.get_as("/v1/models", "arb_not_a_real_key").await;
    assert_eq!(forged.status(), 401);
    let forged: Value = forged.json().await.unwrap();
    assert_eq!(forged["error"]["code"], "invalid_api_key", "{forged}");

    let nowhere = app.get_as("/v1/nothing/here", &key).await;
    assert_eq!(nowhere.status(), 404);
    let nowhere: Value = nowhere.json().await.unwrap();
    assert_eq!(
        nowhere["error"]["type"], "invalid_request_error",
        "{nowhere}"
    );
    app.finish().await;
}

on_every_backend!(the_models_are_listed_in_openai_shape_with_an_api_key);
