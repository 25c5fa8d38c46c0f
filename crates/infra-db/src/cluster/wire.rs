//! The messages replicas exchange, as JSON (the payload of a `NOTIFY`).

use std::time::Duration;

use domain::{ChatId, MessageId, ModelId, Timestamp, TokenUsage, UserId};
use serde::{Deserialize, Serialize};
use usecase::cluster::{Ask, ClusterMessage, ReplicaId};
use usecase::generation::{FinalAnswer, GenerationEvent, GenerationFailure, GenerationStatus};
use usecase::llm::LlmError;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
enum WireAsk {
    Status,
    Cancel,
    Attach { after: Option<u64> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    Ask {
        req: u64,
        #[serde(with = "text")]
        from: u128,
        #[serde(with = "text")]
        chat: u128,
        #[serde(with = "text")]
        user: u128,
        what: WireAsk,
    },
    Reply {
        req: u64,
        status: Option<WireStatus>,
    },
    Event {
        sub: u64,
        #[serde(with = "text")]
        from: u128,
        id: u64,
        event: Option<WireEvent>,
    },
    Detach {
        sub: u64,
        #[serde(with = "text")]
        from: u128,
    },
}

/// 128-bit ids as decimal text: serde's tagged enums cannot buffer 128-bit integers.
mod text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The message as JSON.
pub(super) fn encode(message: &ClusterMessage) -> String {
    let wire = match message {
        ClusterMessage::Ask {
            req,
            from,
            chat,
            user,
            what,
        } => Wire::Ask {
            req: *req,
            from: from.0,
            chat: chat.as_u128(),
            user: user.as_u128(),
            what: match what {
                Ask::Status => WireAsk::Status,
                Ask::Cancel => WireAsk::Cancel,
                Ask::Attach { after } => WireAsk::Attach { after: *after },
            },
        },
        ClusterMessage::Reply { req, status } => Wire::Reply {
            req: *req,
            status: status.as_ref().map(WireStatus::from_status),
        },
        ClusterMessage::Event {
            sub,
            from,
            id,
            event,
        } => Wire::Event {
            sub: *sub,
            from: from.0,
            id: *id,
            event: event.as_ref().map(WireEvent::from_event),
        },
        ClusterMessage::Detach { sub, from } => Wire::Detach {
            sub: *sub,
            from: from.0,
        },
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// The message a JSON text holds (`None` when it holds none).
pub(super) fn decode(text: &str) -> Option<ClusterMessage> {
    Some(match serde_json::from_str(text).ok()? {
        Wire::Ask {
            req,
            from,
            chat,
            user,
            what,
        } => ClusterMessage::Ask {
            req,
            from: ReplicaId(from),
            chat: ChatId::from_u128(chat),
            user: UserId::from_u128(user),
            what: match what {
                WireAsk::Status => Ask::Status,
                WireAsk::Cancel => Ask::Cancel,
                WireAsk::Attach { after } => Ask::Attach { after },
            },
        },
        Wire::Reply { req, status } => ClusterMessage::Reply {
            req,
            status: status.and_then(WireStatus::into_status),
        },
        Wire::Event {
            sub,
            from,
            id,
            event,
        } => ClusterMessage::Event {
            sub,
            from: ReplicaId(from),
            id,
            event: event.and_then(WireEvent::into_event),
        },
        Wire::Detach { sub, from } => ClusterMessage::Detach {
            sub,
            from: ReplicaId(from),
        },
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct WireStatus {
    #[serde(with = "text")]
    message: u128,
    #[serde(with = "text")]
    user_message: u128,
    model: String,
    started_at: i64,
    running: bool,
    characters: usize,
    events: u64,
    outcome: Option<String>,
}

fn outcome(text: Option<&str>) -> Option<&'static str> {
    match text? {
        "complete" => Some("complete"),
        "interrupted" => Some("interrupted"),
        _ => Some("failed"),
    }
}

/// A model id another replica accepted (`None` only if the replicas disagree on what a
/// valid id is: the message is dropped).
fn model(text: &str) -> Option<ModelId> {
    ModelId::parse(text).ok()
}

impl WireStatus {
    fn from_status(s: &GenerationStatus) -> Self {
        Self {
            message: s.message.as_u128(),
            user_message: s.user_message.as_u128(),
            model: s.model.as_str().to_owned(),
            started_at: s.started_at.as_unix_micros(),
            running: s.running,
            characters: s.characters,
            events: s.events,
            outcome: s.outcome.map(str::to_owned),
        }
    }

    fn into_status(self) -> Option<GenerationStatus> {
        Some(GenerationStatus {
            message: MessageId::from_u128(self.message),
            user_message: MessageId::from_u128(self.user_message),
            model: model(&self.model)?,
            started_at: Timestamp::from_unix_micros(self.started_at),
            running: self.running,
            characters: self.characters,
            events: self.events,
            outcome: outcome(self.outcome.as_deref()),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
enum WireEvent {
    Start {
        #[serde(with = "text")]
        user_message: u128,
        #[serde(with = "text")]
        message: u128,
        model: String,
    },
    Chunk {
        text: String,
    },
    Final {
        #[serde(with = "text")]
        message: u128,
        content: String,
        usage: Option<[u64; 3]>,
        model: String,
        finish_reason: Option<String>,
        #[serde(default)]
        stats: Option<WireStats>,
    },
    Error {
        failure: WireFailure,
    },
    Done,
}

/// What a final answer's record adds to its usage and model.
#[derive(Debug, Serialize, Deserialize)]
struct WireStats {
    provider: String,
    cost_pico: i64,
    cost_source: String,
    latency_ms: u64,
    ttft_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
enum WireFailure {
    Rejected { text: String },
    RateLimited { retry_ms: Option<u64> },
    Unavailable { retry_ms: Option<u64> },
    Timeout,
    BrokenStream { text: String },
    Cancelled,
    Deadline,
    ShuttingDown,
    Storage,
    Internal,
    Lost,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl WireFailure {
    fn from_failure(f: &GenerationFailure) -> Self {
        match f {
            GenerationFailure::Provider(e) => match e {
                LlmError::Rejected(text) => Self::Rejected { text: text.clone() },
                LlmError::RateLimited { retry_after } => Self::RateLimited {
                    retry_ms: ms(*retry_after),
                },
                LlmError::Unavailable { retry_after } => Self::Unavailable {
                    retry_ms: ms(*retry_after),
                },
                LlmError::Timeout => Self::Timeout,
                LlmError::BrokenStream(text) => Self::BrokenStream { text: text.clone() },
            },
            GenerationFailure::Cancelled => Self::Cancelled,
            GenerationFailure::Deadline => Self::Deadline,
            GenerationFailure::ShuttingDown => Self::ShuttingDown,
            GenerationFailure::Storage => Self::Storage,
            GenerationFailure::Internal => Self::Internal,
            GenerationFailure::Lost => Self::Lost,
        }
    }

    fn into_failure(self) -> GenerationFailure {
        let provider = GenerationFailure::Provider;
        match self {
            Self::Rejected { text } => provider(LlmError::Rejected(text)),
            Self::RateLimited { retry_ms } => provider(LlmError::RateLimited {
                retry_after: duration(retry_ms),
            }),
            Self::Unavailable { retry_ms } => provider(LlmError::Unavailable {
                retry_after: duration(retry_ms),
            }),
            Self::Timeout => provider(LlmError::Timeout),
            Self::BrokenStream { text } => provider(LlmError::BrokenStream(text)),
            Self::Cancelled => GenerationFailure::Cancelled,
            Self::Deadline => GenerationFailure::Deadline,
            Self::ShuttingDown => GenerationFailure::ShuttingDown,
            Self::Storage => GenerationFailure::Storage,
            Self::Internal => GenerationFailure::Internal,
            Self::Lost => GenerationFailure::Lost,
        }
    }
}

impl WireEvent {
    fn from_event(event: &GenerationEvent) -> Self {
        match event {
            GenerationEvent::Start {
                user_message,
                message,
                model,
            } => Self::Start {
                user_message: user_message.as_u128(),
                message: message.as_u128(),
                model: model.as_str().to_owned(),
            },
            GenerationEvent::Chunk(text) => Self::Chunk { text: text.clone() },
            GenerationEvent::Final(f) => Self::Final {
                message: f.message.as_u128(),
                content: f.content.clone(),
                usage: f
                    .usage
                    .map(|u| [u.prompt_tokens, u.completion_tokens, u.total_tokens]),
                model: f.model.as_str().to_owned(),
                finish_reason: f.finish_reason.clone(),
                stats: f.stats.as_ref().map(|s| WireStats {
                    provider: s.provider.clone(),
                    cost_pico: s.cost.as_pico(),
                    cost_source: s.cost_source.as_str().to_owned(),
                    latency_ms: s.latency_ms,
                    ttft_ms: s.time_to_first_token_ms,
                }),
            },
            GenerationEvent::Error(failure) => Self::Error {
                failure: WireFailure::from_failure(failure),
            },
            GenerationEvent::Done => Self::Done,
        }
    }

    fn into_event(self) -> Option<GenerationEvent> {
        Some(match self {
            Self::Start {
                user_message,
                message,
                model: m,
            } => GenerationEvent::Start {
                user_message: MessageId::from_u128(user_message),
                message: MessageId::from_u128(message),
                model: model(&m)?,
            },
            Self::Chunk { text } => GenerationEvent::Chunk(text),
            Self::Final {
                message,
                content,
                usage,
                model: m,
                finish_reason,
                stats,
            } => {
                let usage = usage.map(|[p, c, t]| TokenUsage {
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: t,
                });
                let model = model(&m)?;
                let stats = match stats {
                    Some(s) => Some(domain::GenerationStats {
                        model: model.clone(),
                        provider: s.provider,
                        usage: usage.unwrap_or_default(),
                        cost: domain::Usd::from_pico(s.cost_pico),
                        cost_source: s.cost_source.parse().ok()?,
                        latency_ms: s.latency_ms,
                        time_to_first_token_ms: s.ttft_ms,
                        finish_reason: finish_reason.clone(),
                    }),
                    None => None,
                };
                GenerationEvent::Final(FinalAnswer {
                    message: MessageId::from_u128(message),
                    content,
                    usage,
                    model,
                    finish_reason,
                    stats,
                })
            }
            Self::Error { failure } => GenerationEvent::Error(failure.into_failure()),
            Self::Done => GenerationEvent::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_the_trip_between_replicas() {
        let events = [
            GenerationEvent::Start {
                user_message: MessageId::from_u128(1),
                message: MessageId::from_u128(u128::MAX),
                model: ModelId::parse("a/b").unwrap(),
            },
            GenerationEvent::Chunk("こんにちは \"x\"\n".into()),
            GenerationEvent::Final(FinalAnswer {
                message: MessageId::from_u128(7),
                content: "all".into(),
                usage: Some(TokenUsage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3,
                }),
                model: ModelId::parse("a/b").unwrap(),
                finish_reason: Some("stop".into()),
                stats: Some(domain::GenerationStats {
                    model: ModelId::parse("a/b").unwrap(),
                    provider: "p/q".into(),
                    usage: TokenUsage {
                        prompt_tokens: 1,
                        completion_tokens: 2,
                        total_tokens: 3,
                    },
                    cost: domain::Usd::from_pico(42),
                    cost_source: domain::CostSource::Provider,
                    latency_ms: 12,
                    time_to_first_token_ms: Some(3),
                    finish_reason: Some("stop".into()),
                }),
            }),
            GenerationEvent::Error(GenerationFailure::Provider(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            })),
            GenerationEvent::Error(GenerationFailure::Cancelled),
            GenerationEvent::Done,
        ];
        for event in events {
            let message = ClusterMessage::Event {
                sub: 3,
                from: ReplicaId(5),
                id: 9,
                event: Some(event),
            };
            assert_eq!(decode(&encode(&message)), Some(message));
        }
        let asks = [
            Ask::Status,
            Ask::Cancel,
            Ask::Attach { after: Some(4) },
            Ask::Attach { after: None },
        ];
        for what in asks {
            let message = ClusterMessage::Ask {
                req: 1,
                from: ReplicaId(u128::MAX),
                chat: ChatId::from_u128(2),
                user: UserId::from_u128(3),
                what,
            };
            assert_eq!(decode(&encode(&message)), Some(message));
        }
        let reply = ClusterMessage::Reply {
            req: 5,
            status: Some(GenerationStatus {
                message: MessageId::from_u128(1),
                user_message: MessageId::from_u128(2),
                model: ModelId::parse("a/b").unwrap(),
                started_at: Timestamp::from_unix_micros(42),
                running: false,
                characters: 7,
                events: 9,
                outcome: Some("interrupted"),
            }),
        };
        assert_eq!(decode(&encode(&reply)), Some(reply));
        assert_eq!(decode("not json"), None);
    }
}
