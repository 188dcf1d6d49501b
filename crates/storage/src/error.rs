//! The errors of the storage layer, typed so the HTTP layer can map each to one status.

use crate::s3::{ObjectStoreError, PutError};

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// What a lookup was looking for, so a `NotFound` says what was missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    /// A post (also one being deleted).
    Post,
    /// A ready attachment, or its object.
    Attachment,
    /// A pending direct upload.
    Upload,
    /// A size of an image that `media.variants` does not name.
    Variant,
}

impl Entity {
    /// The lowercase name, as in "post not found".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Attachment => "attachment",
            Self::Upload => "upload",
            Self::Variant => "variant",
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The post, attachment or upload does not exist (or is not visible).
    #[error("{0} not found")]
    NotFound(Entity),
    /// A pagination cursor that this service did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The change conflicts with the stored state (a duplicate key, a stale version).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The post is no longer at the version the change was made against.
    #[error("the post changed since that version")]
    StaleVersion,
    /// The content exceeds the configured limit.
    #[error("the file exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The caller did not write the post it wants to change.
    #[error("only the post's author may change it")]
    NotAuthor,
    /// The post has as many attachments as one may.
    #[error("the post has {limit} attachments, as many as one may")]
    TooManyAttachments {
        /// The limit.
        limit: u64,
    },
    /// The sniffed content type is not allowed.
    #[error("content type {content_type} is not allowed")]
    UnsupportedType {
        /// The sniffed type.
        content_type: String,
    },
    /// The attachment is not an image, so it has no variants.
    #[error("the attachment is not an image, so it has no variants")]
    NotAnImage,
    /// Every render turn stayed taken for `media.wait_secs`.
    #[error("every render turn is taken; retry shortly")]
    RenderBusy,
    /// The upload memory an image's decoding needs stayed taken for `media.wait_secs`.
    #[error("the service is at its upload capacity; retry shortly")]
    AtCapacity,
    /// clamd found malware in the file (the signature's name).
    #[error("the file is infected: {signature}")]
    Infected {
        /// The signature clamd matched.
        signature: String,
    },
    /// clamd could not be reached or did not answer within `scan.timeout_secs`.
    #[error("the malware scanner is unavailable: {0}")]
    ScannerUnavailable(String),
    /// An image over the `media.*` limits, or one that does not decode.
    #[error("the image was refused: {0}")]
    ImageRefused(String),
    /// A direct upload does not match what was declared.
    #[error("the upload does not match its declaration: {0}")]
    UploadMismatch(String),
    /// A resumable upload is not at the offset the request starts from.
    #[error("the upload is at offset {offset}, not where this request starts")]
    OffsetMismatch {
        /// The upload's offset.
        offset: u64,
    },
    /// A request carries more bytes than a resumable upload has left.
    #[error("the upload is {length} bytes long; this request goes past its end")]
    BeyondLength {
        /// The upload's length.
        length: u64,
    },
    /// A resumable upload expired (the reaper removes it).
    #[error("the upload expired")]
    UploadExpired,
    /// Another request is writing to the same resumable upload.
    #[error("another request is writing to this upload; retry once it is done")]
    UploadLocked,
    /// The user has as many unfinished resumable uploads as one may.
    #[error("you have {limit} unfinished resumable uploads, as many as one may")]
    TooManyResumableUploads {
        /// The limit.
        limit: u64,
    },
    /// The upload would take its user past their quota.
    #[error(
        "this upload needs {needed} bytes more than you have: you use {used} of your {quota}-byte quota"
    )]
    QuotaExceeded {
        /// Bytes the upload asked for.
        needed: u64,
        /// The quota.
        quota: u64,
        /// Bytes used and reserved already.
        used: u64,
    },
    /// The client's byte stream failed (for example it disconnected).
    #[error("the upload stream failed: {0}")]
    Client(String),
    /// A range outside the object was asked for.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// The work did not finish in its time (a dependency stalled).
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// MongoDB failed.
    #[error("MongoDB: {0}")]
    Database(#[source] mongodb::error::Error),
    /// S3 failed.
    #[error("S3: {0}")]
    Objects(#[source] ObjectStoreError),
}

impl StorageError {
    /// Whether the failure is a dependency being unavailable (worth a retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Database(_) | Self::Objects(_) | Self::TimedOut(_) | Self::ScannerUnavailable(_)
        )
    }
}

impl From<mongodb::error::Error> for StorageError {
    fn from(error: mongodb::error::Error) -> Self {
        if is_duplicate_key(&error) {
            Self::Conflict("a record with the same key exists".into())
        } else {
            Self::Database(error)
        }
    }
}

impl From<ObjectStoreError> for StorageError {
    fn from(error: ObjectStoreError) -> Self {
        match error {
            ObjectStoreError::NotFound => Self::NotFound(Entity::Attachment),
            ObjectStoreError::RangeNotSatisfiable => Self::RangeNotSatisfiable,
            other => Self::Objects(other),
        }
    }
}

impl From<PutError> for StorageError {
    fn from(error: PutError) -> Self {
        match error {
            PutError::TooLarge { limit } => Self::TooLarge { limit },
            PutError::Client(detail) => Self::Client(detail),
            PutError::Backend(error) => error.into(),
        }
    }
}

/// Whether MongoDB refused a write because a unique index already holds the key.
pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(insert) => insert
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => false,
    }
}

/// Whether `error` says the server has no client `bulkWrite`, before anything was written:
/// the driver's refusal for a server older than 8.0, or the server's own `CommandNotFound`.
pub(crate) fn bulk_write_unsupported(error: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    const COMMAND_NOT_FOUND: i32 = 59;
    match error.kind.as_ref() {
        ErrorKind::IncompatibleServer { .. } => true,
        ErrorKind::Command(command) => command.code == COMMAND_NOT_FOUND,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{self, doc};
    use mongodb::error::{CommandError, Error, ErrorKind};

    use super::bulk_write_unsupported;

    fn command_error(code: i32, code_name: &str) -> Error {
        let command: CommandError =
            bson::from_document(doc! { "code": code, "codeName": code_name, "errmsg": "" })
                .expect("a command error");
        Error::from(ErrorKind::Command(command))
    }

    #[test]
    fn a_server_that_does_not_know_the_command_means_no_bulk_write() {
        assert!(bulk_write_unsupported(&command_error(
            59,
            "CommandNotFound"
        )));
    }

    #[test]
    fn a_bulk_write_that_failed_on_its_own_is_not_taken_for_a_missing_command() {
        assert!(!bulk_write_unsupported(&command_error(
            121,
            "DocumentValidationFailure"
        )));
    }
}
