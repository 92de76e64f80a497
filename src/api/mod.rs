//! The HTTP API on `NOTIFIER_API_ADDR` (contract §9): Gaurun's routes (`gaurun`, mapped onto the
//! providers' requests by `gaurun_map`) on a listener of their own, apart from `/metrics`, behind
//! the checks of `guard` (bearer tokens, body size, request time); `backlog` is the Redis Stream
//! where accepted notifications are to wait for delivery.
//!
//! This file holds the `[api]` settings and the listener's start and stop; a new route is added
//! in [`router`], its handler in the file of its family of routes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

// Written by POST /push and read by the delivering consumer once that consumer exists; until
// then the route answers 501 rather than accept what nothing would deliver.
#[allow(dead_code)]
mod backlog;
mod events;
mod gaurun;
// Used by the consumer that delivers accepted notifications, which is not built yet; its tests
// pin the JSON the providers will get.
#[allow(dead_code)]
mod gaurun_map;
mod guard;

pub(crate) use events::EventIntake;

/// The `[api]` settings; the address and the tokens come from the environment only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// `NOTIFIER_API_ADDR`; unset: no API.
    #[serde(skip)]
    pub addr: Option<SocketAddr>,
    /// `NOTIFIER_API_TOKENS`.
    #[serde(skip)]
    pub tokens: ApiTokens,
    /// `NOTIFIER_API_ALLOW_UNAUTHENTICATED`: a non-loopback address without tokens.
    #[serde(skip)]
    pub allow_unauthenticated: bool,
    /// Gaurun's `core.notification_max`: notifications in one `POST /push`.
    pub notification_max: usize,
    /// Gaurun's `core.allows_empty_message`.
    pub allow_empty_message: bool,
    /// A larger request body is refused with 413 before it is read whole.
    pub body_limit_bytes: usize,
    /// A request that takes longer (its body included) is answered 503.
    pub request_timeout_secs: u64,
}

impl ApiSettings {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Whether anyone who reaches the address may use the API: no tokens on a non-loopback
    /// address is refused at start-up unless explicitly allowed.
    pub(crate) fn is_open_beyond_loopback(&self) -> bool {
        self.addr.is_some_and(|a| !a.ip().is_loopback()) && self.tokens.is_empty()
    }
}

/// The bearer tokens, kept as digests: the secrets are never printed (`Debug` shows the count),
/// and comparing digests takes the same time wherever a guess differs.
#[derive(Clone, Default)]
pub struct ApiTokens(Arc<[[u8; 32]]>);

impl ApiTokens {
    /// From `a,b,c`; blanks around and between commas are ignored.
    pub(crate) fn parse(list: &str) -> Self {
        let digests: Vec<[u8; 32]> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(digest)
            .collect();
        Self(digests.into())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no token is required, or `presented` is one of them.
    pub(crate) fn admit(&self, presented: Option<&str>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        let presented = digest(presented);
        self.0.contains(&presented)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} set)", self.len())
    }
}

/// What every handler reads: the settings of the API, and where events go (`None`: nowhere
/// durable with this input).
#[derive(Clone)]
pub(crate) struct ApiState {
    settings: Arc<ApiSettings>,
    events: Option<EventIntake>,
}

/// Every route of the API with its checks.
pub(crate) fn router(settings: &ApiSettings, events: Option<EventIntake>) -> Router {
    let state = ApiState {
        settings: Arc::new(settings.clone()),
        events,
    };
    Router::new()
        .route("/push", post(gaurun::push))
        .route("/v1/events", post(events::post))
        .fallback(guard::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .with_state(state)
}

/// Serves until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: ApiSettings,
    events: Option<EventIntake>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, tokens = settings.tokens.len(), "Serving the HTTP API.");
    }
    axum::serve(listener, router(&settings, events))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shipped defaults with `vars` applied, as start-up would load them.
    pub(crate) fn settings(vars: &[(&str, &str)]) -> ApiSettings {
        crate::config::load_with(vars).unwrap().api
    }

    #[test]
    fn tokens_admit_only_their_own_and_never_print() {
        let tokens = ApiTokens::parse(" alpha, ,beta ");
        assert_eq!(tokens.len(), 2);
        assert!(tokens.admit(Some("alpha")) && tokens.admit(Some("beta")));
        assert!(!tokens.admit(Some("alph")) && !tokens.admit(None));
        assert_eq!(format!("{tokens:?}"), "ApiTokens(2 set)");
        assert!(ApiTokens::parse("").admit(None), "no tokens: open");
    }

    #[test]
    fn a_non_loopback_address_needs_tokens_unless_allowed() {
        let open = [("NOTIFIER_API_ADDR", "0.0.0.0:1056")];
        let err = crate::config::load_with(&open).unwrap_err();
        assert_eq!(err.setting, "NOTIFIER_API_ALLOW_UNAUTHENTICATED", "{err}");
        assert!(err.reason.contains("NOTIFIER_API_TOKENS"), "{err}");
        let allowed = [
            ("NOTIFIER_API_ADDR", "0.0.0.0:1056"),
            ("NOTIFIER_API_ALLOW_UNAUTHENTICATED", "true"),
        ];
        assert!(settings(&allowed).is_open_beyond_loopback());
        let with_tokens = [
            ("NOTIFIER_API_ADDR", "0.0.0.0:1056"),
            ("NOTIFIER_API_TOKENS", "t1"),
        ];
        assert!(!settings(&with_tokens).is_open_beyond_loopback());
        let loopback = settings(&[("NOTIFIER_API_ADDR", "127.0.0.1:1056")]);
        assert!(!loopback.is_open_beyond_loopback());
        assert_eq!(settings(&[]).addr, None, "off unless set");
    }

    /// Serves `router` on a free loopback port; the server stops with the test's runtime.
    async fn serve_on_loopback(settings: &ApiSettings, events: Option<EventIntake>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            settings.clone(),
            events,
            CancellationToken::new(),
        ));
        base
    }

    fn client() -> reqwest::Client {
        crate::install_crypto_provider();
        reqwest::Client::new()
    }

    async fn call(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn errors_come_in_each_family_s_format() {
        let mut s = settings(&[("NOTIFIER_API_TOKENS", "secret")]);
        s.body_limit_bytes = 64;
        let base = serve_on_loopback(&s, None).await;
        let c = client();
        let (status, body) = call(c.post(format!("{base}/push"))).await;
        assert_eq!(status, 401);
        assert!(body["message"].is_string(), "{body}");
        let (status, body) = call(c.get(format!("{base}/v1/events/x")).bearer_auth("wrong")).await;
        assert_eq!(status, 401);
        assert!(body["error"].is_string(), "{body}");
        let (status, body) = call(c.get(format!("{base}/v1/nothing")).bearer_auth("secret")).await;
        assert_eq!(
            (status, body),
            (404, serde_json::json!({"error": "no such route"}))
        );
        let push = c.post(format!("{base}/push")).bearer_auth("secret");
        let (status, body) = call(push.try_clone().unwrap().body("{}")).await;
        assert_eq!(status, 400);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Request-body is malformed")
        );
        let (status, body) = call(push.body(vec![b' '; 65])).await;
        assert_eq!(status, 413, "{body}");
    }

    #[tokio::test]
    async fn a_valid_push_is_not_promised_before_delivery_exists() {
        let base = serve_on_loopback(&settings(&[]), None).await;
        let body = r#"{"notifications":[{"token":["t"],"platform":2,"message":"m"}]}"#;
        let (status, reply) = call(client().post(format!("{base}/push")).body(body)).await;
        assert_eq!(status, 501, "{reply}");
    }

    #[tokio::test]
    async fn an_event_is_202_once_on_the_input_stream_and_400_with_its_reason() {
        let local = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let redis = redis::aio::ConnectionManager::new(local).await.unwrap();
        let stream = format!("test:api-events:{:016x}", fastrand::u64(..));
        let intake = EventIntake::new(redis.clone(), &stream);
        let base = serve_on_loopback(&settings(&[]), Some(intake)).await;
        let post = |body: &'static str| client().post(format!("{base}/v1/events")).body(body);
        let (status, body) = call(post(r#"{"talk_id": "42", "event_id": "e-1"}"#)).await;
        assert_eq!(
            (status, body),
            (202, serde_json::json!({"event_id": "e-1"}))
        );
        let entries: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut redis.clone(), &stream)
                .await
                .unwrap();
        let event: String = entries.ids[0].get("event").unwrap();
        let stored = crate::event::TalkPosted::parse(event.as_bytes()).unwrap();
        assert_eq!((stored.talk_id, stored.event_id.as_str()), (42, "e-1"));
        let (status, body) = call(post(r#"{"talk_id": 0}"#)).await;
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("talk_id"),
            "{body}"
        );
        let _: () = redis::AsyncCommands::del(&mut redis.clone(), &stream)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_event_has_nowhere_durable_to_go_with_the_pubsub_input() {
        let base = serve_on_loopback(&settings(&[]), None).await;
        let req = client()
            .post(format!("{base}/v1/events"))
            .body(r#"{"talk_id": 1}"#);
        let (status, body) = call(req).await;
        assert_eq!(status, 501, "{body}");
        assert!(body["error"].as_str().unwrap().contains("NOTIFIER_INPUT"));
    }
}
