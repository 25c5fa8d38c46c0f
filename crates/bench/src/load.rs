//! The load side: an HTTP client speaking Arbor's API and the provider's, and latency
//! histograms.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies in microseconds.
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|e| unreachable!("3 significant figures: {e}"))
            }),
        )
    }

    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.0.record(micros);
    }

    /// The `q` quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1_000.0
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn merge(&mut self, other: &Self) {
        let _ = self.0.add(&other.0);
    }
}

/// Time to the first token and to the end of one stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    pub first: Duration,
    pub last: Duration,
}

/// A client of Arbor (and of the provider, for the baseline).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .timeout(Duration::from_secs(600))
                .build()?,
            base: base.to_owned(),
        })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {text:.200}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers `name` and returns an access token.
    pub async fn user(&self, name: &str) -> anyhow::Result<String> {
        let credentials = json!({"username": name, "password": "benchmark password"});
        self.post("/api/v1/users", None, &credentials).await?;
        let tokens = self.post("/api/v1/auth/login", None, &credentials).await?;
        tokens["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access token")
    }

    /// A new chat of `token`'s user.
    pub async fn chat(&self, token: &str) -> anyhow::Result<String> {
        let chat = self.post("/api/v1/chats", Some(token), &json!({})).await?;
        chat["uuid"]
            .as_str()
            .map(str::to_owned)
            .context("no chat uuid")
    }

    /// A blocking send; its latency.
    pub async fn send(&self, token: &str, chat: &str, model: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.post(
            &format!("/api/v1/chats/{chat}/messages"),
            Some(token),
            &json!({"content": "benchmark question", "model_id": model}),
        )
        .await?;
        Ok(started.elapsed())
    }

    /// A GET that must succeed: its body.
    async fn get_body(&self, path: &str, token: &str) -> anyhow::Result<bytes::Bytes> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "GET {path}: {status} {:.200}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }

    /// A GET that must succeed, with its JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.get_body(path, token).await?)?)
    }

    /// A GET that must succeed; its latency.
    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.get_body(path, token).await?;
        Ok(started.elapsed())
    }

    /// Streams an answer through Arbor: time to the first `chunk` event and to `[DONE]`.
    pub async fn stream_arbor(
        &self,
        token: &str,
        chat: &str,
        model: &str,
    ) -> anyhow::Result<StreamTiming> {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/api/v1/chats/{chat}/messages/stream", self.base))
            .bearer_auth(token)
            .json(&json!({"content": "benchmark question", "model_id": model}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("stream: {}", response.status());
        }
        timed(response, started, |data| {
            data.contains("\"type\":\"chunk\"")
        })
        .await
    }

    /// The same request straight to the provider: time to the first content and to the end.
    pub async fn stream_direct(&self, model: &str) -> anyhow::Result<StreamTiming> {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/chat/completions", self.base))
            .json(&json!({
                "model": model,
                "stream": true,
                "messages": [{"role": "user", "content": "benchmark question"}],
            }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("provider: {}", response.status());
        }
        timed(response, started, |data| {
            serde_json::from_str::<Value>(data).is_ok_and(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
        })
        .await
    }
}

async fn timed(
    response: reqwest::Response,
    started: Instant,
    is_token: impl Fn(&str) -> bool,
) -> anyhow::Result<StreamTiming> {
    let mut events = Box::pin(response.bytes_stream().eventsource());
    let mut first = None;
    while let Some(event) = events.next().await {
        let event = event.context("a broken event stream")?;
        if first.is_none() && is_token(&event.data) {
            first = Some(started.elapsed());
        }
        if event.data == "[DONE]" {
            break;
        }
        if event.data.contains("\"type\":\"error\"") {
            bail!("stream error: {}", event.data);
        }
    }
    let last = started.elapsed();
    Ok(StreamTiming {
        first: first.context("no token arrived")?,
        last,
    })
}
