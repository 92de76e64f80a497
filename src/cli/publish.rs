//! `notifier publish`: publishes a talk_posted event exactly as the PHP app would, checked first
//! as the worker will check it.

use anyhow::Context;

use crate::config::{Settings, redact_url};
use crate::event::TalkPosted;
use crate::redis_client::Explained;

pub(super) async fn publish(
    settings: &Settings,
    talk_id: i64,
    program_id: Option<i64>,
    event_id: Option<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let event = TalkPosted {
        talk_id,
        program_id,
        event_id: event_id.unwrap_or_else(|| format!("talk_posted:{talk_id}")),
        dry_run: dry_run.then_some(true),
        published_at: Some(chrono::Utc::now()),
    };
    // Check it as the worker will, so a bad id fails here rather than in the worker's log.
    let json = event.to_json();
    TalkPosted::parse(json.as_bytes()).context("the event would be rejected")?;
    let client = crate::redis_client::open(&settings.redis)?;
    let publish = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PUBLISH")
            .arg(&settings.service.channel)
            .arg(&json)
            .query_async::<i64>(&mut conn)
            .await
    };
    let receivers = publish.await.map_err(|e| {
        anyhow::anyhow!(
            "cannot publish to Redis at {}: {}",
            redact_url(&settings.redis.url),
            Explained(&e)
        )
    })?;
    println!(
        "Published {json} on {}: {receivers} subscriber(s) received it.",
        settings.service.channel
    );
    Ok(())
}
