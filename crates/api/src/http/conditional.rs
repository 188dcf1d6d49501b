//! Conditional and ranged requests, on actix-web's typed headers: what to answer for a
//! `Range`, an `If-None-Match` and an `If-Match`, and the `Content-Disposition` of a
//! download.

use actix_web::HttpResponse;
use actix_web::http::header::{
    CacheControl, Charset, ContentDisposition, DispositionParam, DispositionType, ETag, EntityTag,
    ExtendedValue, IfMatch, IfNoneMatch, Range,
};
use serde::Serialize;

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

/// Resolves a single byte range. Several ranges, other units and malformed headers (which
/// the typed header does not parse) are served in full, as RFC 9110 permits.
pub fn decide_range(range: Option<&Range>, size: u64) -> RangeDecision {
    match range {
        Some(Range::Bytes(specs)) if specs.len() == 1 => {
            match specs[0].to_satisfiable_range(size) {
                Some((start, end)) => RangeDecision::Partial(start, end),
                None => RangeDecision::Unsatisfiable,
            }
        }
        _ => RangeDecision::Full,
    }
}

/// Whether `If-None-Match` matches `etag`, by the weak comparison RFC 9110 requires for
/// this header.
pub fn none_match(header: Option<&IfNoneMatch>, etag: &EntityTag) -> bool {
    match header {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|tag| tag.weak_eq(etag)),
        None => false,
    }
}

/// The entity tag of a post, and of its list of attachments, at `version`: every change
/// to either bumps the version.
pub fn post_etag(version: i64) -> EntityTag {
    EntityTag::new_strong(version.to_string())
}

/// The post versions an `If-Match` accepts: `None` without the header (which the typed
/// header reads as an empty list) or with `*` (any version of a post that exists). Weak
/// tags and tags that are not versions match none, as the strong comparison RFC 9110
/// requires for this header.
pub fn if_match_versions(header: Option<&IfMatch>) -> Option<Vec<i64>> {
    match header {
        Some(IfMatch::Items(tags)) if !tags.is_empty() => Some(
            tags.iter()
                .filter(|tag| !tag.weak)
                .filter_map(|tag| tag.tag().parse().ok())
                .collect(),
        ),
        _ => None,
    }
}

/// A read's response: 304 when `If-None-Match` matches `etag`, else 200 with `body` as
/// JSON; both with the entity tag and `cache_control`.
pub fn conditional_json<T: Serialize>(
    if_none_match: Option<&IfNoneMatch>,
    etag: EntityTag,
    cache_control: CacheControl,
    body: impl FnOnce() -> T,
) -> HttpResponse {
    if none_match(if_none_match, &etag) {
        return HttpResponse::NotModified()
            .insert_header(ETag(etag))
            .insert_header(cache_control)
            .finish();
    }
    HttpResponse::Ok()
        .insert_header(ETag(etag))
        .insert_header(cache_control)
        .json(body())
}

/// `attachment; filename="ascii fallback"; filename*=UTF-8''percent-encoded`.
pub fn content_disposition(filename: &str) -> ContentDisposition {
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
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(fallback),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: filename.as_bytes().to_vec(),
            }),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(header: &str, size: u64) -> RangeDecision {
        decide_range(header.parse::<Range>().ok().as_ref(), size)
    }

    fn matches(header: &str, etag: &EntityTag) -> bool {
        use actix_web::http::header::{Header, HeaderValue, IF_NONE_MATCH};
        use actix_web::test::TestRequest;
        let request = TestRequest::default()
            .insert_header((IF_NONE_MATCH, HeaderValue::from_str(header).expect("ascii")))
            .to_http_request();
        none_match(IfNoneMatch::parse(&request).ok().as_ref(), etag)
    }

    #[test]
    fn no_range_is_a_full_response() {
        assert_eq!(decide_range(None, 10), RangeDecision::Full);
    }

    #[test]
    fn first_last_middle_and_suffix_ranges_resolve() {
        assert_eq!(decide("bytes=0-0", 10), RangeDecision::Partial(0, 0));
        assert_eq!(decide("bytes=9-9", 10), RangeDecision::Partial(9, 9));
        assert_eq!(decide("bytes=2-5", 10), RangeDecision::Partial(2, 5));
        assert_eq!(decide("bytes=-3", 10), RangeDecision::Partial(7, 9));
        assert_eq!(decide("bytes=4-", 10), RangeDecision::Partial(4, 9));
    }

    #[test]
    fn an_end_past_the_size_is_clamped() {
        assert_eq!(decide("bytes=5-100", 10), RangeDecision::Partial(5, 9));
        assert_eq!(decide("bytes=-100", 10), RangeDecision::Partial(0, 9));
    }

    #[test]
    fn a_start_past_the_end_is_unsatisfiable() {
        assert_eq!(decide("bytes=10-", 10), RangeDecision::Unsatisfiable);
        assert_eq!(decide("bytes=-0", 10), RangeDecision::Unsatisfiable);
        assert_eq!(decide("bytes=0-0", 0), RangeDecision::Unsatisfiable);
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
            assert_eq!(decide(header, 10), RangeDecision::Full, "{header}");
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = EntityTag::new_strong("abc".into());
        assert!(matches("\"abc\"", &etag));
        assert!(matches("W/\"abc\"", &etag));
        assert!(matches("\"x\", \"abc\"", &etag));
        assert!(matches("*", &etag));
        assert!(!matches("\"x\"", &etag));
        assert!(!none_match(None, &etag));
    }

    fn versions(header: &str) -> Option<Vec<i64>> {
        use actix_web::http::header::{Header, HeaderValue, IF_MATCH};
        use actix_web::test::TestRequest;
        let request = TestRequest::default()
            .insert_header((IF_MATCH, HeaderValue::from_str(header).expect("ascii")))
            .to_http_request();
        if_match_versions(IfMatch::parse(&request).ok().as_ref())
    }

    #[test]
    fn if_match_names_versions_by_strong_tags_only() {
        assert_eq!(versions("\"3\""), Some(vec![3]));
        assert_eq!(versions("\"3\", \"5\""), Some(vec![3, 5]));
        assert_eq!(versions("W/\"3\""), Some(vec![]));
        assert_eq!(versions("\"abc\""), Some(vec![]));
        assert_eq!(versions("*"), None);
        assert_eq!(if_match_versions(Some(&IfMatch::Items(Vec::new()))), None);
        assert_eq!(if_match_versions(None), None);
    }

    #[test]
    fn a_post_etag_is_its_version() {
        assert_eq!(post_etag(7).to_string(), "\"7\"");
    }

    #[test]
    fn disposition_has_an_ascii_fallback_and_an_rfc_5987_name() {
        let header = content_disposition("résumé \"v2\".pdf").to_string();
        assert!(header.starts_with("attachment; "), "{header}");
        assert!(header.contains("filename=\"r_sum_ _v2_.pdf\""), "{header}");
        assert!(
            header.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"),
            "{header}"
        );
    }
}
