//! `notifier cancel`: stops an event on every replica of the deployment, as
//! `DELETE /v1/events/{id}` does, without the HTTP API: its runs stop handing out pushes at their
//! next renewal (within a second), its queued jobs are dropped, and it ends `cancelled` with the
//! counts it reached. With `--idempotency-key` it stops the `POST /push` notifications of the
//! request that carried that key instead. It acts on the deployment and send mode the settings
//! describe, as `run` would read them.

use anyhow::Context;

use crate::config::Settings;
use crate::work::claims::Cancelling;

pub(super) async fn cancel(
    settings: &Settings,
    event_id: Option<String>,
    idempotency_key: Option<String>,
    app: Option<String>,
) -> anyhow::Result<()> {
    let claims = crate::startup::connect_claims(settings).await?;
    let group = settings.work_group();
    if let Some(key) = idempotency_key {
        let app = app.as_deref().unwrap_or(crate::apps::DEFAULT_APP);
        let record = claims.keys().idempotency(&format!("push:{app}"), &key);
        let entries = crate::api::entries_of(&record);
        let found = claims.cancel_pushes(&entries, &group).await?;
        let found = found
            .context("no POST /push request with this Idempotency-Key within the dedup window")?;
        println!(
            "Cancelled the POST /push request {key:?} of app {app}: {} settled, {} stopping, {} sent already.",
            found.settled, found.stopping, found.done
        );
        return Ok(());
    }
    let event_id = event_id.context("name the event to cancel, or give --idempotency-key")?;
    match claims.cancel(&event_id, &group).await? {
        Cancelling::Started => println!(
            "Cancelling {event_id}: its runs stop within a second; it ends cancelled with the counts it reached."
        ),
        Cancelling::Already => println!("{event_id} is being cancelled already."),
        Cancelling::Cancelled => println!("{event_id} is cancelled."),
        Cancelling::TooLate => anyhow::bail!("{event_id} is done already: nothing to cancel"),
        Cancelling::Unknown => anyhow::bail!(
            "no event {event_id} within the dedup window in the {} mode of this deployment",
            settings.send_mode.as_str()
        ),
    }
    Ok(())
}
