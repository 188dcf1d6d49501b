//! Extractors of the caller: [`Reader`] and [`Writer`] decide from the bearer token (and
//! `auth.public_reads`) whether a request may go on, and who makes it.

use actix_web::http::header::{AUTHORIZATION, CacheControl, CacheDirective};
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures::future::LocalBoxFuture;

use crate::auth::{Authenticator, TokenRejected};
use crate::http::error::ApiError;

fn unauthorized(rejected: TokenRejected) -> ApiError {
    ApiError::Unauthorized {
        description: Some(rejected.0),
    }
}

/// The bearer token of a request, if it sent one; a malformed header is an error.
fn bearer(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized(TokenRejected("the Authorization header is malformed")))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(unauthorized(TokenRejected(
            "the Authorization header is not a bearer token",
        ))),
    }
}

fn authenticator(request: &HttpRequest) -> Result<&Authenticator, ApiError> {
    request
        .app_data::<web::Data<Authenticator>>()
        .map(|data| data.get_ref())
        .ok_or(ApiError::Internal("no authenticator configured"))
}

/// What a caller means to do, which decides whether a token is required.
#[derive(Clone, Copy, Debug)]
enum Access {
    Read,
    Write,
}

/// The caller's subject, if it sent a valid token; `Unauthorized` when `access` needs a
/// token and none was sent.
async fn identify(request: &HttpRequest, access: Access) -> Result<Option<String>, ApiError> {
    let authenticator = authenticator(request)?.clone();
    if !authenticator.is_enabled() {
        return Ok(None);
    }
    let subject = match bearer(request)? {
        Some(token) => Some(authenticator.verify(&token).await.map_err(unauthorized)?),
        None => None,
    };
    let token_required = match access {
        Access::Read => !authenticator.public_reads(),
        Access::Write => true,
    };
    if subject.is_none() && token_required {
        return Err(ApiError::Unauthorized { description: None });
    }
    Ok(subject)
}

/// A caller allowed to read: anyone while `auth.public_reads` is on, else a valid token.
#[derive(Debug)]
pub struct Reader {
    public: bool,
}

impl Reader {
    /// How caches may keep what this caller reads: shared caches only when anyone may
    /// read it, and always revalidated (by entity tag) before it is used again.
    pub fn cache_control(&self) -> CacheControl {
        let audience = if self.public {
            CacheDirective::Public
        } else {
            CacheDirective::Private
        };
        CacheControl(vec![audience, CacheDirective::NoCache])
    }

    /// `Cache-Control` for bytes that never change at their URL: kept a year without
    /// asking again, by shared caches too when reads need no token.
    pub fn immutable_cache_control(&self) -> CacheControl {
        let audience = if self.public {
            CacheDirective::Public
        } else {
            CacheDirective::Private
        };
        CacheControl(vec![
            audience,
            CacheDirective::MaxAge(31_536_000),
            CacheDirective::Extension("immutable".into(), None),
        ])
    }
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let public = authenticator(&request)?.public_reads();
            identify(&request, Access::Read)
                .await
                .map(|_| Reader { public })
        })
    }
}

/// A caller allowed to write: a valid token's subject (`None` only while authentication
/// is off).
#[derive(Debug)]
pub struct Writer {
    subject: Option<String>,
}

impl Writer {
    /// The subject, as a new post's author.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Only the author may change a post or its attachments.
    pub fn ensure_author(&self, author: Option<&str>) -> Result<(), ApiError> {
        match &self.subject {
            None => Ok(()),
            Some(subject) if author == Some(subject.as_str()) => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "only the post's author may change it".into(),
            )),
        }
    }
}

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let subject = identify(&request, Access::Write).await?;
            Ok(Writer { subject })
        })
    }
}
