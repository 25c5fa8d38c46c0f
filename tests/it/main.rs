//! End-to-end tests: the whole server on port 0 over real HTTP, against a real database on
//! each backend.

mod health;
mod helpers;
