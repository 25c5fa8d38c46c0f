//! `POST /api/v1/import/chatgpt`: a ChatGPT export (`conversations.json` or the export's zip)
//! uploaded as `multipart/form-data` in the field `file`. The upload is streamed to a
//! temporary file — never held in memory — and refused with 413 past the configured size;
//! then every conversation becomes one of the caller's chats.

use std::sync::Arc;

use actix_multipart::{Multipart, MultipartError};
use actix_web::{HttpResponse, web};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use usecase::auth::AuthUseCase;
use usecase::import::{ExportError, ImportError, ImportReport, ImportUseCase};

use crate::auth::CurrentUser;
use crate::error::{ApiError, causes};

/// The bounds of uploads (application data of the route).
#[derive(Debug, Clone)]
pub struct ImportLimits {
    /// The largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Imports running at once; one more answers 429.
    pub running: Arc<Semaphore>,
}

impl ImportLimits {
    /// `max_upload_bytes` per upload, `concurrent` imports at once.
    #[must_use]
    pub fn new(max_upload_bytes: u64, concurrent: usize) -> Self {
        Self {
            max_upload_bytes,
            running: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Export(ExportError::TooLarge(why)) => Self::Validation {
                message: format!("the export is too large: {why}"),
                field: Some("file".into()),
            },
            ImportError::Export(ExportError::Io(cause)) => {
                tracing::error!(error = %causes(cause.as_ref()), "an uploaded export could not be read");
                Self::Internal
            }
            ImportError::Export(other) => Self::Validation {
                message: other.to_string(),
                field: Some("file".into()),
            },
            ImportError::Storage(cause) => Self::from_repo(cause),
            ImportError::UnknownUser => Self::NotFound("user"),
            ImportError::Source(cause) => {
                tracing::error!(error = %causes(cause.as_ref()), "an import source failed");
                Self::Internal
            }
        }
    }
}

/// The form of the upload.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "documents the multipart form; read as a stream")]
struct ExportUpload {
    /// `conversations.json` or the export's zip.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// What an import did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ImportResponse {
    /// Chats created.
    chats: u64,
    /// Conversations already imported before (the same export, again).
    chats_skipped: u64,
    /// Messages stored.
    messages: u64,
    /// What was repaired or left out, one line each (at most 200).
    problems: Vec<String>,
    /// Problems beyond those listed.
    more_problems: u64,
}

impl From<ImportReport> for ImportResponse {
    fn from(r: ImportReport) -> Self {
        Self {
            chats: r.counts.chats,
            chats_skipped: r.counts.chats_skipped,
            messages: r.counts.messages,
            problems: r.problems,
            more_problems: r.more_problems,
        }
    }
}

fn multipart_error(e: &MultipartError) -> ApiError {
    match e {
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible => ApiError::UnsupportedMediaType,
        other => ApiError::Malformed(format!("the multipart body is broken: {other}")),
    }
}

fn storage(e: &std::io::Error) -> ApiError {
    tracing::error!(error = %e, "an upload could not be stored in a temporary file");
    ApiError::Unavailable {
        retry_after_secs: 30,
    }
}

/// Streams the `file` field into a temporary file (deleted when dropped), at most `max`
/// bytes of form in all (other fields count too).
async fn receive(mut form: Multipart, max: u64) -> Result<tempfile::NamedTempFile, ApiError> {
    let mut size = 0u64;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| multipart_error(&e))?;
        if field.name() != Some("file") {
            while let Some(chunk) = field.next().await {
                size += chunk.map_err(|e| multipart_error(&e))?.len() as u64;
                if size > max {
                    return Err(ApiError::PayloadTooLarge);
                }
            }
            continue;
        }
        let stored = tempfile::NamedTempFile::new().map_err(|e| storage(&e))?;
        let mut out = tokio::fs::File::from_std(stored.reopen().map_err(|e| storage(&e))?);
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| multipart_error(&e))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(ApiError::PayloadTooLarge);
            }
            out.write_all(&chunk).await.map_err(|e| storage(&e))?;
        }
        out.flush().await.map_err(|e| storage(&e))?;
        return Ok(stored);
    }
    Err(ApiError::Validation {
        message: "the form has no field `file`".into(),
        field: Some("file".into()),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/import/chatgpt",
    operation_id = "import_chatgpt",
    summary = "Import a ChatGPT export into your chats",
    description = "Every conversation becomes one of your chats: branches kept, the current branch as in ChatGPT, titles and times kept; images, files and tool calls become a line saying what was there. Importing the same export again adds nothing. The whole file is checked first: a truncated or foreign file imports nothing (422). Larger than the configured upload limit: 413.",
    tag = "import",
    request_body(content = ExportUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "What was imported", body = ImportResponse),
        (status = 413, description = "The upload is larger than allowed"),
        (status = 422, description = "Not a ChatGPT export, or a malformed or oversized one"),
        (status = 429, description = "Too many imports are running")
    ),
    security(("bearer" = []))
)]
async fn import_chatgpt<A: AuthUseCase, I: ImportUseCase>(
    caller: CurrentUser<A>,
    imports: web::Data<I>,
    limits: web::Data<ImportLimits>,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    // The upload first (each is bounded in size; a slow one holds no import slot), then a
    // slot for the import itself.
    let upload = receive(form, limits.max_upload_bytes).await?;
    let _running = Arc::clone(&limits.running)
        .try_acquire_owned()
        .map_err(|_| ApiError::RateLimited {
            retry_after_secs: 10,
        })?;
    let report = imports.import_chatgpt(caller.id(), upload.path()).await?;
    Ok(HttpResponse::Ok().json(ImportResponse::from(report)))
}

/// The import routes.
pub fn routes<A: AuthUseCase, I: ImportUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/import/chatgpt", web::post().to(import_chatgpt::<A, I>));
}
