//! Several providers behind one gateway, against real local fake providers: routing by model
//! pattern and priority, fallback before the first byte (connection refused, 503, 429), no
//! fallback for a rejected request or a stream that already started, the record naming the
//! provider that answered, and the merged model list.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

use std::time::Duration;

use domain::{ModelId, Role};
use fake_provider::FakeProvider;
use futures::StreamExt;
use infra_llm::{LlmConfig, OpenAiGateway, Provider, ProviderRouter};
use usecase::llm::{CompletionRequest, LlmError, LlmGateway, PromptMessage, StreamEvent};

fn config(base_url: String) -> LlmConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    LlmConfig {
        base_url,
        api_key: String::new(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        stream_idle_timeout: Duration::from_secs(5),
        pool_max_idle_per_host: 4,
        http2_prior_knowledge: false,
        max_concurrent_requests: 8,
        queue_timeout: Duration::from_secs(5),
        extra_headers: Vec::new(),
        max_retries: 1,
        retry_base_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(20),
    }
}

fn provider(name: &str, base_url: String, models: &[&str], priority: u32) -> Provider {
    Provider {
        name: name.to_owned(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        priority,
        gateway: OpenAiGateway::new(config(base_url)).unwrap(),
    }
}

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: ModelId::parse(model).unwrap(),
        messages: vec![PromptMessage {
            role: Role::User,
            content: "Say hello".into(),
        }],
        temperature: None,
        max_tokens: None,
        passthrough: None,
    }
}

/// The provider a record names (before the upstream it reported, if any).
fn named(provider: &Option<String>) -> &str {
    provider
        .as_deref()
        .and_then(|p| p.split('/').next())
        .unwrap_or("")
}

#[tokio::test]
async fn a_provider_that_fails_before_answering_falls_back_to_the_next_and_the_record_says_so() {
    let second = FakeProvider::start().await.unwrap();
    let first = FakeProvider::start().await.unwrap();
    // Declared out of order: priority decides.
    let router = ProviderRouter::new(vec![
        provider("backup", second.base_url(), &["*"], 2),
        provider("primary", first.base_url(), &["*"], 1),
    ]);
    let answer = router.complete(request("fake/x?tokens=2")).await.unwrap();
    assert_eq!(named(&answer.provider), "primary");
    assert_eq!(second.stats().chat_requests, 0);

    for status in [503, 429] {
        first.fail_chats(Some(status));
        let answer = router.complete(request("fake/x?tokens=2")).await.unwrap();
        assert_eq!(named(&answer.provider), "backup", "{status}");
        let mut stream = router.stream(request("fake/x?tokens=3")).await.unwrap();
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item.unwrap());
        }
        let Some(StreamEvent::Done { provider, .. }) = last else {
            panic!("{last:?}");
        };
        assert_eq!(named(&provider), "backup");
    }
    first.fail_chats(None);

    // Connection refused.
    let router = ProviderRouter::new(vec![
        provider(
            "gone",
            fake_provider::unreachable_base_url().unwrap(),
            &["*"],
            0,
        ),
        provider("backup", second.base_url(), &["*"], 1),
    ]);
    let answer = router.complete(request("fake/x?tokens=2")).await.unwrap();
    assert_eq!(named(&answer.provider), "backup");
}

#[tokio::test]
async fn a_rejected_request_or_a_started_stream_is_never_sent_to_another_provider() {
    let first = FakeProvider::start().await.unwrap();
    let second = FakeProvider::start().await.unwrap();
    let router = ProviderRouter::new(vec![
        provider("primary", first.base_url(), &["*"], 0),
        provider("backup", second.base_url(), &["*"], 1),
    ]);
    let rejected = router.complete(request("fake/x?status=400")).await;
    assert!(
        matches!(rejected, Err(LlmError::Rejected(_))),
        "{rejected:?}"
    );
    let mut stream = router
        .stream(request("fake/x?tokens=6&error_after=2"))
        .await
        .unwrap();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    assert!(matches!(items.last(), Some(Err(LlmError::BrokenStream(_)))));
    assert_eq!(
        items.iter().filter(|i| i.is_ok()).count(),
        2,
        "the partial text"
    );
    assert_eq!(
        second.stats().chat_requests,
        0,
        "nothing went to the backup"
    );
}

#[tokio::test]
async fn models_are_routed_by_pattern_and_the_lists_are_merged() {
    let openai = FakeProvider::start().await.unwrap();
    let local = FakeProvider::start().await.unwrap();
    let mut mine = fake_provider::default_models();
    mine.push(fake_provider::model_entry(
        "llama/3", "Llama 3", "0", "0", 8_192,
    ));
    local.set_models(mine);
    let router = ProviderRouter::new(vec![
        provider("openai", openai.base_url(), &["openai/", "fake/small"], 0),
        // Its own list decides what it serves.
        provider("local", local.base_url(), &[], 1),
    ]);
    let models = router.list_models().await.unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids.iter().filter(|id| **id == "fake/small").count(),
        1,
        "{ids:?}"
    );
    assert!(ids.contains(&"openai/gpt-4o-mini"), "{ids:?}");
    assert!(ids.contains(&"llama/3"), "{ids:?}");

    // A provider whose list fails keeps its last one in the merged list; one that never
    // answered contributes nothing until it does.
    local.fail_models(true);
    let again = router.list_models().await.unwrap();
    assert_eq!(again.len(), models.len());
    let fresh = ProviderRouter::new(vec![
        provider("openai", openai.base_url(), &["openai/", "fake/small"], 0),
        provider("local", local.base_url(), &[], 1),
    ]);
    let partial = fresh.list_models().await.unwrap();
    assert!(partial.iter().all(|m| m.id.as_str() != "llama/3"));
    openai.fail_models(true);
    assert!(fresh.list_models().await.is_err(), "nobody answered");
    local.fail_models(false);
    openai.fail_models(false);

    let answer = router.complete(request("llama/3")).await.unwrap();
    assert_eq!(named(&answer.provider), "local");
    assert_eq!(openai.stats().chat_requests, 0);
    let answer = router.complete(request("fake/small")).await.unwrap();
    assert_eq!(named(&answer.provider), "openai");
}
