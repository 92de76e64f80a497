//! `notifier check`: loads and checks everything the worker will use (database, Redis, each app's
//! FCM token, APNs key and VAPID key) and prints the effective settings with secrets masked.
//!
//! Each check prints one `ok`/`FAILED` line; the output is read by people and by the CLI tests.

use anyhow::Context;

use crate::config::{ApnsSettings, FcmSettings, Settings, WebPushSettings, redact_url};
use crate::push::fcm::{AccessTokens, ServiceAccountTokens};
use crate::redis_client::Explained;

pub(super) async fn check(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "Effective settings (secrets masked):\n{}",
        settings.describe()
    );
    // What this replica reads in Redis, each stream with its group: what an autoscaler watches.
    println!("Work in Redis ({} mode):", settings.send_mode.as_str());
    println!("work prefix = {}", settings.work_prefix());
    for (role, key, group) in settings.work_streams() {
        println!("stream {role} = {key} (group {group})");
    }
    let mut failures = Vec::new();
    let mut report = |what: &str, result: anyhow::Result<String>| match result {
        Ok(detail) => println!("ok      {what}: {detail}"),
        Err(e) => {
            println!("FAILED  {what}: {e:#}");
            failures.push(what.to_string());
        }
    };
    report("database (DATABASE_URL)", database(settings).await);
    report("Redis (REDIS_URL)", redis(settings).await);
    durability(settings).await;
    match &settings.fcm {
        f if f.is_configured() => report(
            "FCM (GOOGLE_APPLICATION_CREDENTIALS)",
            fcm(settings, f).await,
        ),
        _ => println!("-       FCM: not configured (GOOGLE_APPLICATION_CREDENTIALS unset)"),
    }
    match &settings.apns {
        a if a.is_configured() => report("APNs (APNS_KEY_PATH)", apns(settings, a)),
        _ => println!("-       APNs: not configured (APNS_KEY_PATH unset)"),
    }
    match &settings.webpush {
        w if w.is_configured() => report(
            "Web Push (WEBPUSH_VAPID_PRIVATE_KEY_PATH)",
            webpush(settings, w),
        ),
        _ => println!("-       Web Push: not configured (WEBPUSH_VAPID_PRIVATE_KEY_PATH unset)"),
    }
    // Each further app by name, so the line that fails says which app's section to fix.
    for app in &settings.apps {
        let name = &app.name;
        if let Some(f) = &app.fcm {
            report(
                &format!("app {name}: FCM ([apps.{name}.fcm])"),
                fcm(settings, f).await,
            );
        }
        if let Some(a) = &app.apns {
            report(
                &format!("app {name}: APNs ([apps.{name}.apns])"),
                apns(settings, a),
            );
        }
        if let Some(w) = &app.webpush {
            report(
                &format!("app {name}: Web Push ([apps.{name}.webpush])"),
                webpush(settings, w),
            );
        }
    }
    anyhow::ensure!(failures.is_empty(), "check failed: {}", failures.join(", "));
    println!("All checks passed ({} mode).", settings.send_mode.as_str());
    Ok(())
}

async fn database(settings: &Settings) -> anyhow::Result<String> {
    let db = super::connect(settings).await?;
    db.ping().await?;
    crate::database::Queries::prepare(&settings.queries, db.backend())?;
    let backend = db.backend().name();
    db.close().await;
    Ok(format!("{backend} reachable, queries prepared"))
}

async fn redis(settings: &Settings) -> anyhow::Result<String> {
    let client = crate::redis_client::open(&settings.redis)?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    let pong = tokio::time::timeout(settings.redis.timeout(), ping)
        .await
        .context("no answer in time")?
        .map_err(|e| anyhow::anyhow!("{}", Explained(&e)))?;
    Ok(format!("{pong} from {}", redact_url(&settings.redis.url)))
}

/// What Redis keeps across a restart and under memory pressure, as the claims, the job stream
/// and the push backlog need it (contract §11): one line of what it is, and a `WARN` line for
/// each way queued work or claims could be lost. Warnings do not fail the check: a cache run
/// without persistence is a choice, but it should be a known one.
async fn durability(settings: &Settings) {
    match redis_config(settings).await {
        Ok(config) => {
            println!("ok      Redis durability: {}", config.describe());
            for warning in config.warnings() {
                println!("WARN    Redis durability: {warning}");
            }
        }
        Err(e) => println!(
            "WARN    Redis durability: cannot read CONFIG ({e:#}); make sure the server keeps an AOF and does not evict keys (maxmemory-policy noeviction)"
        ),
    }
}

/// The settings of Redis that decide what survives a restart or memory pressure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Durability {
    appendonly: bool,
    appendfsync: String,
    /// RDB snapshot rules (`save`); empty: none.
    save: String,
    maxmemory_policy: String,
    maxmemory: u64,
}

async fn redis_config(settings: &Settings) -> anyhow::Result<Durability> {
    let client = crate::redis_client::open(&settings.redis)?;
    let read = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut get = async |name: &str| -> redis::RedisResult<String> {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await?;
            Ok(pair.get(1).cloned().unwrap_or_default())
        };
        Ok::<_, redis::RedisError>(Durability {
            appendonly: get("appendonly").await? == "yes",
            appendfsync: get("appendfsync").await?,
            save: get("save").await?,
            maxmemory_policy: get("maxmemory-policy").await?,
            maxmemory: get("maxmemory").await?.parse().unwrap_or(0),
        })
    };
    tokio::time::timeout(settings.redis.timeout(), read)
        .await
        .context("no answer in time")?
        .map_err(|e| anyhow::anyhow!("{}", Explained(&e)))
}

impl Durability {
    fn describe(&self) -> String {
        let aof = match self.appendonly {
            true => format!("appendonly yes (appendfsync {})", self.appendfsync),
            false => "appendonly no".to_string(),
        };
        let rdb = match self.save.trim() {
            "" => "no RDB snapshots".to_string(),
            save => format!("RDB save \"{save}\""),
        };
        format!("{aof}, {rdb}, maxmemory-policy {}", self.maxmemory_policy)
    }

    /// Each way claims or queued work could be lost, said plainly.
    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.appendonly && self.save.trim().is_empty() {
            warnings.push("no AOF and no RDB snapshots: a restart of Redis loses every claim, the queued jobs of split events still running elsewhere are queued again by their event's owner, but the POST /push backlog and the events posted over HTTP are lost; set appendonly yes".to_string());
        } else if !self.appendonly {
            warnings.push("RDB snapshots only: a restart of Redis loses what was written since the last snapshot (accepted POST /push requests, claims of finished events: those may be sent again); set appendonly yes".to_string());
        } else if self.appendfsync == "no" {
            warnings.push("appendfsync no: a crash of the machine (not of Redis) loses up to about 30 s of writes; everysec loses at most one".to_string());
        }
        let evicting = self.maxmemory_policy != "noeviction";
        if evicting && self.maxmemory > 0 {
            let what = match self.maxmemory_policy.starts_with("volatile") {
                // Finished claims and Idempotency-Key records carry a TTL.
                true => {
                    "finished claims and Idempotency-Key answers (a repeated publish or request would be sent again)"
                }
                false => "running claims, queued jobs and the POST /push backlog (work lost)",
            };
            warnings.push(format!(
                "maxmemory-policy {} with maxmemory set: under memory pressure Redis evicts {what}; set noeviction",
                self.maxmemory_policy
            ));
        }
        warnings
    }
}

/// A token issued for the service account proves the key; the client proves the endpoint.
async fn fcm(settings: &Settings, fcm: &FcmSettings) -> anyhow::Result<String> {
    let timeout = std::time::Duration::from_secs(fcm.request_timeout_secs);
    let tokens = ServiceAccountTokens::from_file(std::path::Path::new(&fcm.credentials), timeout)?;
    let project = match fcm.project_id.trim() {
        "" => tokens
            .project_id()
            .map(str::to_string)
            .context("no project_id in the service-account JSON: set it (FCM_PROJECT_ID)")?,
        id => id.to_string(),
    };
    tokens.bearer().await?;
    crate::startup::http2_client(settings, &fcm.endpoint, 1, fcm.request_timeout_secs)?;
    Ok(format!(
        "access token issued for project {project}, endpoint {}",
        fcm.endpoint
    ))
}

/// The key loads and signs; Apple is not asked (a push needs a device token).
fn apns(settings: &Settings, a: &ApnsSettings) -> anyhow::Result<String> {
    let key = format!(
        "key {} of team {} loaded, topic {}",
        a.key_id, a.team_id, a.topic
    );
    // The same transport a push goes through: Apple's host, or the stand-in at APNS_ENDPOINT.
    crate::startup::apns_transport(settings, a, 1)?;
    Ok(match a.endpoint.trim() {
        "" if a.sandbox => format!("{key}, Apple sandbox"),
        "" => format!("{key}, Apple production"),
        endpoint => format!("{key}, stand-in at {endpoint} (APNS_ENDPOINT)"),
    })
}

/// The key loads and signs (through the pusher a push would use, so the settings are checked as
/// they will be); no push service is asked (a push needs a subscription). The public key is what
/// the site's `PushManager.subscribe()` needs as `applicationServerKey`.
fn webpush(settings: &Settings, w: &WebPushSettings) -> anyhow::Result<String> {
    let pusher = crate::startup::webpush_pusher(settings, w, true)?;
    pusher.check_signing()?;
    Ok(format!(
        "VAPID key loaded and signs, subject {}; applicationServerKey {}; allowed hosts {}",
        w.vapid_subject,
        pusher.public_key(),
        w.allowed_hosts
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(appendonly: bool, save: &str, policy: &str, maxmemory: u64) -> Durability {
        Durability {
            appendonly,
            appendfsync: "everysec".into(),
            save: save.into(),
            maxmemory_policy: policy.into(),
            maxmemory,
        }
    }

    #[test]
    fn check_warns_where_redis_could_lose_claims_or_queued_work() {
        assert!(redis(true, "", "noeviction", 0).warnings().is_empty());
        assert!(
            redis(true, "", "allkeys-lru", 0).warnings().is_empty(),
            "no limit: no eviction"
        );
        let none = redis(false, "", "noeviction", 0).warnings();
        assert!(none[0].starts_with("no AOF and no RDB"), "{none:?}");
        let rdb = redis(false, "3600 1", "noeviction", 0).warnings();
        assert!(rdb[0].starts_with("RDB snapshots only"), "{rdb:?}");
        let lru = redis(true, "", "allkeys-lru", 1 << 30).warnings();
        assert!(lru[0].contains("queued jobs"), "{lru:?}");
        let volatile = redis(true, "", "volatile-lru", 1 << 30).warnings();
        assert!(volatile[0].contains("finished claims"), "{volatile:?}");
        assert_eq!(
            redis(false, "", "noeviction", 0).describe(),
            "appendonly no, no RDB snapshots, maxmemory-policy noeviction"
        );
    }
}
