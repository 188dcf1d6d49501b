//! What the bytes are: the content type sniffed from their start, their size and SHA-256
//! taken as they pass, and the allow-list.

use bytes::BytesMut;
use sha2::{Digest, Sha256};

use crate::s3::StoredObject;

/// How many leading bytes are read to sniff the type before anything is stored.
pub const SNIFF_BYTES: usize = 8192;

/// Fallback for bytes of unknown type.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The content type of bytes that start with `head`.
///
/// The signature in the bytes decides. Only when there is none and the bytes are text is
/// the client's declared type used, and only when it is itself a text type; otherwise text
/// is `text/plain` and anything else `application/octet-stream`. `complete` says whether
/// `head` is the whole content (so a truncated UTF-8 sequence at its end is invalid).
pub fn sniff(head: &[u8], declared: Option<&str>, complete: bool) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    if !is_text(head, complete) {
        return OCTET_STREAM.to_owned();
    }
    match declared.map(essence) {
        Some(declared) if is_text_type(&declared) => declared,
        _ => "text/plain".to_owned(),
    }
}

/// Size, SHA-256 and type of bytes, taken as they pass in order.
#[derive(Debug, Default)]
pub(crate) struct ContentDigest {
    hasher: Sha256,
    head: BytesMut,
    size: u64,
}

impl ContentDigest {
    /// Takes the next bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.hasher.update(bytes);
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
    }

    /// Bytes taken so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// What the bytes were, and their type sniffed (see [`sniff`]) with `declared_type`.
    pub(crate) fn finish(self, declared_type: &str) -> (StoredObject, String) {
        let content_type = sniff(
            &self.head,
            Some(declared_type),
            self.size <= SNIFF_BYTES as u64,
        );
        let stored = StoredObject {
            size: self.size,
            sha256: self.hasher.finalize().into(),
        };
        (stored, content_type)
    }
}

/// The media type without parameters, lower-cased: `Text/CSV; charset=utf-8` → `text/csv`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_text_type(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/json" | "application/xml" | "application/yaml" | "application/x-ndjson"
        )
}

/// UTF-8 without NUL or other control characters than tab, CR, LF and form feed.
fn is_text(head: &[u8], complete: bool) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A multi-byte character cut by the sniffing window is fine; one cut by the end of
        // the content is not.
        Err(error) if error.error_len().is_none() && !complete => {
            match std::str::from_utf8(&head[..error.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

/// The configured allow-list: exact types, `type/*` wildcards, or `*/*`.
#[derive(Clone, Debug)]
pub struct ContentPolicy {
    allowed: Vec<String>,
}

impl ContentPolicy {
    /// A policy allowing `allowed` (as configured in `uploads.allowed_content_types`).
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.iter().map(|t| essence(t)).collect(),
        }
    }

    /// Whether bytes of `content_type` may be stored.
    pub fn allows(&self, content_type: &str) -> bool {
        let content_type = essence(content_type);
        let major = content_type.split('/').next().unwrap_or_default();
        self.allowed.iter().any(|allowed| {
            allowed == "*/*"
                || *allowed == content_type
                || allowed
                    .strip_suffix("/*")
                    .is_some_and(|allowed_major| allowed_major == major)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn a_signature_wins_over_the_declared_type() {
        assert_eq!(sniff(PNG, Some("text/plain"), true), "image/png");
    }

    #[test]
    fn pdf_is_recognised() {
        assert_eq!(sniff(b"%PDF-1.7\n", None, true), "application/pdf");
    }

    #[test]
    fn text_keeps_a_declared_text_type() {
        assert_eq!(
            sniff(b"a,b\n1,2\n", Some("text/csv; charset=utf-8"), true),
            "text/csv"
        );
    }

    #[test]
    fn text_declared_as_an_image_is_plain_text() {
        assert_eq!(sniff(b"hello", Some("image/png"), true), "text/plain");
    }

    #[test]
    fn binary_without_a_signature_is_octet_stream_whatever_was_declared() {
        assert_eq!(
            sniff(&[0, 1, 2, 3, 255], Some("text/plain"), true),
            OCTET_STREAM
        );
    }

    #[test]
    fn a_character_cut_by_the_window_is_still_text() {
        let head = "é".as_bytes();
        assert_eq!(sniff(&head[..1], None, false), "text/plain");
        assert_eq!(sniff(&head[..1], None, true), OCTET_STREAM);
    }

    #[test]
    fn empty_content_is_plain_text() {
        assert_eq!(sniff(b"", None, true), "text/plain");
    }

    #[test]
    fn policy_matches_exact_types_wildcards_and_everything() {
        let policy = ContentPolicy::new(&["image/*".into(), "application/pdf".into()]);
        assert!(policy.allows("image/png"));
        assert!(policy.allows("application/pdf"));
        assert!(!policy.allows("text/plain"));
        assert!(ContentPolicy::new(&["*/*".into()]).allows("application/x-anything"));
    }
}
