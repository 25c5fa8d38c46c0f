//! End-to-end tests: the whole server on port 0 over real HTTP, against a real database on
//! each backend.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

mod account;
mod admin;
mod analytics;
mod auth;
mod chats;
mod docs;
mod health;
mod helpers;
mod import;
mod limits;
mod models;
mod openai;
mod presets;
mod security;
mod streaming;
mod templates;
