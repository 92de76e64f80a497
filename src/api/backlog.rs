//! The backlog of accepted Gaurun notifications: a Redis Stream under the deployment's claims
//! prefix (`{prefix}api:push`), so that what `POST /push` accepted survives a crash and any
//! replica may deliver it. A request's notifications go in all together or not at all, and a full
//! backlog refuses the whole request (503) instead of blocking as Gaurun's queue did.
//!
//! An entry's fields are `provider`, `accepted_at` (Unix seconds: `expiry` counts from it) and
//! `notification` (the request's JSON), read back by [`Accepted::from_entry`] for `deliver`.

use redis::aio::ConnectionManager;
use redis::streams::StreamId;

use super::gaurun::GaurunNotification;
use crate::device::Provider;
use crate::redis_client::Explained;

/// The fields of an entry.
const PROVIDER: &str = "provider";
const ACCEPTED_AT: &str = "accepted_at";
const NOTIFICATION: &str = "notification";
/// The app whose credentials send it; absent in entries of older builds: the default app.
const APP: &str = "app";

/// The backlog's stream under the deployment's claims prefix.
pub(super) fn key(claims_prefix: &str) -> String {
    format!("{claims_prefix}api:push")
}

/// Length check and appends in one script: two requests racing for the last places cannot both
/// get in, and a request is never half written.
const APPEND: &str = r#"
local n = (#ARGV - 3) / 2
if redis.call('XLEN', KEYS[1]) + n > tonumber(ARGV[1]) then
  return false
end
local ids = {}
for i = 0, n - 1 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'provider', ARGV[4 + 2 * i],
    'accepted_at', ARGV[2], 'app', ARGV[3], 'notification', ARGV[5 + 2 * i])
end
return ids
"#;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BacklogError {
    #[error("the backlog holds {max} notifications already")]
    Full { max: usize },
    /// Not a `source`: the message already tells the cause (`Explained`).
    #[error("the backlog in Redis cannot be written: {}", Explained(.0))]
    Redis(redis::RedisError),
    #[error("a notification cannot be encoded")]
    Encode(#[source] serde_json::Error),
}

/// Where accepted notifications wait for delivery.
#[derive(Clone)]
pub(crate) struct Backlog {
    redis: ConnectionManager,
    key: String,
    max: usize,
}

impl Backlog {
    pub(crate) fn new(redis: ConnectionManager, claims_prefix: &str, max: usize) -> Self {
        Self {
            redis,
            key: key(claims_prefix),
            max,
        }
    }

    /// Appends every notification, durably once this returns: the stream entries' ids.
    pub(super) async fn append(
        &self,
        accepted: &[(Provider, GaurunNotification)],
        accepted_at: i64,
        app: &str,
    ) -> Result<Vec<String>, BacklogError> {
        let script = redis::Script::new(APPEND);
        let mut call = script.key(&self.key);
        call.arg(self.max).arg(accepted_at).arg(app);
        for (provider, notification) in accepted {
            let json = serde_json::to_string(notification).map_err(BacklogError::Encode)?;
            call.arg(provider.as_str()).arg(json);
        }
        let ids: Option<Vec<String>> = call
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(BacklogError::Redis)?;
        ids.ok_or(BacklogError::Full { max: self.max })
    }

    /// The most notifications it holds (Gaurun's `queue_max`).
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// How many notifications wait or are being sent (Gaurun's `queue_usage`).
    pub(crate) async fn len(&self) -> Result<usize, BacklogError> {
        redis::AsyncCommands::xlen(&mut self.redis.clone(), &self.key)
            .await
            .map_err(BacklogError::Redis)
    }
}

/// One accepted notification, as the backlog stores it.
#[derive(Debug)]
pub(super) struct Accepted {
    pub(super) provider: Provider,
    pub(super) accepted_at: i64,
    /// The app's name, as the request's route gave it.
    pub(super) app: String,
    pub(super) notification: GaurunNotification,
}

impl Accepted {
    pub(super) fn from_entry(entry: &StreamId) -> Result<Self, String> {
        let provider: String = entry.get(PROVIDER).ok_or("no provider")?;
        let provider = Provider::parse(&provider).ok_or(format!("provider {provider:?}"))?;
        let accepted_at: i64 = entry.get(ACCEPTED_AT).ok_or("no accepted_at")?;
        let json: String = entry.get(NOTIFICATION).ok_or("no notification")?;
        let app: String = entry
            .get(APP)
            .unwrap_or_else(|| crate::apps::DEFAULT_APP.to_string());
        let notification = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        Ok(Self {
            provider,
            accepted_at,
            app,
            notification,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backlog(max: usize) -> Backlog {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let redis = ConnectionManager::new(client).await.unwrap();
        let prefix = format!("test:api:{:016x}:", fastrand::u64(..));
        Backlog::new(redis, &prefix, max)
    }

    fn accepted(message: &str) -> (Provider, GaurunNotification) {
        let n = GaurunNotification {
            token: vec!["t".into()],
            platform: 2,
            message: message.into(),
            ..Default::default()
        };
        (Provider::Fcm, n)
    }

    #[tokio::test]
    async fn a_request_goes_in_whole_or_not_at_all() {
        let b = backlog(3).await;
        let ids = b
            .append(&[accepted("a"), accepted("b")], 100, "default")
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);
        let full = b
            .append(&[accepted("c"), accepted("d")], 100, "default")
            .await;
        assert!(
            matches!(full, Err(BacklogError::Full { max: 3 })),
            "{full:?}"
        );
        assert_eq!(
            b.len().await.unwrap(),
            2,
            "nothing of the refused request was written"
        );
        b.append(&[accepted("c")], 100, "default").await.unwrap();
        let entries: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut b.redis.clone(), &b.key)
                .await
                .unwrap();
        let last = &entries.ids[2];
        assert_eq!(last.get::<String>("provider").as_deref(), Some("fcm"));
        assert_eq!(last.get::<i64>("accepted_at"), Some(100));
        let json: String = last.get("notification").unwrap();
        let back: GaurunNotification = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (back.message.as_str(), back.token),
            ("c", vec!["t".to_string()])
        );
        let _: () = redis::AsyncCommands::del(&mut b.redis.clone(), &b.key)
            .await
            .unwrap();
    }
}
