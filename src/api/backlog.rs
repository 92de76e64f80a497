//! The backlog of accepted Gaurun notifications: a Redis Stream of the deployment's work in this
//! send mode (`{work prefix}api:push`), so that what `POST /push` accepted survives a crash and
//! any replica of the mode may deliver it (`worker::pushes`). A request's notifications go in all
//! together or not at all, and a full backlog refuses the whole request (503) instead of
//! blocking as Gaurun's queue did.
//!
//! A request with an `Idempotency-Key` is appended once: the same script that appends it keeps
//! its answer for the dedup window, and a request repeating the key gets that answer and appends
//! nothing (a client that retries after a timeout or an ambiguous 503 never sends twice).
//!
//! An entry's fields are `provider`, `accepted_at` (Unix seconds: `expiry` counts from it), `app`
//! and `notification` (the request's JSON), read back by [`Accepted::from_entry`].

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use super::gaurun::GaurunNotification;
use crate::device::Provider;
use crate::push::Prebuilt;
use crate::redis_client::Explained;
use crate::work::WorkKeys;
use crate::work::stream::Entry;

/// The fields of an entry.
const PROVIDER: &str = "provider";
const ACCEPTED_AT: &str = "accepted_at";
const NOTIFICATION: &str = "notification";
/// The app whose credentials send it; absent in entries of older builds: the default app.
const APP: &str = "app";

/// `append(stream [, seen, entries]; max, accepted_at, app, answer, window_s, provider, json, …)`:
/// the key seen before gives its answer back and appends nothing; a backlog without room for the
/// whole request takes none of it; otherwise every notification is appended (and the key's
/// answer and the entries it queued kept, so that a cancel can find them) in this one step, so
/// two requests racing for the last places cannot both get in.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if KEYS[2] then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {'seen', seen} end
end
local n = (#ARGV - 5) / 2
if redis.call('XLEN', KEYS[1]) + n > tonumber(ARGV[1]) then
  return {'full'}
end
local out = {'appended'}
for i = 0, n - 1 do
  out[#out + 1] = redis.call('XADD', KEYS[1], '*', 'provider', ARGV[6 + 2 * i],
    'accepted_at', ARGV[2], 'app', ARGV[3], 'notification', ARGV[7 + 2 * i])
end
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
  for i = 2, #out do redis.call('RPUSH', KEYS[3], out[i]) end
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return out
"#,
    )
});

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

/// What appending a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Appended now: the entries' ids.
    New(Vec<String>),
    /// Its `Idempotency-Key` was seen within the dedup window: the first request's answer, and
    /// nothing appended.
    Repeated(String),
}

/// What a request's `Idempotency-Key` keeps: its record's key, the answer to give again, and
/// for how long.
pub(crate) struct Idempotent<'a> {
    pub key: String,
    pub answer: &'a str,
    pub window_secs: u64,
}

/// Where accepted notifications wait for delivery.
#[derive(Clone)]
pub(crate) struct Backlog {
    redis: ConnectionManager,
    key: String,
    max: usize,
}

impl Backlog {
    pub(crate) fn new(redis: ConnectionManager, keys: &WorkKeys, max: usize) -> Self {
        Self {
            redis,
            key: keys.backlog(),
            max,
        }
    }

    /// Appends every notification, durably once this returns (or repeats a seen key's answer).
    pub(super) async fn append(
        &self,
        accepted: &[(Provider, GaurunNotification)],
        (accepted_at, app): (i64, &str),
        idempotent: Option<Idempotent<'_>>,
    ) -> Result<Appended, BacklogError> {
        let mut call = APPEND.prepare_invoke();
        call.key(&self.key);
        let (answer, window) = match &idempotent {
            Some(i) => {
                call.key(&i.key).key(entries_of(&i.key));
                (i.answer, i.window_secs)
            }
            None => ("", 0),
        };
        call.arg(self.max)
            .arg(accepted_at)
            .arg(app)
            .arg(answer)
            .arg(window);
        for (provider, notification) in accepted {
            let json = serde_json::to_string(notification).map_err(BacklogError::Encode)?;
            call.arg(provider.as_str()).arg(json);
        }
        let reply: Vec<String> = call
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(BacklogError::Redis)?;
        match reply.split_first() {
            Some((verdict, rest)) if verdict == "appended" => Ok(Appended::New(rest.to_vec())),
            Some((verdict, [answer])) if verdict == "seen" => {
                Ok(Appended::Repeated(answer.clone()))
            }
            _ => Err(BacklogError::Full { max: self.max }),
        }
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

/// Where a request's `Idempotency-Key` keeps the backlog entries it queued.
pub(crate) fn entries_of(idempotency: &str) -> String {
    format!("{idempotency}:entries")
}

/// One accepted notification, as the backlog stores it.
#[derive(Debug)]
pub(crate) struct Accepted {
    provider: Provider,
    accepted_at: i64,
    /// The app's name, as the request's route gave it.
    app: String,
    notification: GaurunNotification,
}

impl Accepted {
    pub(crate) fn from_entry(entry: &Entry) -> Result<Self, String> {
        let provider = entry.text(PROVIDER).ok_or("no provider")?;
        let provider = Provider::parse(&provider).ok_or(format!("provider {provider:?}"))?;
        let accepted_at = entry.text(ACCEPTED_AT).ok_or("no accepted_at")?;
        let accepted_at = accepted_at.parse().map_err(|_| "accepted_at is no time")?;
        let json = entry.text(NOTIFICATION).ok_or("no notification")?;
        let app = entry
            .text(APP)
            .unwrap_or_else(|| crate::apps::DEFAULT_APP.to_string());
        let notification = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        Ok(Self {
            provider,
            accepted_at,
            app,
            notification,
        })
    }

    pub(crate) fn provider(&self) -> Provider {
        self.provider
    }

    pub(crate) fn app(&self) -> &str {
        &self.app
    }

    pub(crate) fn tokens(&self) -> &[String] {
        &self.notification.token
    }

    /// The caller's `identifier`: what every log line about the notification's tokens carries.
    pub(crate) fn identifier(&self) -> &str {
        &self.notification.identifier
    }

    /// The request every token of it gets.
    pub(crate) fn prebuilt(&self) -> Result<Prebuilt, serde_json::Error> {
        super::gaurun_map::prebuilt(&self.notification, self.provider, self.accepted_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backlog(max: usize) -> Backlog {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let redis = ConnectionManager::new(client).await.unwrap();
        let keys = WorkKeys::new(&format!("test:api:{:016x}:", fastrand::u64(..)));
        Backlog::new(redis, &keys, max)
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
        let at = (100, "default");
        let appended = b.append(&[accepted("a"), accepted("b")], at, None).await;
        assert!(matches!(appended, Ok(Appended::New(ids)) if ids.len() == 2));
        let full = b.append(&[accepted("c"), accepted("d")], at, None).await;
        assert!(
            matches!(full, Err(BacklogError::Full { max: 3 })),
            "{full:?}"
        );
        assert_eq!(
            b.len().await.unwrap(),
            2,
            "nothing of the refused request was written"
        );
        b.append(&[accepted("c")], at, None).await.unwrap();
        let entries: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut b.redis.clone(), &b.key)
                .await
                .unwrap();
        let last = Entry {
            id: entries.ids[2].id.clone(),
            fields: entries.ids[2].map.clone(),
            taken_over: false,
        };
        let back = Accepted::from_entry(&last).unwrap();
        assert_eq!(
            (back.provider(), back.accepted_at, back.app()),
            (Provider::Fcm, 100, "default")
        );
        assert_eq!(
            (back.notification.message.as_str(), back.tokens()),
            ("c", &["t".to_string()][..])
        );
        let _: () = redis::AsyncCommands::del(&mut b.redis.clone(), &b.key)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_gets_the_first_answer_and_appends_nothing() {
        let b = backlog(10).await;
        let key = format!("{}:idem", b.key);
        let once = |answer| Idempotent {
            key: key.clone(),
            answer,
            window_secs: 60,
        };
        let first = b
            .append(&[accepted("a")], (1, "default"), Some(once("first")))
            .await;
        assert!(matches!(first, Ok(Appended::New(_))), "{first:?}");
        let again = b
            .append(&[accepted("a")], (2, "default"), Some(once("second")))
            .await;
        assert_eq!(again.unwrap(), Appended::Repeated("first".into()));
        assert_eq!(b.len().await.unwrap(), 1);
        let _: () = redis::AsyncCommands::del(&mut b.redis.clone(), &[&b.key, &key])
            .await
            .unwrap();
    }
}
