//! What `notifier check` prints as the effective settings: one `name = value` line for each row
//! of the [`env`](super::env) table that is shown, secrets masked. Operators and scripts read
//! it, so its text is pinned by a test here.

use super::Settings;
use super::env::TABLE;

impl Settings {
    /// The effective settings, one `key = value` a line, with secrets masked; for `notifier check`.
    pub fn describe(&self) -> String {
        TABLE
            .iter()
            .filter_map(|row| {
                row.show
                    .map(|show| format!("{} = {}\n", row.name, show(self)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_with as load;

    /// `notifier check` prints this; operators and scripts read it, so it must not drift.
    #[test]
    fn describe_prints_every_effective_setting_in_a_fixed_order() {
        let live = load(&[
            ("NOTIFIER_CONFIG", "config/notifier.toml"),
            ("APP_ENV", "production"),
            ("REDIS_URL", "redis://:pw@cache:6379/0"),
            ("DATABASE_URL", "postgres://app:s3cret@db:5432/x"),
            ("NOTIFIER_CHANNEL", "talks"),
            ("NOTIFIER_CONCURRENCY", "64"),
            ("NOTIFIER_HTTP_ADDR", "0.0.0.0:9000"),
            ("NOTIFIER_API_ADDR", "0.0.0.0:1056"),
            (
                "NOTIFIER_API_TOKENS",
                "tok-one-0123456789,tok-two-0123456789",
            ),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/sa.json"),
            ("FCM_PROJECT_ID", "proj"),
            ("APNS_KEY_PATH", "/k.p8"),
            ("APNS_KEY_ID", "KID"),
            ("APNS_TEAM_ID", "TEAM"),
            ("APNS_TOPIC", "com.example"),
            ("APNS_SANDBOX", "yes"),
            ("APNS_ENDPOINT", "https://apns.test"),
            ("NOTIFIER_EXTRA_CA_FILE", "Cargo.toml"),
            ("WEBPUSH_VAPID_PRIVATE_KEY_PATH", "/etc/vapid.pem"),
            ("WEBPUSH_VAPID_SUBJECT", "mailto:ops@example.com"),
        ])
        .unwrap();
        assert_eq!(
            live.describe(),
            "\
config file = config/notifier.toml
APP_ENV = production
NOTIFIER_SEND_MODE = live
REDIS_URL = redis://:***@cache:6379/0
REDIS_CA_FILE = (unset)
REDIS_CLIENT_CERT_FILE = (unset)
REDIS_CLIENT_KEY_FILE = (unset)
DATABASE_URL = postgres://app:***@db:5432/x
NOTIFIER_CHANNEL = talks
NOTIFIER_INPUT = pubsub
claims = notifier:{channel:talks}:event:…
NOTIFIER_CONCURRENCY = 64
NOTIFIER_HTTP_ADDR = 0.0.0.0:9000
NOTIFIER_API_ADDR = 0.0.0.0:1056
NOTIFIER_API_TOKENS = (2 set)
NOTIFIER_JOB_SIZE = 50000
database.page_size = 1000
FCM_ENDPOINT = https://fcm.googleapis.com
GOOGLE_APPLICATION_CREDENTIALS = /etc/sa.json
FCM_PROJECT_ID = proj
FCM_QUOTA_PER_MINUTE = 600000
NOTIFIER_EXTRA_CA_FILE = Cargo.toml
APNS_KEY_PATH = /k.p8
APNS_KEY_ID = KID
APNS_TEAM_ID = TEAM
APNS_TOPIC = com.example
APNS_SANDBOX = true
APNS_ENDPOINT = https://apns.test
APNS_RATE_PER_SECOND = 0
WEBPUSH_VAPID_PRIVATE_KEY_PATH = /etc/vapid.pem
WEBPUSH_VAPID_SUBJECT = mailto:ops@example.com
webpush.allowed_hosts = fcm.googleapis.com, updates.push.services.mozilla.com, *.notify.windows.com, web.push.apple.com
"
        );
        let stream = load(&[("NOTIFIER_INPUT", "stream"), ("NOTIFIER_STREAM", "talks")]).unwrap();
        let described = stream.describe();
        let lines: Vec<&str> = described.lines().collect();
        assert_eq!(
            lines[1..3],
            ["APP_ENV = (unset)", "NOTIFIER_SEND_MODE = dry-run"]
        );
        assert_eq!(
            lines[9..11],
            [
                "NOTIFIER_INPUT = stream talks (group notifier)",
                "claims = notifier:{stream:talks}:event:…"
            ]
        );
        assert_eq!(
            lines[19..22],
            [
                "FCM_PROJECT_ID = (unset)",
                "FCM_QUOTA_PER_MINUTE = 600000",
                "NOTIFIER_EXTRA_CA_FILE = (unset)"
            ]
        );
    }
}
