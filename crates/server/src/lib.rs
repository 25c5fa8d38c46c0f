//! # arbor (the server binary's library)
//!
//! Loads configuration, builds the adapters, wires them into the use cases and serves
//! HTTP. The end-to-end tests drive [`startup::Application`] on port 0.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod password;
pub mod startup;
pub mod telemetry;
