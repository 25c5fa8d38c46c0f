//! The single place where database errors become the ports' vocabulary.

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr, SqlErr};
use usecase::{Entity, RepoError};

/// Whether a driver error means "the database is not reachable or is busy right now".
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            Some("5" | "6" | "262" | "517")
            // SQLSTATE (PostgreSQL and MySQL): serialization failure or deadlock, too many
            // connections, server shutting down or starting.
            | Some("40001" | "40P01" | "53300" | "08004" | "57P01" | "57P02" | "57P03")
        ),
        _ => false,
    }
}

fn runtime_is_transient(err: &RuntimeErr) -> bool {
    match err {
        RuntimeErr::SqlxError(e) => is_transient(e),
        RuntimeErr::Internal(_) => false,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Translates a sea-orm error. Unique-key violations become [`RepoError::Conflict`] with
/// `conflict` as the reason; foreign-key violations become [`RepoError::NotFound`] of
/// `missing` (the record the key points at).
pub(crate) fn classify(err: DbErr, conflict: &'static str, missing: Entity) -> RepoError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => return RepoError::Conflict(conflict),
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => return RepoError::NotFound(missing),
        _ => {}
    }
    to_repo_error(err)
}

/// Translates a sea-orm error with no constraint expected.
pub(crate) fn to_repo_error(err: DbErr) -> RepoError {
    let transient = match &err {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(e) | DbErr::Exec(e) | DbErr::Query(e) => runtime_is_transient(e),
        _ => false,
    };
    if transient {
        RepoError::Unavailable(Box::new(err))
    } else {
        RepoError::Unexpected(Box::new(err))
    }
}

/// Translates a driver error (the PostgreSQL coordination adapter talks to the driver).
pub(crate) fn from_sqlx(err: sqlx::Error) -> RepoError {
    if is_transient(&err) {
        RepoError::Unavailable(Box::new(err))
    } else {
        RepoError::Unexpected(Box::new(err))
    }
}

/// A stored value that does not parse as a domain value.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt(format!("invalid stored value: {what}").into())
}
