//! The gateway against the fake provider, a real HTTP server speaking the protocol.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{ModelId, Role};
use fake_provider::FakeProvider;
use futures::StreamExt;
use infra_llm::{LlmConfig, OpenAiGateway};
use usecase::llm::{CompletionRequest, LlmError, LlmGateway, PromptMessage, StreamEvent};

fn config(fake: &FakeProvider) -> LlmConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    LlmConfig {
        base_url: fake.base_url(),
        api_key: "sk-test-not-a-real-key".into(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        stream_idle_timeout: Duration::from_secs(5),
        pool_max_idle_per_host: 16,
        http2_prior_knowledge: false,
        max_concurrent_requests: 16,
        queue_timeout: Duration::from_secs(30),
        extra_headers: vec![("X-Title".into(), "Arbor tests".into())],
        max_retries: 3,
        retry_base_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(200),
    }
}

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: ModelId::parse(model).unwrap(),
        messages: vec![
            PromptMessage {
                role: Role::System,
                content: "Be brief.".into(),
            },
            PromptMessage {
                role: Role::User,
                content: "Say hello".into(),
            },
        ],
        temperature: Some(0.3),
        max_tokens: Some(50),
        passthrough: None,
    }
}

async fn collect(gateway: &OpenAiGateway, model: &str) -> Vec<Result<StreamEvent, LlmError>> {
    gateway
        .stream(request(model))
        .await
        .unwrap()
        .collect()
        .await
}

#[tokio::test]
async fn deltas_arrive_in_order_and_end_with_usage_and_finish_reason_despite_garbage() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let items = collect(&gateway, "fake/x?tokens=5&garbage=1").await;
    let (last, deltas) = items.split_last().unwrap();
    let text: String = deltas
        .iter()
        .map(|i| match i {
            Ok(StreamEvent::Delta(d)) => d.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(text, "word0 word1 word2 word3 word4");
    let Ok(StreamEvent::Done {
        finish_reason,
        usage,
        provider,
        cost,
    }) = last
    else {
        panic!("{last:?}");
    };
    assert_eq!(*cost, None, "a reported 0 with tokens used is not a cost");
    assert_eq!(finish_reason.as_deref(), Some("stop"));
    assert_eq!(usage.unwrap().completion_tokens, 5);
    assert_eq!(usage.unwrap().prompt_tokens, 4);
    assert_eq!(provider.as_deref(), Some("FakeUpstream"));
    let sent = &fake.requests()[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert!(
        sent.get("usage").is_none(),
        "OpenRouter's usage field goes to OpenRouter only: {sent}"
    );
}

#[tokio::test]
async fn a_missing_usage_block_is_tolerated() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let items = collect(&gateway, "fake/x?tokens=2&no_usage=1").await;
    assert!(
        matches!(
            items.last(),
            Some(Ok(StreamEvent::Done { usage: None, .. }))
        ),
        "{items:?}"
    );
}

#[tokio::test]
async fn an_error_inside_the_stream_is_an_error_and_is_not_retried() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let items = collect(&gateway, "fake/x?tokens=5&error_after=2").await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(
        matches!(items[2], Err(LlmError::BrokenStream(_))),
        "{items:?}"
    );
    let reset = collect(&gateway, "fake/x?tokens=5&reset_after=2").await;
    assert!(
        matches!(reset.last(), Some(Err(LlmError::BrokenStream(_)))),
        "{reset:?}"
    );
    // The cause is said once ("the answer stream broke: the answer stream broke: …" was
    // a wrapped error wrapped again).
    for failure in [&items[2], reset.last().unwrap()] {
        let text = failure.as_ref().unwrap_err().to_string();
        assert_eq!(text.matches("the answer stream broke").count(), 1, "{text}");
    }
    assert_eq!(
        fake.stats().chat_requests,
        2,
        "never retried after the first byte"
    );
    // A response that ends cleanly without a finish was cut short all the same.
    let ended = collect(&gateway, "fake/x?tokens=5&end_after=2").await;
    assert_eq!(ended.len(), 3, "{ended:?}");
    assert!(
        matches!(&ended[2], Err(LlmError::BrokenStream(why)) if why.contains("without a finish")),
        "{ended:?}"
    );
    // A finish with no usage block is a whole answer.
    let unmetered = collect(&gateway, "fake/x?tokens=2&no_usage=1").await;
    assert!(
        matches!(unmetered.last(), Some(Ok(StreamEvent::Done { .. }))),
        "{unmetered:?}"
    );
    assert_eq!(
        fake.stats().chat_requests,
        4,
        "a stream cut short is not retried either"
    );
}

#[tokio::test]
async fn failures_before_the_first_byte_are_retried_and_classified() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let ok = gateway
        .complete(request(
            "fake/x?status=429&retry_after=0&fail_times=2&tokens=2",
        ))
        .await
        .unwrap();
    assert_eq!(ok.content, "word0 word1");
    assert_eq!(fake.stats().chat_requests, 3);

    let rejected = gateway.complete(request("fake/x?status=400")).await;
    assert!(
        matches!(rejected, Err(LlmError::Rejected(_))),
        "{rejected:?}"
    );
    let before = fake.stats().chat_requests;
    let down = gateway
        .complete(request("fake/x?status=503&retry_after=3600"))
        .await;
    assert!(
        matches!(down, Err(LlmError::Unavailable { .. })),
        "{down:?}"
    );
    assert_eq!(
        fake.stats().chat_requests - before,
        4,
        "1 try + 3 retries, Retry-After capped"
    );
    let before = fake.stats().chat_requests;
    let stream = gateway
        .stream(request("fake/z?status=502&fail_times=1&tokens=2"))
        .await
        .unwrap();
    assert_eq!(stream.collect::<Vec<_>>().await.len(), 3);
    assert_eq!(
        fake.stats().chat_requests - before,
        2,
        "a stream that failed to open is retried"
    );
    let stream = gateway.stream(request("fake/y?status=404")).await.err();
    assert!(matches!(stream, Some(LlmError::Rejected(_))), "{stream:?}");
}

#[tokio::test]
async fn a_silent_stream_fails_after_the_idle_timeout_unless_kept_alive() {
    let fake = FakeProvider::start().await.unwrap();
    let mut cfg = config(&fake);
    cfg.stream_idle_timeout = Duration::from_millis(300);
    let gateway = OpenAiGateway::new(cfg).unwrap();
    let start = Instant::now();
    let items = collect(&gateway, "fake/x?tokens=3&token_ms=3000").await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(items.last(), Some(Err(LlmError::Timeout))),
        "{items:?}"
    );
    // The comments a provider sends while its model thinks keep a stream alive.
    let kept = collect(&gateway, "fake/x?tokens=2&ttft_ms=1200&ping_ms=100").await;
    assert!(
        matches!(kept.last(), Some(Ok(StreamEvent::Done { .. }))),
        "{kept:?}"
    );
}

/// A blocking call sends nothing until the whole answer is ready: only `request_timeout`
/// bounds it, never the stream idle limit.
#[tokio::test]
async fn a_blocking_call_may_take_longer_than_the_stream_idle_limit() {
    let fake = FakeProvider::start().await.unwrap();
    let mut cfg = config(&fake);
    cfg.stream_idle_timeout = Duration::from_millis(300);
    cfg.request_timeout = Duration::from_secs(5);
    let gateway = OpenAiGateway::new(cfg).unwrap();
    let slow = gateway
        .complete(request("fake/x?tokens=3&ttft_ms=1200"))
        .await;
    assert_eq!(slow.unwrap().content, "word0 word1 word2");
    let mut cfg = config(&fake);
    cfg.request_timeout = Duration::from_millis(500);
    let gateway = OpenAiGateway::new(cfg).unwrap();
    let too_slow = gateway
        .complete(request("fake/x?tokens=3&ttft_ms=1200"))
        .await;
    assert!(matches!(too_slow, Err(LlmError::Timeout)), "{too_slow:?}");
}

#[tokio::test]
async fn the_concurrency_cap_is_never_exceeded_by_200_callers() {
    let fake = FakeProvider::start().await.unwrap();
    let mut cfg = config(&fake);
    cfg.max_concurrent_requests = 8;
    let gateway = Arc::new(OpenAiGateway::new(cfg).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let gateway = Arc::clone(&gateway);
            tokio::spawn(async move { collect(&gateway, "fake/x?tokens=3&token_ms=5").await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap().last(),
            Some(Ok(StreamEvent::Done { .. }))
        ));
    }
    assert_eq!(fake.stats().chat_requests, 200);
    assert!(fake.stats().max_in_flight <= 8, "{:?}", fake.stats());
    assert_eq!(gateway.in_flight(), 0);
}

#[tokio::test]
async fn a_caller_that_cannot_get_a_slot_in_time_is_told_to_come_back() {
    let fake = FakeProvider::start().await.unwrap();
    let mut cfg = config(&fake);
    cfg.max_concurrent_requests = 1;
    cfg.queue_timeout = Duration::from_millis(100);
    let gateway = OpenAiGateway::new(cfg).unwrap();
    let _held = gateway
        .stream(request("fake/x?tokens=100&token_ms=50"))
        .await
        .unwrap();
    let second = gateway.stream(request("fake/x")).await.err();
    assert!(
        matches!(
            second,
            Some(LlmError::Unavailable {
                retry_after: Some(_)
            })
        ),
        "{second:?}"
    );
}

#[tokio::test]
async fn dropping_a_stream_releases_the_upstream_connection() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let before = fake.stats().open_connections;
    let mut stream = gateway
        .stream(request("fake/x?tokens=1000&token_ms=20"))
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::Delta(_)))
    ));
    assert_eq!(fake.stats().in_flight, 1);
    drop(stream);
    let start = Instant::now();
    while fake.stats().open_connections > before || fake.stats().in_flight > 0 {
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            fake.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gateway.in_flight(), 0);
}

#[tokio::test]
async fn over_h2c_many_streams_share_one_connection_and_a_dropped_one_is_reset() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(LlmConfig {
        http2_prior_knowledge: true,
        // No idle HTTP/1 connections kept: HTTP/2 must still share its one.
        pool_max_idle_per_host: 0,
        max_concurrent_requests: 300,
        ..config(&fake)
    })
    .unwrap();
    // 200 streams opened at once, each past its first token.
    let mut streams: Vec<_> = futures::future::join_all(
        (0..200).map(|_| gateway.stream(request("fake/x?tokens=1000&token_ms=20"))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    for stream in &mut streams {
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamEvent::Delta(_)))
        ));
    }
    let stats = fake.stats();
    assert_eq!(stats.in_flight, 200, "{stats:?}");
    assert_eq!(stats.http2_chat_requests, 200, "{stats:?}");
    assert_eq!(stats.open_connections, 1, "one connection carries them all");
    // Dropping half of them resets those streams upstream; the connection stays for the rest.
    streams.truncate(100);
    let start = Instant::now();
    while fake.stats().in_flight > 100 {
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            fake.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gateway.in_flight(), 100);
    // The survivors still stream; blocking calls (a client without the streams' read
    // timeout) share one connection of their own.
    assert!(matches!(
        streams[0].next().await,
        Some(Ok(StreamEvent::Delta(_)))
    ));
    for _ in 0..3 {
        let answer = gateway.complete(request("fake/x?tokens=3")).await.unwrap();
        assert_eq!(answer.content, "word0 word1 word2");
    }
    assert_eq!(fake.stats().open_connections, 2);
    drop(streams);
    let start = Instant::now();
    while fake.stats().in_flight > 0 {
        assert!(start.elapsed() < Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_model_list_is_read_with_prices_and_modalities() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let models = gateway.list_models().await.unwrap();
    assert_eq!(models.len(), 3);
    let large = models
        .iter()
        .find(|m| m.id.as_str() == "fake/large")
        .unwrap();
    assert_eq!(large.pricing.prompt.to_string(), "0.000003");
    assert_eq!(large.context_length, Some(128_000));
    assert_eq!(large.input_modalities, ["text"]);
    fake.fail_models(true);
    assert!(matches!(
        gateway.list_models().await,
        Err(LlmError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn a_cost_the_provider_reports_is_read_from_blocking_and_streamed_answers() {
    let fake = FakeProvider::start().await.unwrap();
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let answer = gateway
        .complete(request("fake/x?tokens=3&cost=0.00123"))
        .await
        .unwrap();
    assert_eq!(
        answer.cost.map(|c| c.to_string()).as_deref(),
        Some("0.00123")
    );
    let items = collect(&gateway, "fake/x?tokens=3&cost=0.0000042").await;
    let Some(Ok(StreamEvent::Done { cost, .. })) = items.last() else {
        panic!("{items:?}");
    };
    assert_eq!(cost.map(|c| c.to_string()).as_deref(), Some("0.0000042"));
    let unknown = gateway.complete(request("fake/x?tokens=3")).await.unwrap();
    assert_eq!(unknown.cost, None, "a 0 with tokens used is not a cost");
}

#[tokio::test]
async fn the_context_length_is_read_from_whichever_field_the_provider_uses() {
    let fake = FakeProvider::start().await.unwrap();
    fake.set_models(vec![
        serde_json::json!({"id": "or/model", "top_provider": {"context_length": 32_000}}),
        serde_json::json!({"id": "litellm/model", "max_input_tokens": "16000"}),
        serde_json::json!({"id": "vllm/model", "max_model_len": 4_096}),
        serde_json::json!({"id": "bare/model", "object": "model", "owned_by": "someone"}),
        serde_json::json!({"id": "odd/model", "context_length": "many", "context_window": 8_000}),
    ]);
    let gateway = OpenAiGateway::new(config(&fake)).unwrap();
    let models = gateway.list_models().await.unwrap();
    let context = |id: &str| {
        models
            .iter()
            .find(|m| m.id.as_str() == id)
            .unwrap()
            .context_length
    };
    assert_eq!(context("or/model"), Some(32_000));
    assert_eq!(context("litellm/model"), Some(16_000));
    assert_eq!(context("vllm/model"), Some(4_096));
    assert_eq!(context("bare/model"), None);
    assert_eq!(
        context("odd/model"),
        Some(8_000),
        "an unreadable field is skipped"
    );
}
