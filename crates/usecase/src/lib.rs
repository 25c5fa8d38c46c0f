//! # Arbor's use cases
//!
//! Application services and the ports (traits) they need from the outside world. Adapters
//! (`infra-db`, `infra-llm`) implement the ports; the `api` crate drives the services. No SQL,
//! HTTP or provider type appears here.

pub mod analytics;
pub mod auth;
pub mod catalog;
pub mod chat;
pub mod cluster;
pub mod generation;
pub mod import;
pub mod ports;
pub mod preset;
pub mod template;

#[cfg(feature = "testing")]
pub mod testing;

pub use ports::{BoxError, Entity, RepoError, llm};
