//! `[import]`: how large an import may be and how many run at once.

use serde::{Deserialize, Serialize};

/// Bounds of imports.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSettings {
    /// The largest upload to `POST /api/v1/import/chatgpt`, in MiB (larger ones get 413).
    pub max_upload_mb: u64,
    /// The largest `conversations.json`, in MiB: as uploaded, or once inflated from a zip.
    pub max_expanded_mb: u64,
    /// Imports running at once in this process (more get 429).
    pub concurrent: usize,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_upload_mb: 64,
            max_expanded_mb: 512,
            concurrent: 2,
        }
    }
}

impl ImportSettings {
    /// [`ImportSettings::max_upload_mb`] in bytes.
    #[must_use]
    pub const fn max_upload_bytes(&self) -> u64 {
        self.max_upload_mb.saturating_mul(1 << 20)
    }

    /// [`ImportSettings::max_expanded_mb`] in bytes.
    #[must_use]
    pub const fn max_expanded_bytes(&self) -> u64 {
        self.max_expanded_mb.saturating_mul(1 << 20)
    }
}
