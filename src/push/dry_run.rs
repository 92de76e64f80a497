//! The dry-run pusher: it logs each push it would send and opens no connection to any provider.
//! It is what runs outside production, and for any event published with `"dry_run": true`.

use tracing::info;

use super::{MaskedToken, Push, PushContent, PushOutcome, Pusher};

#[derive(Debug, Default, Clone)]
pub(crate) struct DryRunPusher;

#[async_trait::async_trait]
impl Pusher for DryRunPusher {
    async fn push(&self, push: &Push) -> PushOutcome {
        let Some(provider) = push.device.provider else {
            return PushOutcome::Skipped {
                reason: "unknown provider".into(),
            };
        };
        match &push.content {
            PushContent::Talk(n) => info!(
                provider = provider.as_str(),
                token = %MaskedToken(&push.device.token),
                title = %n.title,
                body = %n.body,
                "Dry run: would push."
            ),
            PushContent::Prebuilt(_) => info!(
                provider = provider.as_str(),
                token = %MaskedToken(&push.device.token),
                "Dry run: would push a prebuilt request."
            ),
        }
        PushOutcome::Delivered
    }

    fn logs_each_push(&self) -> bool {
        true
    }
}
