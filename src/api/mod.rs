//! The HTTP API on `NOTIFIER_API_ADDR` (contract §9): Gaurun's routes (`gaurun_push` for the
//! request, `gaurun` the notification and its rules, `gaurun_json` how Go read it, `gaurun_map`
//! the providers' requests it becomes, `stat` the figures) and the native ones (`events`: post,
//! status, cancel), on a listener of their own apart from `/metrics`, behind the checks of
//! `guard` (bearer tokens, body size, request time). What they accept is queued durably in Redis
//! before they answer: `backlog` is the stream where Gaurun notifications wait for the worker
//! (`worker::pushes`), `idempotency` the `Idempotency-Key` both honour.
//!
//! This file holds the router and the listener (its settings are `config::ApiSettings`, its
//! limits served by `http_server`); a new route is added in [`router`], its handler in the file
//! of its family of routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

mod backlog;
mod console;
mod events;
mod gaurun;
mod gaurun_json;
mod gaurun_map;
mod gaurun_push;
mod guard;
mod idempotency;
mod stat;

use crate::apps::AppNames;
use crate::config::ApiSettings;
use crate::push::PushLimit;
use crate::work::WorkKeys;
pub(crate) use backlog::{Accepted, Backlog, entries_of};
pub(crate) use console::Console;
pub(crate) use events::EventStore;
pub(crate) use stat::PushStats;

/// What the API's handlers reach beyond their settings, made by the application.
#[derive(Clone)]
pub(crate) struct Services {
    /// Where events go and whose claims they read (`None`: no store).
    pub events: Option<EventStore>,
    /// Where `POST /push` puts what it accepts (`None`: it cannot accept).
    pub backlog: Option<Backlog>,
    /// This process's counts for `/stat/app`.
    pub stats: Arc<PushStats>,
    /// The process's limit of pushes in flight (`/stat/app`, `/config/pushers`).
    pub limit: Option<Arc<PushLimit>>,
    /// The apps `POST /apps/{name}/push` may name.
    pub apps: AppNames,
    /// Where this mode's work lives (`Idempotency-Key` records among it).
    pub keys: WorkKeys,
    /// The dedup window: how long an `Idempotency-Key`'s answer is kept.
    pub window_secs: u64,
    /// What the console reads and sends through (`None`: no console).
    pub console: Option<Console>,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            events: None,
            backlog: None,
            stats: Arc::default(),
            limit: None,
            apps: AppNames::default(),
            keys: WorkKeys::new("notifier:"),
            window_secs: 86_400,
            console: None,
        }
    }
}

/// What every handler reads: the settings of the API and the services.
#[derive(Clone)]
pub(crate) struct ApiState {
    settings: Arc<ApiSettings>,
    events: Option<EventStore>,
    backlog: Option<Backlog>,
    stats: Arc<PushStats>,
    limit: Option<Arc<PushLimit>>,
    apps: AppNames,
    keys: WorkKeys,
    window_secs: u64,
    console: Option<Console>,
}

impl ApiState {
    /// The backlog's limit (`/stat/app`'s `queue_max`, the console's).
    pub(super) fn backlog_max(&self) -> usize {
        self.backlog.as_ref().map_or(0, Backlog::max)
    }
}

/// Every route of the API with its checks.
pub(crate) fn router(settings: &ApiSettings, services: Services) -> Router {
    let state = ApiState {
        settings: Arc::new(settings.clone()),
        events: services.events,
        backlog: services.backlog,
        stats: services.stats,
        limit: services.limit,
        apps: services.apps,
        keys: services.keys,
        window_secs: services.window_secs,
        console: services.console,
    };
    Router::new()
        .route(
            "/push",
            post(gaurun_push::push).fallback(gaurun_push::not_post),
        )
        .route(
            "/apps/{name}/push",
            post(gaurun_push::app_push).fallback(gaurun_push::not_post),
        )
        .route("/stat/app", get(stat::app))
        .route("/stat/go", get(stat::go))
        .route(
            "/config/pushers",
            put(stat::pushers).fallback(stat::not_put),
        )
        .route("/v1/events", post(events::post).get(console::events))
        .route("/v1/deployment", get(console::deployment))
        .route(
            "/v1/pushes/{idempotency_key}",
            axum::routing::delete(events::cancel_pushes),
        )
        .route("/v1/test-push", post(console::test_push))
        .route("/ui", get(console::page))
        .route("/ui/console.js", get(console::script))
        .route("/ui/console.css", get(console::style))
        .route(
            "/v1/events/{event_id}",
            get(events::get).delete(events::delete),
        )
        .route("/openapi.json", get(openapi))
        .fallback(guard::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .with_state(state)
}

/// The API's description, kept in the repo beside the handlers (`openapi.json`).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// Serves until `stop` is cancelled and the requests in hand are answered.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: ApiSettings,
    services: Services,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let limits = settings.listener_limits();
    if let Ok(addr) = listener.local_addr() {
        info!(
            %addr,
            tokens = settings.tokens.len(),
            max_connections = limits.max_connections,
            "Serving the HTTP API."
        );
    }
    let router = router(&settings, services);
    crate::http_server::serve(listener, router, limits, "api", stop).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// The shipped defaults with `vars` applied, as start-up would load them.
    pub(crate) fn settings(vars: &[(&str, &str)]) -> ApiSettings {
        crate::config::load_with(vars).unwrap().api
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
            ("NOTIFIER_API_TOKENS", "t1-0123456789abcdef"),
        ];
        assert!(!settings(&with_tokens).is_open_beyond_loopback());
        let loopback = settings(&[("NOTIFIER_API_ADDR", "127.0.0.1:1056")]);
        assert!(!loopback.is_open_beyond_loopback());
        assert_eq!(settings(&[]).addr, None, "off unless set");
    }

    /// Serves `router` on a free loopback port; the server stops with the test's runtime.
    async fn serve_on_loopback(settings: &ApiSettings, events: Option<EventStore>) -> String {
        let services = Services {
            events,
            ..Services::default()
        };
        serve_services(settings, services).await
    }

    /// Serves `router` with these services on a free loopback port.
    pub(crate) async fn serve_services(settings: &ApiSettings, services: Services) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            settings.clone(),
            services,
            CancellationToken::new(),
        ));
        base
    }

    fn client() -> reqwest::Client {
        crate::install_crypto_provider();
        reqwest::Client::new()
    }

    const SECRET: &str = "secret-0123456789";

    async fn call(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn errors_come_in_each_family_s_format() {
        let mut s = settings(&[("NOTIFIER_API_TOKENS", SECRET)]);
        s.body_limit_bytes = 64;
        let base = serve_on_loopback(&s, None).await;
        let c = client();
        let (status, body) = call(c.post(format!("{base}/push"))).await;
        assert_eq!(status, 401);
        assert!(body["message"].is_string(), "{body}");
        let (status, body) = call(c.get(format!("{base}/v1/events/x")).bearer_auth("wrong")).await;
        assert_eq!(status, 401);
        assert!(body["error"].is_string(), "{body}");
        let (status, body) = call(c.get(format!("{base}/v1/nothing")).bearer_auth(SECRET)).await;
        assert_eq!(
            (status, body),
            (404, serde_json::json!({"error": "no such route"}))
        );
        let (status, body) = call(c.get(format!("{base}/v1/events/%FF")).bearer_auth(SECRET)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].is_string(), "{body}");
        let push = c.post(format!("{base}/push")).bearer_auth(SECRET);
        let (status, body) = call(push.try_clone().unwrap().body("[]")).await;
        assert_eq!(status, 400);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Request-body is malformed")
        );
        let (status, body) = call(push.body(vec![b' '; 65])).await;
        assert_eq!(status, 413, "{body}");
        let (status, body) = call(c.get(format!("{base}/push")).bearer_auth(SECRET)).await;
        assert_eq!(
            (status, body),
            (400, serde_json::json!({"message": "method must be POST"}))
        );
    }

    #[tokio::test]
    async fn a_push_is_200_once_in_the_backlog_and_503_with_retry_after_when_full() {
        let local = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let redis = redis::aio::ConnectionManager::new(local).await.unwrap();
        let keys = WorkKeys::new(&format!("test:api-push:{:016x}:", fastrand::u64(..)));
        let services = Services {
            backlog: Some(Backlog::new(redis.clone(), &keys, 2)),
            keys: keys.clone(),
            ..Services::default()
        };
        let base = serve_services(&settings(&[]), services).await;
        let one = r#"{"notifications":[{"token":["t"],"platform":2,"message":"m"}]}"#;
        let push = || client().post(format!("{base}/push"));
        let (status, reply) = call(push().body(one)).await;
        assert_eq!((status, reply), (200, serde_json::json!({"message": "ok"})));
        let len: usize = redis::AsyncCommands::xlen(&mut redis.clone(), keys.backlog())
            .await
            .unwrap();
        assert_eq!(len, 1, "durable before the 200");
        // The same request again with a key, twice: appended once, answered alike.
        let keyed = || push().header("Idempotency-Key", "req-1").body(one);
        assert_eq!(call(keyed()).await.0, 200);
        assert_eq!(
            call(keyed()).await,
            (200, serde_json::json!({"message": "ok"}))
        );
        let len: usize = redis::AsyncCommands::xlen(&mut redis.clone(), keys.backlog())
            .await
            .unwrap();
        assert_eq!(len, 2, "a repeated Idempotency-Key queues nothing");
        let two = r#"{"notifications":[{"token":["t"],"platform":2,"message":"m"},{"token":["u"],"platform":1,"message":"m"}]}"#;
        let r = push().body(two).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        let reply: serde_json::Value = r.json().await.unwrap();
        assert!(
            reply["message"].as_str().unwrap().contains("backlog"),
            "{reply}"
        );
        let _: () = redis::AsyncCommands::del(&mut redis.clone(), keys.backlog())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_event_is_202_once_on_the_input_stream_then_queued_then_its_claim_s_state() {
        let redis_settings = crate::config::load_with(&[]).unwrap().redis;
        let stream = format!("test:api-events:{:016x}", fastrand::u64(..));
        let prefix = format!("{stream}:claims:");
        let window = Duration::from_secs(60);
        let claims = crate::work::Claims::connect(
            &redis_settings,
            &prefix,
            "t".into(),
            Duration::from_secs(30),
            window,
        )
        .await
        .unwrap();
        let redis = claims.connection().unwrap();
        let keys = claims.keys().clone();
        let intake = EventStore::new(claims, &stream, "notifier");
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
        let status_of = |id: &'static str| client().get(format!("{base}/v1/events/{id}"));
        let (status, body) = call(status_of("e-1")).await;
        assert_eq!(
            (status, &body["state"]),
            (200, &serde_json::json!("queued")),
            "{body}"
        );
        let claim = keys.event("e-1");
        let _: () = redis::AsyncCommands::hset(&mut redis.clone(), &claim, "state", "done")
            .await
            .unwrap();
        let (_, body) = call(status_of("e-1")).await;
        assert_eq!(
            body["state"], "done",
            "the claim record wins once there is one"
        );
        assert_eq!(body["sent"], serde_json::Value::Null, "no counts stored");
        let _: () = redis::AsyncCommands::hset_multiple(
            &mut redis.clone(),
            &claim,
            &[("c:recipients", 3), ("c:sent", 2), ("c:failed", 1)],
        )
        .await
        .unwrap();
        let (_, body) = call(status_of("e-1")).await;
        assert_eq!(
            (
                &body["recipients"],
                &body["sent"],
                &body["failed"],
                &body["pruned"]
            ),
            (&json!(3), &json!(2), &json!(1), &serde_json::Value::Null),
            "{body}"
        );
        // Split into jobs and running: its owner stores the jobs' counts so far with the claim.
        let totals = keys.totals("e-1");
        let _: () = redis::AsyncCommands::hset_multiple(
            &mut redis.clone(),
            &claim,
            &[("state", "running"), ("jobs", "3"), ("c:sent", "500")],
        )
        .await
        .unwrap();
        let (_, body) = call(status_of("e-1")).await;
        assert_eq!(
            (&body["state"], &body["sent"]),
            (&json!("running"), &json!(500)),
            "{body}"
        );
        assert_eq!(call(status_of("e-2")).await.0, 404);
        let (status, body) = call(post(r#"{"talk_id": 0}"#)).await;
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("talk_id"),
            "{body}"
        );
        let _: () = redis::AsyncCommands::del(&mut redis.clone(), &[&stream, &claim, &totals])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_event_without_a_store_is_503_never_accepted() {
        let base = serve_on_loopback(&settings(&[]), None).await;
        let req = client()
            .post(format!("{base}/v1/events"))
            .body(r#"{"talk_id": 1}"#);
        let (status, body) = call(req).await;
        assert_eq!(status, 503, "{body}");
        assert!(body["error"].as_str().unwrap().contains("event store"));
    }

    /// The document describes every route the router serves, and only those.
    #[tokio::test]
    async fn openapi_json_is_served_and_lists_the_routes() {
        let base = serve_on_loopback(&settings(&[]), None).await;
        let (status, doc) = call(client().get(format!("{base}/openapi.json"))).await;
        assert_eq!(status, 200);
        assert_eq!(doc["openapi"], "3.1.0");
        let mut paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/apps/{name}/push",
                "/config/pushers",
                "/openapi.json",
                "/push",
                "/stat/app",
                "/stat/go",
                "/ui",
                "/ui/console.css",
                "/ui/console.js",
                "/v1/deployment",
                "/v1/events",
                "/v1/events/{event_id}",
                "/v1/pushes/{idempotency_key}",
                "/v1/test-push"
            ]
        );
    }
}
