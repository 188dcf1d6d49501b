//! HTTP details of downloads: `Range`, `If-None-Match` and `Content-Disposition`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What to answer for a `Range` header against content of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeDecision {
    /// 200 with everything (no range, or one we ignore as RFC 9110 allows).
    Full,
    /// 206 with bytes `start..=end`.
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Resolves a single byte range; several ranges or malformed ones are ignored (served in
/// full), as RFC 9110 permits.
pub fn decide_range(header: Option<&str>, size: u64) -> RangeDecision {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return match end.parse::<u64>() {
            Ok(0) => RangeDecision::Unsatisfiable,
            Ok(_) if size == 0 => RangeDecision::Unsatisfiable,
            Ok(length) => RangeDecision::Partial(size - length.min(size), size - 1),
            Err(_) => RangeDecision::Full,
        };
    }
    let Ok(start) = start.parse::<u64>() else {
        return RangeDecision::Full;
    };
    let end = if end.is_empty() {
        None
    } else {
        match end.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            _ => return RangeDecision::Full,
        }
    };
    if start >= size {
        return RangeDecision::Unsatisfiable;
    }
    let last = size - 1;
    RangeDecision::Partial(start, end.map_or(last, |end| end.min(last)))
}

/// Whether `If-None-Match` matches the strong entity tag `etag` (weak comparison, as RFC
/// 9110 requires for this header).
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(header) = header else {
        return false;
    };
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// RFC 5987 `attr-char`: everything else is percent-encoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="ascii fallback"; filename*=UTF-8''percent-encoded`.
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(filename, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_range_is_a_full_response() {
        assert_eq!(decide_range(None, 10), RangeDecision::Full);
    }

    #[test]
    fn first_last_middle_and_suffix_ranges_resolve() {
        assert_eq!(
            decide_range(Some("bytes=0-0"), 10),
            RangeDecision::Partial(0, 0)
        );
        assert_eq!(
            decide_range(Some("bytes=9-9"), 10),
            RangeDecision::Partial(9, 9)
        );
        assert_eq!(
            decide_range(Some("bytes=2-5"), 10),
            RangeDecision::Partial(2, 5)
        );
        assert_eq!(
            decide_range(Some("bytes=-3"), 10),
            RangeDecision::Partial(7, 9)
        );
        assert_eq!(
            decide_range(Some("bytes=4-"), 10),
            RangeDecision::Partial(4, 9)
        );
    }

    #[test]
    fn an_end_past_the_size_is_clamped() {
        assert_eq!(
            decide_range(Some("bytes=5-100"), 10),
            RangeDecision::Partial(5, 9)
        );
        assert_eq!(
            decide_range(Some("bytes=-100"), 10),
            RangeDecision::Partial(0, 9)
        );
    }

    #[test]
    fn a_start_past_the_end_is_unsatisfiable() {
        assert_eq!(
            decide_range(Some("bytes=10-"), 10),
            RangeDecision::Unsatisfiable
        );
        assert_eq!(
            decide_range(Some("bytes=-0"), 10),
            RangeDecision::Unsatisfiable
        );
        assert_eq!(
            decide_range(Some("bytes=0-0"), 0),
            RangeDecision::Unsatisfiable
        );
    }

    #[test]
    fn malformed_or_multiple_ranges_are_ignored() {
        for header in [
            "bytes=a-b",
            "bytes=5-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=",
        ] {
            assert_eq!(
                decide_range(Some(header), 10),
                RangeDecision::Full,
                "{header}"
            );
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = "\"abc\"";
        assert!(none_match(Some("\"abc\""), etag));
        assert!(none_match(Some("W/\"abc\""), etag));
        assert!(none_match(Some("\"x\", \"abc\""), etag));
        assert!(none_match(Some("*"), etag));
        assert!(!none_match(Some("\"x\""), etag));
        assert!(!none_match(None, etag));
    }

    #[test]
    fn disposition_has_an_ascii_fallback_and_an_rfc_5987_name() {
        assert_eq!(
            content_disposition("résumé \"v2\".pdf"),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
    }
}
