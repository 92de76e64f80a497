//! What an APNs answer means for the fan-out: Apple's status first, its `reason` second (a
//! status always comes; a reason only with an error body, and new reasons appear over the years).
//! What may change here: a row of the table, with its test row.

use chrono::{TimeZone, Utc};

use super::transport::ApnsResponse;
use crate::audience::Provider;
use crate::push::{PauseScope, PushOutcome, Reason};

/// The settings an operator fixes when Apple refuses our provider token.
pub(super) const KEY_SETTINGS: &str = "APNS_KEY_PATH / APNS_KEY_ID / APNS_TEAM_ID";

/// Maps an APNs response to what the fan-out does next: status first, reason second.
pub fn classify(response: &ApnsResponse) -> PushOutcome {
    let reason = |fallback: &str| {
        let code = response.reason.as_deref().unwrap_or(fallback);
        Reason::new(Provider::Apns, code.to_string())
    };
    match (response.status, response.reason.as_deref()) {
        (200, _) => PushOutcome::Delivered,
        (410, _) => PushOutcome::Unregistered {
            reason: reason("Unregistered"),
            since: response
                .timestamp_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms as i64).single()),
        },
        (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => PushOutcome::Unregistered {
            reason: reason(""),
            since: None,
        },
        // The transport has already renewed an expired token and sent once more; reaching here,
        // the key, the ids or the clock are wrong, and every push would fail alike.
        (403, _) => PushOutcome::CredentialsRejected {
            reason: reason("Forbidden"),
            setting: KEY_SETTINGS,
            scope: PauseScope::Provider,
        },
        // TooManyProviderTokenUpdates is a 429 too: the token source never renews within 20
        // minutes, so it means another process shares the connection's key, and waiting helps.
        (429 | 500 | 503, _) => PushOutcome::Retryable {
            reason: reason(&format!("HTTP {}", response.status)),
            retry_after: None,
            quota: false,
        },
        (status, _) => PushOutcome::Rejected {
            reason: reason(&format!("HTTP {status}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each APNs response row, as Apple documents it.
    #[test]
    fn each_apns_response_maps_to_what_the_fan_out_does_next() {
        let rows: &[(u16, Option<&str>, &str)] = &[
            (200, None, "delivered"),
            (410, Some("Unregistered"), "unregistered"),
            (410, Some("ExpiredToken"), "unregistered"),
            (410, None, "unregistered"),
            (400, Some("BadDeviceToken"), "unregistered"),
            (400, Some("DeviceTokenNotForTopic"), "unregistered"),
            (400, Some("BadTopic"), "rejected"),
            (400, Some("BadCollapseId"), "rejected"),
            (400, None, "rejected"),
            (413, Some("PayloadTooLarge"), "rejected"),
            (403, Some("InvalidProviderToken"), "credentials_rejected"),
            (403, Some("ExpiredProviderToken"), "credentials_rejected"),
            (403, None, "credentials_rejected"),
            (429, Some("TooManyRequests"), "retryable"),
            (429, Some("TooManyProviderTokenUpdates"), "retryable"),
            (500, Some("InternalServerError"), "retryable"),
            (503, Some("ServiceUnavailable"), "retryable"),
            (404, Some("BadPath"), "rejected"),
        ];
        for (status, reason, label) in rows {
            let response = ApnsResponse {
                status: *status,
                reason: reason.map(str::to_string),
                timestamp_ms: None,
            };
            assert_eq!(classify(&response).label(), *label, "{status} {reason:?}");
        }
        let gone = classify(&ApnsResponse {
            status: 410,
            reason: Some("Unregistered".into()),
            timestamp_ms: Some(1_700_000_000_000),
        });
        assert_eq!(
            gone,
            PushOutcome::Unregistered {
                reason: Reason::new(Provider::Apns, "Unregistered"),
                since: Utc.timestamp_millis_opt(1_700_000_000_000).single(),
            }
        );
    }
}
