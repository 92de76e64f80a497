//! `notifier check`: loads and checks everything the worker will use (database, Redis, each app's
//! FCM token and APNs key) and prints the effective settings with secrets masked.
//!
//! Each check prints one `ok`/`FAILED` line; the output is read by people and by the CLI tests.

use anyhow::Context;

use crate::config::{ApnsSettings, FcmSettings, Settings, redact_url};
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
    crate::push::http2_client(settings, &fcm.endpoint, 1, fcm.request_timeout_secs)?;
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
    crate::push::apns_transport(settings, a, 1)?;
    Ok(match a.endpoint.trim() {
        "" if a.sandbox => format!("{key}, Apple sandbox"),
        "" => format!("{key}, Apple production"),
        endpoint => format!("{key}, stand-in at {endpoint} (APNS_ENDPOINT)"),
    })
}
