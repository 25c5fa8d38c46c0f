//! The fake provider speaks the protocol and counts what tests rely on.

use std::time::{Duration, Instant};

use fake_provider::FakeProvider;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stream_sends_the_tokens_in_order_then_usage_then_done() {
    let fake = FakeProvider::start().await.unwrap();
    let body = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&chat("fake/x?tokens=3&garbage=1", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(": OPENROUTER PROCESSING"));
    let lines = data_lines(&body);
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "word0 word1 word2");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 3);
    assert_eq!(last["usage"]["prompt_tokens"], 2);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn scripted_errors_fail_the_first_attempts_only() {
    let fake = FakeProvider::start().await.unwrap();
    let c = client();
    let url = format!("{}/chat/completions", fake.base_url());
    let model = "fake/x?status=429&retry_after=2&fail_times=2";
    for _ in 0..2 {
        let r = c.post(&url).json(&chat(model, false)).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], 429);
    }
    let ok: Value = c
        .post(&url)
        .json(&chat(model, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ok["choices"][0]["message"]["content"],
        "word0 word1 word2 word3 word4 word5 word6 word7"
    );
}

#[tokio::test]
async fn in_stream_errors_and_resets_happen_where_scripted() {
    let fake = FakeProvider::start().await.unwrap();
    let c = client();
    let url = format!("{}/chat/completions", fake.base_url());
    let body = c
        .post(&url)
        .json(&chat("fake/x?error_after=2", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = data_lines(&body);
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert_eq!(last["error"]["code"], 502);
    assert!(!body.contains("[DONE]"));

    let reset = c
        .post(&url)
        .json(&chat("fake/x?reset_after=2", true))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    assert!(reset.is_err(), "the body is cut off");
}

#[tokio::test]
async fn connections_and_in_flight_requests_return_to_zero_when_a_client_goes_away() {
    let fake = FakeProvider::start().await.unwrap();
    let c = client();
    let mut response = c
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&chat("fake/x?tokens=1000&token_ms=20", true))
        .send()
        .await
        .unwrap();
    let _first = response.chunk().await.unwrap();
    assert_eq!(fake.stats().in_flight, 1);
    assert_eq!(fake.stats().open_connections, 1);
    drop(response);
    drop(c);
    let start = Instant::now();
    while fake.stats().open_connections != 0 || fake.stats().in_flight != 0 {
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            fake.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.stats().max_in_flight, 1);
}

#[tokio::test]
async fn the_model_list_can_change_and_fail() {
    let fake = FakeProvider::start().await.unwrap();
    let c = client();
    let url = format!("{}/models", fake.base_url());
    let models: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
    fake.set_models(vec![fake_provider::model_entry(
        "a/b", "A B", "0.1", "0.2", 100,
    )]);
    let models: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["pricing"]["prompt"], "0.1");
    fake.fail_models(true);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 500);
    assert_eq!(fake.stats().model_requests, 3);
}
