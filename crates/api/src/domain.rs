//! Values that validate when parsed, so handlers never hold an invalid one.

use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;

use crate::http::error::ApiError;
use crate::http::problem::FieldError;

/// A post title: 1 to 200 characters, not only whitespace, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostTitle(String);

impl PostTitle {
    /// Validates a title.
    pub fn parse(text: String) -> Result<Self, FieldError> {
        let length = text.chars().count();
        if text.trim().is_empty() {
            return Err(FieldError::new("title", "must not be empty"));
        }
        if length > 200 {
            return Err(FieldError::new(
                "title",
                format!("has {length} characters; at most 200 are allowed"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(FieldError::new(
                "title",
                "must not contain control characters",
            ));
        }
        Ok(Self(text))
    }

    /// The title.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A post body: at most 100,000 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostBody(String);

impl PostBody {
    /// Validates a body.
    pub fn parse(text: String) -> Result<Self, FieldError> {
        let length = text.chars().count();
        if length > 100_000 {
            return Err(FieldError::new(
                "body",
                format!("has {length} characters; at most 100000 are allowed"),
            ));
        }
        Ok(Self(text))
    }

    /// The body.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A client's file name, kept as metadata: 1 to 255 characters, no control characters and
/// no invisible formatting characters (bidi overrides such as U+202E make `exe.txt` read
/// as `txt.exe`); stored NFC-normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    /// Validates and normalises a file name.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let name: String = text.nfc().collect();
        if name.is_empty() {
            return Err(FieldError::new("filename", "must not be empty"));
        }
        // Counted as sent, in characters, as the OpenAPI document's maxLength counts.
        if text.chars().count() > 255 {
            return Err(FieldError::new(
                "filename",
                "must be at most 255 characters",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "filename",
                "must not contain control characters",
            ));
        }
        if name.chars().any(is_invisible_format) {
            return Err(FieldError::new(
                "filename",
                "must not contain invisible formatting characters (bidi controls, zero-width \
                 characters)",
            ));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Unicode format characters (category Cf) that change how a name reads without showing:
/// bidi embeddings, overrides and isolates, zero-width characters, and their kin. The
/// OpenAPI document's filename pattern lists the same ranges.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A page size: 1 to 100, 20 when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    /// Validates `?limit=`.
    pub fn parse(limit: Option<u32>) -> Result<Self, ApiError> {
        match limit.unwrap_or(20) {
            limit @ 1..=100 => Ok(Self(limit)),
            other => Err(ApiError::BadRequest(format!(
                "limit must be between 1 and 100, not {other}"
            ))),
        }
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Parses a path id; a malformed id is a 404, as an unknown one is.
pub fn parse_id<T: FromStr>(text: &str, what: &'static str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::NotFound(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_of_200_characters_is_valid_and_201_is_not() {
        assert!(PostTitle::parse("é".repeat(200)).is_ok());
        assert!(PostTitle::parse("é".repeat(201)).is_err());
    }

    #[test]
    fn a_blank_title_is_invalid() {
        assert!(PostTitle::parse("   ".into()).is_err());
        assert!(PostTitle::parse(String::new()).is_err());
    }

    #[test]
    fn a_body_may_be_empty_but_not_over_100000_characters() {
        assert!(PostBody::parse(String::new()).is_ok());
        assert!(PostBody::parse("a".repeat(100_001)).is_err());
    }

    #[test]
    fn file_names_are_normalised_to_nfc() {
        let decomposed = "e\u{301}t\u{e9}.txt";
        assert_eq!(
            FileName::parse(decomposed).ok().map(|n| n.0).as_deref(),
            Some("\u{e9}t\u{e9}.txt")
        );
    }

    #[test]
    fn file_names_with_control_characters_are_invalid() {
        assert!(FileName::parse("a\nb.txt").is_err());
        assert!(FileName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn file_names_with_bidi_overrides_or_zero_width_characters_are_invalid() {
        for name in [
            "invoice\u{202E}fdp.exe",
            "a\u{200B}b.txt",
            "x\u{2066}y",
            "\u{FEFF}z",
        ] {
            assert!(FileName::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn file_names_over_255_characters_are_invalid() {
        assert!(FileName::parse(&"あ".repeat(256)).is_err());
        assert!(FileName::parse(&"あ".repeat(255)).is_ok());
    }

    #[test]
    fn page_limits_default_to_20_and_stay_within_1_to_100() {
        assert_eq!(PageLimit::parse(None).map(PageLimit::get).ok(), Some(20));
        assert!(PageLimit::parse(Some(0)).is_err());
        assert!(PageLimit::parse(Some(101)).is_err());
    }
}
