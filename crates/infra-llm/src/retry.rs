//! Retries of provider calls, as a `tower::retry::Policy` under async-openai's HTTP layer
//! (in place of async-openai's built-in layer, which cannot read OpenRouter's numeric error
//! codes and honours any `Retry-After` without a cap).
//!
//! It sits below the point where a response body is read, so it only ever repeats a request
//! that produced **no answer bytes**: connection errors, 429 and 5xx statuses. A streamed
//! answer that starts and then breaks is never repeated.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest::Response;
use tower::retry::Policy;

/// Exponential backoff with full jitter, honouring a capped `Retry-After`.
#[derive(Debug, Clone)]
pub(crate) struct ProviderRetry {
    /// Retries left for this request.
    pub remaining: u32,
    /// Delay before the first retry (doubled each time).
    pub base: Duration,
    /// Longest single wait, whatever the provider asks for.
    pub max_delay: Duration,
    attempt: u32,
}

impl ProviderRetry {
    pub(crate) const fn new(retries: u32, base: Duration, max_delay: Duration) -> Self {
        Self {
            remaining: retries,
            base,
            max_delay,
            attempt: 0,
        }
    }

    fn delay(&self, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let ceiling = self
            .base
            .saturating_mul(2_u32.saturating_pow(self.attempt))
            .min(self.max_delay);
        // Full jitter: a uniform wait in [0, ceiling], so clients that failed together do
        // not retry together.
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }
}

fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Policy<HttpRequestFactory, Response, OpenAIError> for ProviderRetry {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        _request: &mut HttpRequestFactory,
        result: &mut Result<Response, OpenAIError>,
    ) -> Option<Self::Future> {
        if self.remaining == 0 {
            return None;
        }
        let wait = match result {
            Ok(response) => {
                let status = response.status();
                if status.as_u16() != 429 && !status.is_server_error() {
                    return None;
                }
                retry_after(response)
            }
            Err(OpenAIError::Reqwest(e)) if e.is_connect() => None,
            Err(_) => return None,
        };
        let delay = self.delay(wait);
        self.remaining -= 1;
        self.attempt += 1;
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "retrying provider call"
        );
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, request: &HttpRequestFactory) -> Option<HttpRequestFactory> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_but_never_exceed_the_cap_and_retry_after_is_capped() {
        let mut p = ProviderRetry::new(5, Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..8 {
            p.attempt = attempt;
            let ceiling =
                Duration::from_millis(100 * 2_u64.pow(attempt)).min(Duration::from_secs(2));
            assert!(p.delay(None) <= ceiling);
        }
        assert_eq!(
            p.delay(Some(Duration::from_secs(3_600))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }
}
