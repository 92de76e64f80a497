//! The wire below the APNs pusher: [`ApnsTransport`], a seam one request wide (the autopush-rs
//! pattern) that tests fill with fakes, and [`HttpTransport`], the one that ships. It sends to
//! Apple's host (`api.push.apple.com`, or `api.sandbox.push.apple.com` with `APNS_SANDBOX`) or to
//! a stand-in at `APNS_ENDPOINT`, through the same HTTP/2 client as FCM (h2-shards: sharded
//! connections kept open, PINGed, closed when idle, Apple's stream limit followed, optionally
//! through `HTTPS_PROXY`), with the provider token from [`ProviderToken`].
//!
//! What may change here: the headers sent, and which answers get a second send.

use std::sync::Arc;

use h2_shards::{Http2Client, Http2Error};

use super::ApnsSettings;
use super::provider_token::{Bearer, ProviderToken, Renewal, SigningError};

/// Apple's production host.
pub(crate) const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's development host, for apps signed for development (`APNS_SANDBOX`).
pub(crate) const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// Where pushes go: `APNS_ENDPOINT` when set (a stand-in), else Apple's production or sandbox
/// host.
pub(crate) fn endpoint(settings: &ApnsSettings) -> &str {
    match settings.endpoint.trim() {
        "" if settings.sandbox => SANDBOX,
        "" => PRODUCTION,
        endpoint => endpoint,
    }
}

/// One request to APNs, as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    pub device_token: String,
    pub topic: String,
    /// `apns-push-type`
    pub push_type: &'static str,
    /// `apns-priority`
    pub priority: u8,
    /// `apns-expiration`, unix seconds.
    pub expiration: u64,
    /// `apns-collapse-id`, at most 64 bytes; empty: no header.
    pub collapse_id: String,
    /// The JSON body, shared by every device that gets the same notification.
    pub payload: bytes::Bytes,
}

/// What APNs answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsResponse {
    pub status: u16,
    /// The `reason` of the error body, when APNs sent one.
    pub reason: Option<String>,
    /// For 410: when APNs last confirmed the token invalid, in milliseconds since the epoch.
    pub timestamp_ms: Option<u64>,
}

/// Why a request got no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Connection lost, reset, GOAWAY, timeout: the same request may succeed on another try.
    #[error("no answer")]
    Unanswered(#[from] Http2Error),
    /// The provider token cannot be signed.
    #[error(transparent)]
    Credentials(#[from] SigningError),
    /// Part of the request cannot be put on the wire as it is.
    #[error("the {part} cannot go in a request")]
    Request { part: &'static str },
}

/// The wire below the APNs pusher.
#[async_trait::async_trait]
pub trait ApnsTransport: Send + Sync {
    async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError>;

    /// Opens the connections before a burst (see [`crate::push::Pusher::warm`]).
    async fn warm(&self) {}
}

/// APNs over h2-shards, token-authenticated.
pub struct HttpTransport {
    /// A device goes through the connection its token hashes to, or another up with a stream
    /// free while that one is full.
    client: Arc<Http2Client>,
    token: Arc<ProviderToken>,
}

impl HttpTransport {
    pub fn new(client: Arc<Http2Client>, token: Arc<ProviderToken>) -> Self {
        Self { client, token }
    }

    /// The connections it sends through.
    pub fn client(&self) -> &Http2Client {
        &self.client
    }

    async fn send_with(
        &self,
        request: &ApnsRequest,
        uri: &http::Uri,
        bearer: &Bearer,
    ) -> Result<ApnsResponse, TransportError> {
        let value = |v: &str, part| {
            http::HeaderValue::from_str(v).map_err(|_| TransportError::Request { part })
        };
        let topic = value(&request.topic, "topic")?;
        let collapse_id = value(&request.collapse_id, "collapse id")?;
        let http_request = || {
            let mut http_request = http::Request::new(());
            *http_request.method_mut() = http::Method::POST;
            *http_request.uri_mut() = uri.clone();
            let headers = http_request.headers_mut();
            headers.insert(http::header::AUTHORIZATION, bearer.value.clone());
            headers.insert("apns-topic", topic.clone());
            headers.insert(
                "apns-push-type",
                http::HeaderValue::from_static(request.push_type),
            );
            headers.insert(
                "apns-priority",
                h2_shards::number(u16::from(request.priority).into()),
            );
            headers.insert("apns-expiration", h2_shards::number(request.expiration));
            // An empty id asks for none (a prebuilt payload's); APNs refuses an empty header.
            if !collapse_id.is_empty() {
                headers.insert("apns-collapse-id", collapse_id.clone());
            }
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                http::header::CONTENT_LENGTH,
                h2_shards::number(request.payload.len() as u64),
            );
            http_request
        };
        let shard = request
            .device_token
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let response = self
            .client
            .send(shard, &http_request, request.payload.clone())
            .await?;
        let status = response.status.as_u16();
        if status == 200 {
            return Ok(ApnsResponse {
                status,
                reason: None,
                timestamp_ms: None,
            });
        }
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        Ok(ApnsResponse {
            status,
            reason: body["reason"].as_str().map(str::to_string),
            timestamp_ms: body["timestamp"].as_u64(),
        })
    }
}

#[async_trait::async_trait]
impl ApnsTransport for HttpTransport {
    /// Sends once; an `ExpiredProviderToken` answer renews the token (if Apple's 20 minutes
    /// allow) and sends once more with the new one, at once: the push itself was fine.
    async fn send(&self, request: &ApnsRequest) -> Result<ApnsResponse, TransportError> {
        let uri = self
            .client
            .uri(&format!("/3/device/{}", request.device_token))
            .map_err(|_| TransportError::Request {
                part: "device token",
            })?;
        let bearer = self.token.bearer()?;
        let response = self.send_with(request, &uri, &bearer).await?;
        let expired =
            response.status == 403 && response.reason.as_deref() == Some("ExpiredProviderToken");
        if expired && self.token.expired(&bearer) == Renewal::Renewed {
            let bearer = self.token.bearer()?;
            return self.send_with(request, &uri, &bearer).await;
        }
        Ok(response)
    }

    async fn warm(&self) {
        // As for FCM: every connection up before the burst, and the token signed.
        self.client.warm().await;
        let _ = self.token.bearer();
    }
}
