//! Administration on every backend: the role matrix of every admin route, the audit log,
//! each registration policy end to end, invites, account deletion leaving no row behind, and
//! quotas refusing before the provider is called.

use infra_db::SeaOrmStore;
use infra_db::testing::Backend;
use infra_db::{on_every_backend, or_skip};
use serde_json::{Value, json};
use usecase::ports::{UserChange, UserRepository};

use crate::helpers::{PASSWORD, TestApp, json_of, uuid_value};

/// Makes `name` (registered through the API) an admin, as `arbor user promote` does.
async fn promote(app: &TestApp, name: &str) {
    let store = SeaOrmStore::connect(&app.db.config(2)).await.unwrap();
    let user = store
        .find_credentials(&domain::Username::parse(name).unwrap())
        .await
        .unwrap()
        .unwrap()
        .user;
    store
        .update_user(
            user.id,
            UserChange {
                role: Some(domain::AccountRole::Admin),
                ..UserChange::default()
            },
            user.created_at,
        )
        .await
        .unwrap();
    store.close().await;
}

/// An admin's access token.
async fn admin_token(app: &TestApp, name: &str) -> String {
    app.register(name).await;
    promote(app, name).await;
    // Logged in after the promotion (the cache may hold the account as it was).
    app.login(name).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn user_id(app: &TestApp, token: &str) -> String {
    app.get_json_as("/api/v1/auth/me", token).await["uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn admin_routes_answer_by_role(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let admin = admin_token(&app, "root-admin").await;
    let user = app.user_token("plain-user").await;
    let target = user_id(&app, &app.user_token("target-user").await).await;
    let users = format!("/api/v1/admin/users/{target}");
    let cases: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("GET", "/api/v1/admin/users?q=target".into(), None, 200),
        ("PATCH", users.clone(), Some(json!({"role": "user"})), 200),
        (
            "POST",
            format!("{users}/password"),
            Some(json!({"password": "a new long password"})),
            204,
        ),
        (
            "PUT",
            format!("{users}/quota"),
            Some(json!({"daily_usd": "1.5", "monthly_tokens": 1000})),
            200,
        ),
        ("GET", "/api/v1/admin/audit".into(), None, 200),
        ("GET", "/api/v1/admin/registration".into(), None, 200),
        (
            "PUT",
            "/api/v1/admin/registration".into(),
            Some(json!({"policy": "open"})),
            200,
        ),
        (
            "POST",
            "/api/v1/admin/invites".into(),
            Some(json!({"expires_in_hours": 2})),
            201,
        ),
        ("GET", "/api/v1/admin/invites".into(), None, 200),
        ("DELETE", users.clone(), None, 204),
    ];
    for (method, path, body, _) in &cases {
        let anonymous = app.call(method, path, None, body.as_ref()).await;
        assert_eq!(anonymous.status(), 401, "{method} {path} anonymous");
        let forbidden = app.call(method, path, Some(&user), body.as_ref()).await;
        assert_eq!(forbidden.status(), 403, "{method} {path} as a user");
        let body: Value = forbidden.json().await.unwrap();
        assert_eq!(body["error_type"], "forbidden");
    }
    for (method, path, body, status) in &cases {
        let done = app.call(method, path, Some(&admin), body.as_ref()).await;
        assert_eq!(
            done.status().as_u16(),
            *status,
            "{method} {path} as an admin"
        );
    }
    let listed = app.get_json_as("/api/v1/admin/users?q=ROOT", &admin).await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["items"][0]["role"], "admin");
    // An admin cannot demote, disable or delete themselves here.
    let me = user_id(&app, &admin).await;
    for (method, body) in [
        ("PATCH", Some(json!({"role": "user"}))),
        ("PATCH", Some(json!({"disabled": true}))),
        ("DELETE", None),
    ] {
        let own = app
            .call(
                method,
                &format!("/api/v1/admin/users/{me}"),
                Some(&admin),
                body.as_ref(),
            )
            .await;
        assert_eq!(own.status(), 409, "{method} on oneself");
    }
    app.finish().await;
}

async fn every_admin_action_is_audited(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let admin = admin_token(&app, "auditor").await;
    let victim_token = app.user_token("victim").await;
    let victim = user_id(&app, &victim_token).await;
    let path = format!("/api/v1/admin/users/{victim}");
    for (method, path, body) in [
        ("PATCH", path.clone(), Some(json!({"disabled": true}))),
        ("PATCH", path.clone(), Some(json!({"disabled": false}))),
        ("PATCH", path.clone(), Some(json!({"role": "admin"}))),
        (
            "POST",
            format!("{path}/password"),
            Some(json!({"password": "another long password"})),
        ),
        (
            "PUT",
            format!("{path}/quota"),
            Some(json!({"daily_tokens": 5})),
        ),
        (
            "PUT",
            "/api/v1/admin/registration".into(),
            Some(json!({"policy": "approval"})),
        ),
        ("POST", "/api/v1/admin/invites".into(), Some(json!({}))),
        ("DELETE", path.clone(), None),
    ] {
        let done = app.call(method, &path, Some(&admin), body.as_ref()).await;
        assert!(
            done.status().is_success(),
            "{method} {path}: {}",
            done.status()
        );
    }
    let log = app
        .get_json_as("/api/v1/admin/audit?limit=50", &admin)
        .await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.delete",
            "invite.create",
            "registration.policy",
            "user.quota",
            "user.password_reset",
            "user.role",
            "user.enable",
            "user.disable",
        ],
        "{log}"
    );
    for entry in log["items"].as_array().unwrap() {
        assert_eq!(entry["actor_name"], "auditor");
        assert!(!entry.to_string().contains("another long password"));
    }
    let deleted = &log["items"][0];
    assert_eq!(deleted["target_name"], "victim");
    assert!(
        deleted["target_uuid"].is_null(),
        "the deleted account's id is gone"
    );
    // The disabled account's token stopped working at once.
    assert_eq!(
        app.get_as("/api/v1/auth/me", &victim_token).await.status(),
        401
    );
    app.finish().await;
}

async fn register(app: &TestApp, name: &str, invite: Option<&str>) -> reqwest::Response {
    let mut body = json!({"username": name, "password": PASSWORD});
    if let Some(code) = invite {
        body["invite_code"] = json!(code);
    }
    app.post_json("/api/v1/users", &body).await
}

async fn login_status(app: &TestApp, name: &str) -> (u16, Value) {
    let r = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": name, "password": PASSWORD}),
        )
        .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn set_policy(app: &TestApp, admin: &str, policy: &str) {
    let r = app
        .put_json_as(
            "/api/v1/admin/registration",
            admin,
            &json!({"policy": policy}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn each_registration_policy_works_end_to_end(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let admin = admin_token(&app, "gatekeeper").await;
    assert_eq!(register(&app, "open-door", None).await.status(), 201);

    set_policy(&app, &admin, "approval").await;
    let waiting = register(&app, "waiting", None).await;
    assert_eq!(waiting.status(), 201);
    let waiting: Value = waiting.json().await.unwrap();
    assert_eq!(waiting["pending"], true);
    let (status, body) = login_status(&app, "waiting").await;
    assert_eq!(status, 403);
    assert_eq!(body["error_type"], "account_pending", "{body}");
    // A wrong password learns nothing about the account.
    let wrong = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "waiting", "password": "not the password"}),
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let approved = app
        .patch_json_as(
            &format!("/api/v1/admin/users/{}", waiting["uuid"].as_str().unwrap()),
            &admin,
            &json!({"approve": true}),
        )
        .await;
    assert_eq!(approved.status(), 200);
    assert_eq!(login_status(&app, "waiting").await.0, 200);

    set_policy(&app, &admin, "invite").await;
    let refused = register(&app, "no-code", None).await;
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error_type"], "invite_required");
    let invite = json_of(app.post_json_as(
        "/api/v1/admin/invites",
        &admin,
        &json!({"expires_in_hours": 1}),
    ))
    .await;
    let code = invite["code"].as_str().unwrap();
    assert!(code.starts_with("inv_"));
    assert_eq!(register(&app, "invited", Some(code)).await.status(), 201);
    assert_eq!(login_status(&app, "invited").await.0, 200);
    let reused = register(&app, "second-use", Some(code)).await;
    assert_eq!(reused.status(), 403, "an invite is single-use");
    let listed = app.get_json_as("/api/v1/admin/invites", &admin).await;
    assert!(listed["items"][0]["used_at"].is_string(), "{listed}");
    assert!(
        listed["items"][0].get("code").is_none(),
        "codes are shown once"
    );
    // An expired invite is refused.
    let stale = json_of(app.post_json_as("/api/v1/admin/invites", &admin, &json!({}))).await;
    {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Expr, ExprTrait, Query};
        let db = app.db.raw().await;
        let expire = Query::update()
            .table("invites")
            .value("expires_at", 1_i64)
            .and_where(Expr::col("id").eq(uuid_value(&stale["uuid"])))
            .to_owned();
        db.execute(&expire).await.unwrap();
        let _ = db.close().await;
    }
    let late = register(&app, "too-late", stale["code"].as_str()).await;
    assert_eq!(late.status(), 403);

    set_policy(&app, &admin, "closed").await;
    let closed = register(&app, "nobody-new", None).await;
    assert_eq!(closed.status(), 403);
    let closed: Value = closed.json().await.unwrap();
    assert_eq!(closed["error_type"], "registration_closed");
    app.finish().await;
}

/// Deleting an account removes every row of it in one go; what others own stays.
async fn deleting_an_account_leaves_no_row_of_it(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let admin = admin_token(&app, "cleaner").await;
    let token = app.user_token("leaving").await;
    let keeper = app.user_token("staying").await;
    let id = user_id(&app, &token).await;
    let chat = app.new_chat(&token).await;
    let kept_chat = app.new_chat(&keeper).await;
    for (t, c) in [(&token, &chat), (&keeper, &kept_chat)] {
        app.ask(c, t, "hello").await;
    }
    for (path, body) in [
        ("/api/v1/auth/api-keys", json!({"name": "k"})),
        ("/api/v1/presets", json!({"name": "p", "temperature": 0.5})),
        (
            "/api/v1/templates",
            json!({"name": "t", "content": "Hi {{name}}", "category": "c"}),
        ),
    ] {
        let made = app.post_json_as(path, &token, &body).await;
        assert!(made.status().is_success(), "{path}: {}", made.status());
    }
    let settings = app
        .put_json_as(
            "/api/v1/users/me/settings",
            &token,
            &json!({"default_model_id": "fake/large"}),
        )
        .await;
    assert!(settings.status().is_success());
    let deleted = app
        .delete_as(&format!("/api/v1/admin/users/{id}"), &admin)
        .await;
    assert_eq!(deleted.status(), 204);
    let key = || Some(("user_id", uuid_value(&json!(id))));
    for table in [
        "chats",
        "generations",
        "api_keys",
        "refresh_tokens",
        "presets",
        "prompt_templates",
        "user_settings",
        "generation_leases",
        "generation_slots",
    ] {
        assert_eq!(app.db.count(table, key()).await, 0, "{table}");
    }
    assert_eq!(
        app.db
            .count("users", Some(("id", uuid_value(&json!(id)))))
            .await,
        0
    );
    assert_eq!(
        app.db
            .count("messages", Some(("chat_id", uuid_value(&json!(chat)))))
            .await,
        0
    );
    for column in ["actor_id", "target_id"] {
        assert_eq!(
            app.db
                .count("audit_log", Some((column, uuid_value(&json!(id)))))
                .await,
            0,
            "{column}"
        );
    }
    assert_eq!(app.get_as("/api/v1/auth/me", &token).await.status(), 401);
    // The other account is untouched.
    let theirs: Value = app
        .get_json_as(&format!("/api/v1/chats/{kept_chat}"), &keeper)
        .await;
    assert_eq!(theirs["message_count"], 3, "{theirs}");
    app.finish().await;
}

/// A daily quota refuses a send once spent — before the question is stored or the provider
/// called — and concurrent sends overshoot it by at most the generations in flight.
async fn a_spent_quota_refuses_before_the_provider_is_called(backend: Backend) {
    const CAP: usize = 3;
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.per_user_limit = CAP;
    }));
    const PRICEY: &str = "fake/pricey?tokens=2&cost=0.004";
    const SLOW: &str = "fake/pricey?tokens=4&token_ms=50&cost=0.004";
    let mut models = fake_provider::default_models();
    for id in [PRICEY, SLOW] {
        models.push(fake_provider::model_entry(id, id, "0", "0", 8_192));
    }
    app.fake.set_models(models);
    let admin = admin_token(&app, "treasurer").await;
    let token = app.user_token("spender").await;
    let id = user_id(&app, &token).await;
    let quota = app
        .put_json_as(
            &format!("/api/v1/admin/users/{id}/quota"),
            &admin,
            &json!({"daily_usd": "0.01"}),
        )
        .await;
    assert_eq!(quota.status(), 200);
    let usage = app.get_json_as("/api/v1/users/me/usage", &token).await;
    assert_eq!(usage["day"]["limit_usd"], "0.01", "{usage}");
    assert_eq!(usage["exceeded"], false);

    let chat = app.new_chat(&token).await;
    let send = |model: &'static str, chat: String| {
        let app = &app;
        let token = token.clone();
        async move {
            app.send_message(
                &chat,
                &token,
                &json!({"content": "spend", "model_id": model}),
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(send(PRICEY, chat.clone()).await.status(), 201);
    }
    let calls = app.fake.stats().chat_requests;
    let before: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    let refused = send(PRICEY, chat.clone()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error_type"], "quota_exceeded", "{body}");
    assert_eq!(body["detail"]["limit"], "daily_cost");
    assert!(
        body["detail"]["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00.000000Z")
    );
    let openai = app
        .post_json_as(
            "/v1/chat/completions",
            &token,
            &json!({"model": PRICEY, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(openai.status(), 429);
    assert_eq!(app.fake.stats().chat_requests, calls, "no provider call");
    let after: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(
        after["message_count"], before["message_count"],
        "nothing stored"
    );
    let usage = app.get_json_as("/api/v1/users/me/usage", &token).await;
    assert_eq!(usage["day"]["cost_usd"], "0.012", "{usage}");
    assert_eq!(usage["exceeded"], true);

    // A second spender sends 12 at once: those admitted while the quota was not yet spent
    // may all finish, so at most CAP calls overshoot it.
    let rival = app.user_token("rival").await;
    let rival_id = user_id(&app, &rival).await;
    app.put_json_as(
        &format!("/api/v1/admin/users/{rival_id}/quota"),
        &admin,
        &json!({"daily_usd": "0.01"}),
    )
    .await;
    let mut chats = Vec::new();
    for _ in 0..12 {
        chats.push(app.new_chat(&rival).await);
    }
    let burst = futures::future::join_all(chats.into_iter().map(|chat| {
        let app = &app;
        let rival = rival.clone();
        async move {
            app.send_message(
                &chat,
                &rival,
                &json!({"content": "burst", "model_id": SLOW}),
            )
            .await
            .status()
            .as_u16()
        }
    }))
    .await;
    let done = burst.iter().filter(|s| **s == 201).count();
    assert!(burst.iter().all(|s| matches!(s, 201 | 429)), "{burst:?}");
    // 0.01 / 0.004 = 2.5: the third call already reaches the quota; CAP more may be in flight.
    assert!(
        (3..=2 + CAP).contains(&done),
        "{done} calls of 0.004 went through: {burst:?}"
    );
    let usage = app.get_json_as("/api/v1/users/me/usage", &rival).await;
    assert_eq!(
        usage["day"]["cost_usd"],
        domain::Usd::from_pico(4_000_000_000 * done as i64).to_string()
    );
    app.finish().await;
}

on_every_backend!(
    admin_routes_answer_by_role,
    every_admin_action_is_audited,
    each_registration_policy_works_end_to_end,
    deleting_an_account_leaves_no_row_of_it,
    a_spent_quota_refuses_before_the_provider_is_called,
);
