//! The checks every API request passes before its handler: the bearer token and the request's
//! time limit, and the one place that writes an error in the format of the route's family —
//! `{"message": ...}` on Gaurun's routes (its clients read that key), `{"error": ...}` on the
//! native `/v1/` routes and `/openapi.json`. A new check, or a new family of routes, goes here.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;

/// Which error body a route's clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Gaurun,
    Native,
}

impl Family {
    pub(super) fn of(path: &str) -> Self {
        if path.starts_with("/v1/") || path == "/openapi.json" {
            Family::Native
        } else {
            Family::Gaurun
        }
    }

    pub(super) fn error(self, status: StatusCode, text: impl Into<String>) -> Response {
        let key = match self {
            Family::Gaurun => "message",
            Family::Native => "error",
        };
        (status, Json(json!({ key: text.into() }))).into_response()
    }
}

/// The token first (a stranger learns nothing else), then the handler within the time limit.
/// The console's page is the one exception: it holds no data, and asks for a token itself.
pub(super) async fn check(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/ui" || path.starts_with("/ui/") {
        return next.run(request).await;
    }
    let family = Family::of(path);
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    if !state.settings.tokens.admit(presented) {
        let mut refused = family.error(
            StatusCode::UNAUTHORIZED,
            "a valid Authorization: Bearer token is required",
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    let limit = state.settings.request_timeout();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => family.error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} s", limit.as_secs()),
        ),
    }
}

/// The credentials of `Bearer <token>`; the scheme's name is case-insensitive (RFC 9110 §11.1).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(super) async fn not_found(request: Request) -> Response {
    Family::of(request.uri().path()).error(StatusCode::NOT_FOUND, "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_whatever_its_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc "), Some("abc"));
        assert_eq!(bearer("BEARER   abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
