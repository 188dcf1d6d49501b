//! Cross-origin requests from web pages of the origins in `server.cors_allowed_origins`:
//! the methods and request headers the API takes, and the response headers clients read.
//! A request from any other origin is served as before, without CORS headers, so the
//! service's own page (same origin) works whatever the list says.

use actix_cors::Cors;
use actix_web::http::{Method, Uri};

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: usize = 3600;

/// Request headers a page may send: authentication, bodies, the tus protocol, method
/// override for proxies that pass only GET and POST, and conditional and ranged reads.
const ALLOWED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "x-http-method-override",
    "if-none-match",
    "range",
    "x-request-id",
];

/// Response headers a page may read: where a created resource is, versions, the tus
/// protocol's state, when to retry, request ids and the shape of a download.
const EXPOSED_RESPONSE_HEADERS: &[&str] = &[
    "location",
    "etag",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "retry-after",
    "x-request-id",
    "content-range",
    "content-disposition",
    "accept-ranges",
];

/// The methods the API's routes answer.
const ALLOWED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The CORS policy for `origins`.
pub fn policy(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(ALLOWED_METHODS)
        .allowed_headers(ALLOWED_REQUEST_HEADERS.iter().copied())
        .expose_headers(EXPOSED_RESPONSE_HEADERS.iter().copied())
        .max_age(PREFLIGHT_MAX_AGE_SECS)
        .block_on_origin_mismatch(false)
}

/// Whether `text` is a web origin as browsers send it: `http` or `https`, a host and
/// perhaps a port, nothing else (no path, no user, no wildcard).
pub fn is_origin(text: &str) -> bool {
    let Ok(uri) = text.parse::<Uri>() else {
        return false;
    };
    let (Some(scheme @ ("http" | "https")), Some(authority)) = (uri.scheme_str(), uri.authority())
    else {
        return false;
    };
    // Nothing after the authority: `Uri` reads `https://host` and `https://host/` alike.
    text == format!("{scheme}://{authority}")
        && !authority.host().is_empty()
        && !authority.as_str().contains(['@', '*'])
        && authority.as_str() == authority.as_str().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::is_origin;

    #[test]
    fn an_origin_is_a_scheme_a_host_and_perhaps_a_port() {
        for origin in [
            "https://app.example.com",
            "http://127.0.0.1:5173",
            "http://localhost:3000",
        ] {
            assert!(is_origin(origin), "{origin}");
        }
    }

    #[test]
    fn paths_wildcards_users_and_other_schemes_are_not_origins() {
        for text in [
            "*",
            "https://app.example.com/",
            "https://app.example.com/page",
            "https://*.example.com",
            "https://user@app.example.com",
            "ftp://app.example.com",
            "app.example.com",
            "https://App.Example.com",
            "",
        ] {
            assert!(!is_origin(text), "{text}");
        }
    }
}
