//! The `[apps.NAME.fcm]`, `[apps.NAME.apns]` and `[apps.NAME.webpush]` sections (contract §10):
//! each further app's own FCM project, APNs key and topic, and VAPID key, beside the default app
//! of the top-level `[fcm]`, `[apns]` and `[webpush]` (which alone the environment variables set).
//!
//! An app's section takes every key of the top-level one; the keys it leaves out take the
//! built-in defaults, never the default app's values, so one app's credentials or limits cannot
//! leak into another by omission. Checked here at start-up: the name, and that a section names
//! its credentials (a half-configured app stops the process, naming the key).

use serde::Deserialize;

use super::env::{WEBPUSH_VAPID_PRIVATE_KEY_PATH, WEBPUSH_VAPID_SUBJECT};
use super::{ApnsSettings, FcmSettings, WebPushSettings};
use super::{Settings, SettingsError, merge};
use crate::apps::{AppId, AppName, AppNames};

/// One further app: its name and the providers it configures.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub name: AppName,
    pub fcm: Option<FcmSettings>,
    pub apns: Option<ApnsSettings>,
    pub webpush: Option<WebPushSettings>,
}

/// An app's providers as the pushers, limits and pacers are built from them.
#[derive(Debug, Clone, Copy)]
pub struct AppProviders<'a> {
    pub id: AppId,
    pub name: &'a str,
    /// `None` when the app has no FCM (for the default app: no credentials).
    pub fcm: Option<&'a FcmSettings>,
    pub apns: Option<&'a ApnsSettings>,
    pub webpush: Option<&'a WebPushSettings>,
}

/// `[apps.NAME]` as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSection {
    fcm: Option<toml::Table>,
    apns: Option<toml::Table>,
    webpush: Option<toml::Table>,
}

/// Reads the `[apps]` table (taken out of the file's table) over the built-in provider sections.
pub(super) fn read_apps(
    apps: Option<toml::Value>,
    defaults: &toml::Table,
) -> Result<Vec<AppSettings>, SettingsError> {
    let Some(apps) = apps else {
        return Ok(Vec::new());
    };
    let toml::Value::Table(apps) = apps else {
        return Err(SettingsError::new(
            "apps",
            "must be a table of [apps.NAME] sections",
        ));
    };
    let mut read = Vec::new();
    for (name, section) in apps {
        let key = format!("apps.{name}");
        let parsed = AppName::parse(&name).map_err(|e| SettingsError::new(&key, e))?;
        let section: AppSection = section
            .try_into()
            .map_err(|e: toml::de::Error| SettingsError::new(&key, e.message()))?;
        let app = AppSettings {
            name: parsed,
            fcm: section
                .fcm
                .map(|t| provider_section(&key, "fcm", t, defaults))
                .transpose()?,
            apns: section
                .apns
                .map(|t| provider_section(&key, "apns", t, defaults))
                .transpose()?,
            webpush: section
                .webpush
                .map(|t| provider_section(&key, "webpush", t, defaults))
                .transpose()?,
        };
        app.check(&key)?;
        read.push(app);
    }
    read.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(read)
}

/// One provider section of an app over the built-in one of the same name.
fn provider_section<T: serde::de::DeserializeOwned>(
    key: &str,
    provider: &str,
    section: toml::Table,
    defaults: &toml::Table,
) -> Result<T, SettingsError> {
    let mut table = match defaults.get(provider) {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => toml::Table::new(),
    };
    merge(&mut table, section);
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| SettingsError::new(format!("{key}.{provider}"), e.message()))
}

impl AppSettings {
    /// Each section names its credentials; an app has at least one.
    fn check(&self, key: &str) -> Result<(), SettingsError> {
        if self.fcm.is_none() && self.apns.is_none() && self.webpush.is_none() {
            return Err(SettingsError::new(
                key,
                format!("needs an [{key}.fcm], [{key}.apns] or [{key}.webpush] section"),
            ));
        }
        if let Some(fcm) = &self.fcm {
            let missing = !fcm.is_configured();
            let reason = "must name the app's service-account JSON";
            ensure(!missing, &format!("{key}.fcm.credentials"), reason)?;
            check_fcm(
                fcm,
                &format!("{key}.fcm.endpoint"),
                &format!("{key}.fcm.connections"),
            )?;
        }
        if let Some(apns) = &self.apns {
            for (field, value) in [
                ("key_path", &apns.key_path),
                ("key_id", &apns.key_id),
                ("team_id", &apns.team_id),
                ("topic", &apns.topic),
            ] {
                let reason = "must be set: an app's APNs section names its own key and topic";
                ensure(
                    !value.trim().is_empty(),
                    &format!("{key}.apns.{field}"),
                    reason,
                )?;
            }
        }
        if let Some(webpush) = &self.webpush {
            let reason = "must name the app's VAPID key: an app's Web Push section has its own";
            let setting = format!("{key}.webpush.vapid_private_key_path");
            ensure(webpush.is_configured(), &setting, reason)?;
            check_webpush(webpush, |field| format!("{key}.webpush.{field}"))?;
        }
        Ok(())
    }
}

fn ensure(ok: bool, setting: &str, reason: &str) -> Result<(), SettingsError> {
    match ok {
        true => Ok(()),
        false => Err(SettingsError::new(setting, reason)),
    }
}

/// The checks an FCM section gets, the default app's or another's.
pub(super) fn check_fcm(
    fcm: &FcmSettings,
    endpoint_setting: &str,
    connections_setting: &str,
) -> Result<(), SettingsError> {
    ensure(
        fcm.connections <= 64,
        connections_setting,
        "must be from 0 (auto) to 64",
    )?;
    let endpoint = &fcm.endpoint;
    ensure(
        endpoint.starts_with("https://") || endpoint.starts_with("http://"),
        endpoint_setting,
        "must be an http(s):// URL",
    )
}

/// The checks a Web Push section gets, the default app's or another's; `setting` names a key
/// of the section as the operator sets it.
pub(super) fn check_webpush(
    webpush: &WebPushSettings,
    setting: impl Fn(&str) -> String,
) -> Result<(), SettingsError> {
    webpush
        .validate()
        .map_err(|e| SettingsError::new(setting(e.key), e.reason))
}

/// The default app's Web Push keys by the variables that set them, the rest as file keys.
pub(super) fn default_webpush_setting(key: &str) -> String {
    match key {
        "vapid_private_key_path" => WEBPUSH_VAPID_PRIVATE_KEY_PATH.to_string(),
        "vapid_subject" => WEBPUSH_VAPID_SUBJECT.to_string(),
        key => format!("webpush.{key}"),
    }
}

impl Settings {
    /// The apps of this process, the default first: what device rows resolve against.
    pub fn app_names(&self) -> AppNames {
        AppNames::new(self.apps.iter().map(|a| a.name.clone()))
    }

    /// Each app's providers, in [`AppNames`] order.
    pub fn app_providers(&self) -> Vec<AppProviders<'_>> {
        let names = self.app_names();
        let default = AppProviders {
            id: AppId::DEFAULT,
            name: crate::apps::DEFAULT_APP,
            fcm: Some(&self.fcm).filter(|f| f.is_configured()),
            apns: Some(&self.apns).filter(|a| a.is_configured()),
            webpush: Some(&self.webpush).filter(|w| w.is_configured()),
        };
        let others = self.apps.iter().map(|a| AppProviders {
            id: names
                .resolve(Some(a.name.as_str()))
                .unwrap_or(AppId::DEFAULT),
            name: a.name.as_str(),
            fcm: a.fcm.as_ref(),
            apns: a.apns.as_ref(),
            webpush: a.webpush.as_ref(),
        });
        std::iter::once(default).chain(others).collect()
    }

    /// Whether any app can send through some provider.
    pub(super) fn any_provider(&self) -> bool {
        self.app_providers()
            .iter()
            .any(|a| a.fcm.is_some() || a.apns.is_some() || a.webpush.is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_with as load;

    fn with_file(text: &str) -> Result<crate::config::Settings, crate::config::SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        load(&[("NOTIFIER_CONFIG", path.to_str().unwrap())])
    }

    #[test]
    fn an_app_takes_the_provider_keys_over_the_built_in_defaults() {
        let s = with_file(
            "[fcm]\nconcurrency = 5\n\
             [apps.lite.fcm]\ncredentials = \"/lite.json\"\nquota_per_minute = 60\n\
             [apps.ipad.apns]\nkey_path = \"/k.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\n\
             topic = \"com.example.ipad\"\nsandbox = true\n",
        )
        .unwrap();
        let apps = s.app_providers();
        let names: Vec<_> = apps.iter().map(|a| a.name).collect();
        assert_eq!(names, ["default", "ipad", "lite"]);
        assert!(
            apps[0].fcm.is_none(),
            "the default app has no credentials here"
        );
        let lite = apps[2].fcm.unwrap();
        assert_eq!(
            (lite.credentials.as_str(), lite.quota_per_minute),
            ("/lite.json", 60)
        );
        assert_eq!(
            lite.concurrency, 0,
            "the default app's [fcm] is not inherited"
        );
        assert!(apps.iter().all(|a| a.webpush.is_none()));
        let ipad = apps[1].apns.unwrap();
        assert!(ipad.sandbox && ipad.topic == "com.example.ipad");
        assert!(apps[1].fcm.is_none() && apps[2].apns.is_none());
        assert_eq!(s.app_names().resolve(Some("lite")), Some(apps[2].id));
    }

    #[test]
    fn an_apps_web_push_section_has_its_own_key_over_the_built_in_defaults() {
        let s = with_file(
            "[webpush]\nurgency = \"low\"\n\
             [apps.site.webpush]\nvapid_private_key_path = \"/site.pem\"\n\
             vapid_subject = \"https://site.example/contact\"\nttl_secs = 600\n",
        )
        .unwrap();
        let apps = s.app_providers();
        assert!(
            apps[0].webpush.is_none(),
            "no VAPID key for the default app"
        );
        let site = apps[1].webpush.unwrap();
        assert_eq!(
            (site.vapid_private_key_path.as_str(), site.ttl_secs),
            ("/site.pem", 600)
        );
        assert_eq!(site.urgency.as_str(), "normal", "not the default app's");
        assert!(site.allowed_hosts.permits("fcm.googleapis.com"));
    }

    #[test]
    fn a_bad_name_or_a_half_configured_app_names_the_setting() {
        let cases = [
            ("[apps.Lite.fcm]\ncredentials = \"/x\"\n", "apps.Lite"),
            ("[apps.default.fcm]\ncredentials = \"/x\"\n", "apps.default"),
            ("[apps.lite]\n", "apps.lite"),
            (
                "[apps.lite.fcm]\nproject_id = \"p\"\n",
                "apps.lite.fcm.credentials",
            ),
            (
                "[apps.lite.fcm]\ncredentials = \"/x\"\nendpoint = \"x\"\n",
                "apps.lite.fcm.endpoint",
            ),
            (
                "[apps.lite.fcm]\ncredentials = \"/x\"\nkey = 1\n",
                "apps.lite.fcm",
            ),
            (
                "[apps.lite.apns]\nkey_path = \"/k\"\nkey_id = \"K\"\nteam_id = \"T\"\n",
                "apps.lite.apns.topic",
            ),
            ("[apps.lite.hms]\n", "apps.lite"),
            (
                "[apps.lite.webpush]\nvapid_subject = \"mailto:a@example.com\"\n",
                "apps.lite.webpush.vapid_private_key_path",
            ),
            (
                "[apps.lite.webpush]\nvapid_private_key_path = \"/v.pem\"\n",
                "apps.lite.webpush.vapid_subject",
            ),
            (
                "[apps.lite.webpush]\nvapid_private_key_path = \"/v.pem\"\n\
                 vapid_subject = \"mailto:a@example.com\"\nttl_secs = 9999999\n",
                "apps.lite.webpush.ttl_secs",
            ),
        ];
        for (file, named) in cases {
            let err = with_file(file).unwrap_err();
            assert_eq!(err.setting, named, "{file}: {err}");
        }
    }
}
