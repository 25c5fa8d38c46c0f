//! Analytics against a seeded dataset with known answers, on every backend.

use infra_db::{on_every_backend, or_skip};
use std::collections::BTreeMap;

use domain::{
    ChatId, GenerationRecord, MessageId, MessageStatus, ModelId, Role, Timestamp, TokenUsage, Usd,
    UserId,
};
use infra_db::SeaOrmStore;
use infra_db::testing::Backend;
use serde_json::Value;
use usecase::ports::{ChatRepository, NewChat, NewMessage};

use crate::helpers::{TestApp, assert_envelope, eventually, json_of};

const DAY: i64 = Timestamp::MICROS_PER_DAY;
const HOUR: i64 = 3_600_000_000;

fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    Timestamp::from_unix_micros(micros)
}

/// (model, time, prompt tokens, completion tokens, cost in picodollars)
fn seeds(now: Timestamp) -> Vec<(&'static str, Timestamp, u64, u64, i64)> {
    vec![
        ("m/one", now.plus_micros(-2 * DAY), 100, 50, 1_000),
        ("m/two", now.plus_micros(-HOUR), 10, 5, 200),
        ("m/one", now.plus_micros(-10 * DAY), 1, 1, 7),
        ("m/one", now.plus_micros(-HOUR / 2), 20, 10, 300),
    ]
}

async fn seed(app: &TestApp, owner: UserId, now: Timestamp) {
    let store = SeaOrmStore::connect(&app.db.config(2)).await.unwrap();
    let chat = store
        .create_chat(NewChat {
            id: ChatId::from_u128(uuid::Uuid::now_v7().as_u128()),
            owner,
            title: None,
            system_prompt: None,
            model_id: None,
            preset_id: None,
            root_id: MessageId::from_u128(uuid::Uuid::now_v7().as_u128()),
            root_content: String::new(),
            created_at: now.plus_micros(-20 * DAY),
        })
        .await
        .unwrap();
    for (model, at, prompt, completion, cost) in seeds(now) {
        let id = MessageId::from_u128(uuid::Uuid::now_v7().as_u128());
        store
            .append_answer(
                owner,
                chat.id,
                NewMessage {
                    id,
                    parent_id: chat.root_id,
                    role: Role::Assistant,
                    content: "a".into(),
                    status: MessageStatus::Complete,
                    created_at: at,
                },
                GenerationRecord {
                    message_id: Some(id),
                    chat_id: Some(chat.id),
                    user_id: owner,
                    provider: "fake".into(),
                    model: ModelId::parse(model).unwrap(),
                    usage: TokenUsage {
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        total_tokens: prompt + completion,
                    },
                    cost: Usd::from_pico(cost),
                    cost_source: domain::CostSource::Catalogue,
                    latency_ms: 10,
                    time_to_first_token_ms: None,
                    finish_reason: Some("stop".into()),
                    created_at: at,
                    kind: domain::GenerationKind::Answer,
                },
            )
            .await
            .unwrap();
    }
    store.close().await;
}

async fn every_figure_matches_the_seeded_data(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let uuid = app.register("alice").await;
    let token = app.login("alice").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = app.user_token("bob").await;
    let now = now();
    seed(&app, uuid.parse().unwrap(), now).await;

    let all = json_of(app.get_as("/api/v1/analytics?period=7d", &token)).await;
    let o = &all["overview"];
    assert_eq!(o["period"], "7d");
    assert_eq!(o["messages"], 3);
    assert_eq!(o["prompt_tokens"], 130);
    assert_eq!(o["completion_tokens"], 65);
    assert_eq!(o["total_tokens"], 195);
    assert_eq!(o["cost_usd"], "0.0000000015");

    let models = all["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["model"], "m/one");
    assert_eq!(models[0]["messages"], 2);
    // Rounded so that the shares add up to 100.00 (truncated, they made 99.99).
    assert_eq!(models[0]["share_percent"], "66.67");
    assert_eq!(models[1]["share_percent"], "33.33");
    assert_eq!(models[1]["cost_usd"], "0.0000000002");

    let daily = all["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 8, "one entry per UTC day, zeros included");
    assert_eq!(
        daily
            .iter()
            .map(|d| d["messages"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    let two_days_ago = &now.plus_micros(-2 * DAY).to_string()[..10];
    let that_day = daily.iter().find(|d| d["date"] == *two_days_ago).unwrap();
    assert_eq!(that_day["messages"], 1);
    assert_eq!(that_day["total_tokens"], 150);

    let hourly = all["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 24);
    let mut expected: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (_, at, p, c, _) in seeds(now)
        .into_iter()
        .filter(|s| s.1 >= now.plus_micros(-7 * DAY))
    {
        let e = expected
            .entry(at.as_unix_micros().rem_euclid(DAY) / HOUR)
            .or_default();
        e.0 += 1;
        e.1 += p + c;
    }
    for h in hourly {
        let (messages, tokens) = expected
            .get(&h["hour"].as_i64().unwrap())
            .copied()
            .unwrap_or_default();
        assert_eq!(h["messages"], messages, "{h}");
        assert_eq!(h["total_tokens"], tokens, "{h}");
    }

    let costs = &all["costs"];
    assert_eq!(
        costs["daily"].as_array().unwrap().last().unwrap()["cumulative_usd"],
        "0.0000000015"
    );
    assert_eq!(costs["average_per_message_usd"], "0.0000000005");
    assert_eq!(costs["average_per_token_usd"], "0.000000000007");

    let month = json_of(app.get_as("/api/v1/analytics/overview?period=30d", &token)).await;
    assert_eq!(month["messages"], 4);
    let only_two =
        json_of(app.get_as("/api/v1/analytics/overview?period=30d&model=m/two", &token)).await;
    assert_eq!(only_two["messages"], 1);
    for route in ["models", "daily", "hourly", "costs"] {
        assert_eq!(
            app.get_as(&format!("/api/v1/analytics/{route}?period=1y"), &token)
                .await
                .status(),
            200
        );
    }

    // Nobody else's data, and an empty period is zeros, not an error.
    let empty = json_of(app.get_as("/api/v1/analytics?period=1d", &bob)).await;
    assert_eq!(empty["overview"]["messages"], 0);
    assert_eq!(empty["overview"]["cost_usd"], "0");
    assert_eq!(empty["costs"]["average_per_token_usd"], "0");
    assert_eq!(empty["daily"].as_array().unwrap().len(), 2);
    assert_envelope(
        app.get_as("/api/v1/analytics?period=2w", &token).await,
        422,
        "validation_error",
    )
    .await;
    assert_envelope(
        app.get_as("/api/v1/analytics/daily?period=", &token).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(app.get("/api/v1/analytics").await.status(), 401);
    app.finish().await;
}

/// The cost and its source stored for `message`.
async fn cost_of(app: &TestApp, message: &Value) -> (i64, String) {
    use sea_orm::ConnectionTrait;
    let db = app.db.raw().await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => {
                    "SELECT cost_pico_usd, cost_source FROM generations WHERE message_id = $1"
                }
                _ => "SELECT cost_pico_usd, cost_source FROM generations WHERE message_id = ?",
            },
            [crate::helpers::uuid_value(message)],
        ))
        .await
        .unwrap()
        .expect("a generation record");
    let out = (
        row.try_get("", "cost_pico_usd").unwrap(),
        row.try_get("", "cost_source").unwrap(),
    );
    let _ = db.close().await;
    out
}

/// A call whose provider reports its cost (`usage.cost`) costs that, even for a model the
/// catalogue lists without prices; otherwise the catalogue's prices apply. Analytics adds them.
async fn a_reported_cost_is_what_the_call_cost(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    const REPORTED: &str = "fake/reported?tokens=3&cost=0.0021";
    const LISTED: &str = "fake/listed?tokens=3";
    let mut models = fake_provider::default_models();
    models.push(fake_provider::model_entry(
        REPORTED, "Reported", "0", "0", 8_192,
    ));
    models.push(fake_provider::model_entry(
        LISTED, "Listed", "0.000001", "0.000002", 8_192,
    ));
    app.fake.set_models(models);
    let token = app.user_token("carol").await;
    let chat = app.new_chat(&token).await;
    let mut spent = 0;
    for (model, source) in [(REPORTED, "provider"), (LISTED, "catalogue")] {
        let answer = json_of(app.send_message(
            &chat,
            &token,
            &serde_json::json!({"content": "how much?", "model_id": model}),
        ))
        .await;
        let (prompt, completion, _, _) =
            crate::helpers::generation_of(&app, &answer["message_uuid"]).await;
        let (cost, from) = cost_of(&app, &answer["message_uuid"]).await;
        assert_eq!(from, source, "{model}");
        let expected = if source == "provider" {
            2_100_000_000
        } else {
            prompt * 1_000_000 + completion * 2_000_000
        };
        assert_eq!(cost, expected, "{model}");
        spent += cost;
    }
    let overview = app.get_json_as("/api/v1/analytics/overview", &token).await;
    assert_eq!(
        overview["cost_usd"],
        Usd::from_pico(spent).to_string(),
        "{overview}"
    );
    app.finish().await;
}

/// What a chat cost stays in the figures after the chat (or one of its answers) is deleted.
async fn deleting_chats_and_answers_leaves_the_figures_unchanged(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("frugal").await;
    let mut answers = Vec::new();
    let mut chats = Vec::new();
    for _ in 0..2 {
        let chat = app.new_chat(&token).await;
        for question in ["one", "two"] {
            let answer = json_of(app.send_message(
                &chat,
                &token,
                &serde_json::json!({"content": question, "model_id": "fake/large"}),
            ))
            .await;
            answers.push((
                chat.clone(),
                answer["message_uuid"].as_str().unwrap().to_owned(),
            ));
        }
        chats.push(chat);
    }
    let figures = || async {
        let mut all = app.get_json_as("/api/v1/analytics", &token).await;
        // The period's bounds move with the clock; the figures must not.
        all["overview"]["from"].take();
        all["overview"]["to"].take();
        all
    };
    // Each chat's title call is recorded in the background after its first answer: the
    // figures are final once both records (beside the four answers') are in.
    let generations = || async { app.db.count("generations", None).await == 6 };
    assert!(eventually(std::time::Duration::from_secs(10), generations).await);
    let before = figures().await;
    assert_eq!(before["overview"]["messages"], 4, "{}", before["overview"]);
    let (chat, answer) = &answers[3];
    let deleted = app
        .delete_as(&format!("/api/v1/chats/{chat}/messages/{answer}"), &token)
        .await;
    assert_eq!(deleted.status(), 204);
    let deleted = app
        .delete_as(&format!("/api/v1/chats/{}", chats[0]), &token)
        .await;
    assert_eq!(deleted.status(), 204);
    let after = figures().await;
    assert!(
        after == before,
        "{} became {}",
        before["overview"],
        after["overview"]
    );
    app.finish().await;
}

/// Every answer shows what it used where it is returned — the blocking reply, the `final`
/// event, the branch and tree views — a cancelled one too (with what is known), and the
/// title's call is recorded for its user as a title (counted in tokens, not as an answer).
async fn every_answer_shows_what_it_used(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    const SLOW: &str = "fake/slow?tokens=200&token_ms=20&cost=0.5";
    let mut models = fake_provider::default_models();
    models.push(fake_provider::model_entry(SLOW, "slow", "0", "0", 8_192));
    app.fake.set_models(models);
    let token = app.user_token("metered").await;
    let chat = app.new_chat(&token).await;
    let reply = json_of(app.send_message(
        &chat,
        &token,
        &serde_json::json!({"content": "blocking", "model_id": "fake/large"}),
    ))
    .await;
    let stats = &reply["generation"];
    assert_eq!(stats["model"], "fake/large", "{reply}");
    assert_eq!(
        stats["provider"], "openrouter",
        "the configured provider name"
    );
    assert_eq!(stats["completion_tokens"], 8);
    assert_eq!(stats["cost_source"], "catalogue");
    assert!(stats["cost_usd"].as_str().unwrap() != "0");
    assert!(stats["latency_ms"].as_u64().is_some());
    assert_eq!(stats["finish_reason"], "stop");

    let streamed = app
        .post_json_as(
            &format!("/api/v1/chats/{chat}/messages/stream"),
            &token,
            &serde_json::json!({"content": "streamed", "model_id": "fake/small"}),
        )
        .await
        .text()
        .await
        .unwrap();
    let last: Value = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|d| d["type"] == "final")
        .unwrap();
    assert_eq!(last["generation"]["model"], "fake/small", "{last}");
    assert!(last["generation"]["ttft_ms"].as_u64().is_some());

    // A stream cancelled midway keeps its record, with the reason.
    let mut open = app
        .post_json_as(
            &format!("/api/v1/chats/{chat}/messages/stream"),
            &token,
            &serde_json::json!({"content": "long", "model_id": SLOW}),
        )
        .await;
    let _ = open.chunk().await.unwrap();
    let cancelled = app.cancel_generation(&chat, &token).await;
    assert_eq!(cancelled.status(), 200);
    drop(open);

    let branch = app
        .get_json_as(&format!("/api/v1/chats/{chat}/messages"), &token)
        .await;
    let answers: Vec<&Value> = branch
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(answers.len(), 3, "{branch}");
    assert_eq!(answers[0]["generation"]["model"], "fake/large");
    assert_eq!(answers[1]["generation"]["model"], "fake/small");
    assert_eq!(answers[2]["status"], "interrupted");
    assert_eq!(
        answers[2]["generation"]["finish_reason"], "cancelled",
        "{branch}"
    );
    assert!(
        branch
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .all(|m| m.get("generation").is_none())
    );
    let tree = app
        .get_json_as(&format!("/api/v1/chats/{chat}/tree"), &token)
        .await;
    let in_tree = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "assistant" && n["generation"].is_object())
        .count();
    assert_eq!(in_tree, 3, "{tree}");

    // The title was written by its own call, recorded as a title.
    let titles = async {
        for _ in 0..100 {
            let n = app
                .db
                .count("generations", Some(("kind", "title".into())))
                .await;
            if n > 0 {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        0
    };
    assert_eq!(titles.await, 1);
    let overview = app.get_json_as("/api/v1/analytics/overview", &token).await;
    assert_eq!(
        overview["messages"], 3,
        "titles are not answers: {overview}"
    );
    app.finish().await;
}

on_every_backend!(
    every_figure_matches_the_seeded_data,
    a_reported_cost_is_what_the_call_cost,
    deleting_chats_and_answers_leaves_the_figures_unchanged,
    every_answer_shows_what_it_used,
);
