//! FCM HTTP v1: `POST {FCM_ENDPOINT}/v1/projects/{project}/messages:send`, one message per
//! request, multiplexed over HTTP/2 by one shared client, authorised by an OAuth2 access token
//! minted from the service account.
//!
//! Here: [`FcmPusher`], one push's request and response. [`message`] writes the body,
//! [`tokens`] holds the access tokens, [`classify`] maps failures to what the fan-out does next.

mod classify;
mod message;
mod settings;
mod tokens;

pub(crate) use classify::classify;
pub(crate) use settings::FcmSettings;
pub(crate) use tokens::{AccessTokens, ServiceAccountTokens};

use std::sync::Arc;

use super::http2::Http2Client;
use super::{Push, PushOutcome, Pusher, retry_after};
use classify::{token_failure, transport_failure};
use message::Bodies;

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("cannot read the service account {path}: {source}")]
    ServiceAccount {
        path: String,
        #[source]
        source: gcp_auth::Error,
    },
    #[error("no FCM project: set FCM_PROJECT_ID or use a service account with a project_id")]
    NoProject,
    #[error("FCM_PROJECT_ID {0:?} cannot be part of a URL path")]
    Project(String),
    #[error(transparent)]
    Client(#[from] super::http2::SetupError),
}

/// Sends pushes to FCM.
pub(crate) struct FcmPusher {
    /// A device goes through the connection its id maps to, or another up with a stream free
    /// while that one is full.
    client: Http2Client,
    /// `…/v1/projects/{project}/messages:send`, parsed once.
    uri: http::Uri,
    tokens: Arc<dyn AccessTokens>,
    bodies: Bodies,
}

impl FcmPusher {
    pub(crate) fn new(
        client: Http2Client,
        project: &str,
        tokens: Arc<dyn AccessTokens>,
        settings: &FcmSettings,
        validate_only: bool,
    ) -> Result<Self, FcmError> {
        let uri = client
            .uri(&format!("/v1/projects/{project}/messages:send"))
            .map_err(|_| FcmError::Project(project.to_string()))?;
        Ok(Self {
            // Every push goes to this one path: sent whole once per connection, then as an index.
            client: client.with_fixed_paths(),
            uri,
            tokens,
            bodies: Bodies::new(settings, validate_only),
        })
    }

    /// The request body for one push: the notification's shared body with the device's token
    /// spliced in, so the JSON shared by every device of the event is written once.
    pub(crate) fn body(&self, push: &Push) -> Vec<u8> {
        self.bodies.body(push)
    }
}

#[async_trait::async_trait]
impl Pusher for FcmPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let fetched = match self.tokens.fresh() {
            Some(bearer) => Ok(bearer),
            None => self.tokens.bearer().await,
        };
        let bearer = match fetched {
            Ok(bearer) => bearer,
            Err(e) => return token_failure(e),
        };
        let body = self.body(push);
        let length = body.len();
        let request = || h2_shards::json_post(&self.uri, &bearer, length);
        let key = push.device.id.unsigned_abs();
        let response = match self.client.send(key, &request, body.into()).await {
            Ok(response) => response,
            Err(e) => return transport_failure(&e),
        };
        if response.status.is_success() {
            return PushOutcome::Delivered;
        }
        let after = retry_after(&response.headers);
        classify(response.status.as_u16(), &response.body, after)
    }

    async fn warm(&self) {
        // Every connection up before the burst, and the token too: the burst would otherwise
        // queue behind both. The two at once: the token's fetch (an RSA signature and a round
        // trip) took as long again as the dials after them.
        let _ = tokio::join!(self.client.warm(), self.tokens.bearer());
    }
}
