//! The tus 1.0.0 vocabulary the handlers share: its headers, counts and dates, and the
//! `Upload-Metadata` of a creation.

use actix_web::http::header::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use storage::ResumableUpload;

use crate::domain::FileName;
use crate::http::error::ApiError;
use crate::routes::direct_uploads::is_media_type;

use super::TUS_VERSION;

/// Longest `Upload-Metadata` kept.
const MAX_METADATA_BYTES: usize = 4096;

pub(super) fn upload_path(upload: &ResumableUpload) -> String {
    format!("/v1/posts/{}/attachments/tus/{}", upload.post_id, upload.id)
}

/// Refuses a request that does not speak tus 1.0.0.
pub(super) fn require_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match header(headers, "Tus-Resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// A non-negative decimal integer header.
pub(super) fn parse_count(text: &str, name: &str) -> Result<u64, ApiError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest(format!(
            "{name} must be a non-negative integer"
        )));
    }
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{name} is too large")))
}

/// What `Upload-Metadata` says of the file.
#[derive(Debug, PartialEq)]
pub(super) struct UploadMetadata {
    pub(super) filename: FileName,
    pub(super) content_type: Option<String>,
}

impl UploadMetadata {
    /// Reads `key base64,key base64,…`: the file name from `filename` (or `name`), the
    /// declared type from `filetype` (or `type`, `contentType`); other keys are kept
    /// only as sent.
    pub(super) fn parse(header: &str) -> Result<Self, ApiError> {
        let bad = |why: String| ApiError::BadRequest(format!("Upload-Metadata {why}"));
        if header.len() > MAX_METADATA_BYTES {
            return Err(bad(format!("is longer than {MAX_METADATA_BYTES} bytes")));
        }
        let mut filename = None;
        let mut content_type = None;
        let mut keys = Vec::new();
        for pair in header
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(format!(
                    "has a key that is not printable ASCII: `{key}`"
                )));
            }
            if keys.contains(&key) {
                return Err(bad(format!("names `{key}` twice")));
            }
            keys.push(key);
            let decoded = || -> Result<String, ApiError> {
                let bytes = STANDARD
                    .decode(value.trim())
                    .map_err(|_| bad(format!("`{key}` is not base64")))?;
                String::from_utf8(bytes).map_err(|_| bad(format!("`{key}` is not UTF-8")))
            };
            match key {
                "filename" | "name" => filename = Some(decoded()?),
                "filetype" | "type" | "contentType" => content_type = Some(decoded()?),
                _ => {}
            }
        }
        let filename = filename.ok_or_else(|| bad("must carry `filename`".into()))?;
        let filename = FileName::parse(&filename)
            .map_err(|error| bad(format!("filename {}", error.message)))?;
        if let Some(content_type) = &content_type
            && !is_media_type(storage::essence(content_type).as_str())
        {
            return Err(bad(format!(
                "filetype `{content_type}` is not a media type"
            )));
        }
        Ok(Self {
            filename,
            content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use actix_web::http::StatusCode;

    use super::*;

    fn encoded(text: &str) -> String {
        STANDARD.encode(text)
    }

    #[test]
    fn metadata_gives_the_file_name_and_declared_type() {
        let header = format!(
            "filename {},filetype {}",
            encoded("cat.png"),
            encoded("image/png")
        );
        let metadata = UploadMetadata::parse(&header).expect("valid metadata");
        assert_eq!(metadata.filename.as_str(), "cat.png");
        assert_eq!(metadata.content_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn metadata_without_a_file_name_is_refused() {
        let error = UploadMetadata::parse(&format!("filetype {}", encoded("image/png")));
        assert!(matches!(error, Err(ApiError::BadRequest(why)) if why.contains("filename")));
    }

    #[test]
    fn metadata_keys_without_values_and_unknown_keys_are_accepted() {
        let header = format!(
            "is_confidential,relativePath {},name {}",
            encoded("a/b"),
            encoded("b.txt")
        );
        let metadata = UploadMetadata::parse(&header).expect("valid");
        assert_eq!(metadata.filename.as_str(), "b.txt");
    }

    #[test]
    fn metadata_values_must_be_base64() {
        assert!(UploadMetadata::parse("filename not*base64").is_err());
    }

    #[test]
    fn a_key_named_twice_is_refused() {
        let header = format!("filename {},filename {}", encoded("a"), encoded("b"));
        assert!(UploadMetadata::parse(&header).is_err());
    }

    #[test]
    fn offsets_are_plain_decimal_integers() {
        assert_eq!(parse_count("0", "Upload-Offset").ok(), Some(0));
        assert_eq!(
            parse_count("1048576", "Upload-Offset").ok(),
            Some(1_048_576)
        );
        for bad in ["", "-1", "+1", "1.0", " 1", "99999999999999999999999"] {
            assert!(parse_count(bad, "Upload-Offset").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_request_without_the_tus_version_gets_412_naming_it() {
        let error = require_tus(&HeaderMap::new()).expect_err("refused");
        assert_eq!(error.status_code(), StatusCode::PRECONDITION_FAILED);
        let response = error.error_response();
        assert_eq!(
            response
                .headers()
                .get("Tus-Version")
                .and_then(|v| v.to_str().ok()),
            Some(TUS_VERSION)
        );
    }
}
