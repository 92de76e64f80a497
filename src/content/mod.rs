//! What a push says: the talk's details from the content query, rendered through the configured
//! title/body templates for each locale, plus the data map every push carries.
//!
//! Rendering happens once per event and locale, not once per device: a push only picks the
//! rendered notification for its user's locale. Text is cut on a character boundary, measured as
//! the JSON the providers will receive, so that no payload crosses their 4096-byte limit even
//! when a talk title is long Japanese text.

mod talk;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

pub use talk::{TalkError, load_talk};

/// FCM and APNs both refuse payloads above this many bytes.
pub const PAYLOAD_LIMIT: usize = 4096;
/// Bytes kept for the provider's own envelope around title, body and data: the APNs `aps`
/// keys (`alert`, `sound`, `thread-id`) or the FCM `notification`/`data` keys, with room to spare.
pub const ENVELOPE_RESERVE: usize = 384;
/// A title longer than this is cut: lock screens show a line or two.
pub const TITLE_MAX_BYTES: usize = 512;
const PLACEHOLDERS: &[&str] = &["program_title", "talk_title", "talk_id", "program_id"];

/// The `[content]` settings: templates by locale and the data map every push carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentSettings {
    pub default_locale: String,
    pub templates: BTreeMap<String, TemplateSettings>,
    pub data: BTreeMap<String, String>,
}

/// One locale's title and body, with `{placeholder}`s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub title: String,
    pub body: String,
}

/// A template that cannot be used, named by its key in the configuration file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct TemplateError {
    /// The file key to fix, like `content.templates.en.title`.
    pub key: String,
    pub reason: String,
}

/// The talk as the content query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Talk {
    pub talk_id: i64,
    pub program_id: i64,
    pub author_id: Option<i64>,
    pub talk_title: String,
    pub program_title: String,
}

/// One rendered notification, shared by every push of an event in one locale.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// String key/values (FCM `data`, APNs custom keys), in a stable order.
    pub data: Vec<(String, String)>,
    /// Groups an event's notifications on the phone (`apns-collapse-id`, FCM `collapse_key`/`tag`).
    pub collapse_id: String,
    /// Groups a program's notifications (APNs `thread-id`).
    pub thread_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the data map renders to {0} bytes, leaving no room for the text under the 4096-byte limit"
)]
pub struct ContentError(usize);

/// The configured templates, checked at start-up.
#[derive(Debug, Clone)]
pub struct Templates {
    default_locale: String,
    by_locale: Vec<(String, String, String)>,
    data: Vec<(String, String)>,
}

/// An event's notifications for every configured locale.
#[derive(Debug, Clone)]
pub struct Rendered {
    default: Arc<Notification>,
    by_locale: HashMap<String, Arc<Notification>>,
}

impl Templates {
    pub fn new(settings: &ContentSettings) -> Result<Self, TemplateError> {
        Self::check(settings)?;
        Ok(Self {
            default_locale: normalize_locale(&settings.default_locale),
            by_locale: settings
                .templates
                .iter()
                .map(|(locale, t)| (normalize_locale(locale), t.title.clone(), t.body.clone()))
                .collect(),
            data: settings
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Refuses unknown placeholders and a default locale without templates.
    pub fn check(settings: &ContentSettings) -> Result<(), TemplateError> {
        let default = normalize_locale(&settings.default_locale);
        if !settings
            .templates
            .keys()
            .any(|l| normalize_locale(l) == default)
        {
            return Err(TemplateError {
                key: "content.default_locale".into(),
                reason: format!("no [content.templates.{default}] section"),
            });
        }
        let mut texts: Vec<(String, &str)> = Vec::new();
        for (locale, t) in &settings.templates {
            texts.push((format!("content.templates.{locale}.title"), &t.title));
            texts.push((format!("content.templates.{locale}.body"), &t.body));
        }
        for (key, value) in &settings.data {
            texts.push((format!("content.data.{key}"), value));
        }
        for (key, text) in texts {
            if let Err(unknown) = render(text, &HashMap::new()) {
                return Err(TemplateError {
                    key,
                    reason: format!(
                        "unknown placeholder {{{unknown}}} (known: {})",
                        known_placeholders()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Renders the talk's notification in every configured locale.
    pub fn render(&self, talk: &Talk, event_id: &str) -> Result<Rendered, ContentError> {
        let values: HashMap<&str, String> = HashMap::from([
            ("program_title", talk.program_title.clone()),
            ("talk_title", talk.talk_title.clone()),
            ("talk_id", talk.talk_id.to_string()),
            ("program_id", talk.program_id.to_string()),
        ]);
        let fill = |t: &str| render(t, &values).unwrap_or_else(|_| t.to_string());
        let data: Vec<(String, String)> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect();
        let data_bytes: usize = data
            .iter()
            .map(|(k, v)| json_len(k) + json_len(v) + 6)
            .sum();
        let text_budget = PAYLOAD_LIMIT
            .checked_sub(ENVELOPE_RESERVE + data_bytes)
            .filter(|b| *b >= 64)
            .ok_or(ContentError(data_bytes))?;

        let mut default = None;
        let mut by_locale = HashMap::new();
        for (locale, title, body) in &self.by_locale {
            let title = fit(&fill(title), TITLE_MAX_BYTES.min(text_budget / 2));
            let body = fit(&fill(body), text_budget - json_len(&title));
            let n = Arc::new(Notification {
                title,
                body,
                data: data.clone(),
                collapse_id: event_id.to_string(),
                thread_id: format!("program-{}", talk.program_id),
            });
            if *locale == self.default_locale {
                default = Some(Arc::clone(&n));
            }
            by_locale.insert(locale.clone(), n);
        }
        let default = default.ok_or(ContentError(data_bytes))?;
        Ok(Rendered { default, by_locale })
    }
}

impl Rendered {
    /// The notification for a user's locale: exact match (`ja-jp`), then the language (`ja`),
    /// then the default.
    pub fn for_locale(&self, locale: Option<&str>) -> &Arc<Notification> {
        let Some(locale) = locale.filter(|l| !l.is_empty()) else {
            return &self.default;
        };
        // Most locales are stored as written (`en`, `ja`): no allocation per push for those.
        if let Some(n) = self.by_locale.get(locale) {
            return n;
        }
        let locale = normalize_locale(locale);
        if let Some(n) = self.by_locale.get(&locale) {
            return n;
        }
        let language = locale.split('-').next().unwrap_or_default();
        self.by_locale.get(language).unwrap_or(&self.default)
    }
}

fn normalize_locale(locale: &str) -> String {
    locale.trim().replace('_', "-").to_ascii_lowercase()
}

fn known_placeholders() -> String {
    PLACEHOLDERS
        .iter()
        .map(|p| format!("{{{p}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fills `{name}` placeholders; `{{` and `}}` are literal braces. Returns the first unknown name.
fn render(template: &str, values: &HashMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) {
            let name = &tail[1..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(name.to_string());
            }
            if let Some(v) = values.get(name) {
                out.push_str(v);
            }
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Bytes a string takes inside a JSON string literal (without the quotes), as serde_json writes it.
pub fn json_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// Cuts `s` on a character boundary so that its JSON form fits in `max` bytes, marking the cut
/// with `…`.
pub fn fit(s: &str, max: usize) -> String {
    if json_len(s) <= max {
        return s.to_string();
    }
    const ELLIPSIS: char = '…';
    let budget = max.saturating_sub(ELLIPSIS.len_utf8());
    let mut used = 0;
    let mut out = String::with_capacity(max);
    for c in s.chars() {
        let n = json_len(c.encode_utf8(&mut [0; 4]));
        if used + n > budget {
            break;
        }
        used += n;
        out.push(c);
    }
    if max >= ELLIPSIS.len_utf8() {
        out.push(ELLIPSIS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use serde_json::json;

    fn templates() -> Templates {
        let s = Settings::load(|_| None).unwrap();
        Templates::new(&s.content).unwrap()
    }

    fn talk(title: &str, program: &str) -> Talk {
        Talk {
            talk_id: 42,
            program_id: 7,
            author_id: Some(1),
            talk_title: title.into(),
            program_title: program.into(),
        }
    }

    #[test]
    fn placeholders_are_filled_per_locale_with_a_fallback() {
        let r = templates()
            .render(&talk("Episode 1", "Morning Radio"), "talk_posted:42")
            .unwrap();
        let en = r.for_locale(Some("en"));
        assert_eq!(en.title, "New talk on Morning Radio");
        assert_eq!(en.body, "Episode 1");
        assert_eq!(en.collapse_id, "talk_posted:42");
        let ja = r.for_locale(Some("ja_JP"));
        assert_eq!(ja.title, "Morning Radioに新しいトークが投稿されました");
        assert_eq!(r.for_locale(Some("fr")).title, en.title);
        assert_eq!(r.for_locale(None).title, en.title);
        let data: Vec<_> = en
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(data.contains(&("talk_id", "42")) && data.contains(&("program_id", "7")));
        assert!(data.contains(&("url", "notifier-demo://talks/42")));
        assert!(data.contains(&("type", "talk_posted")));
    }

    #[test]
    fn unknown_placeholders_are_refused_at_start_up() {
        let mut s = Settings::load(|_| None).unwrap().content;
        s.templates.get_mut("en").unwrap().title = "Hi {user_name}".into();
        let err = Templates::new(&s).unwrap_err();
        assert_eq!(err.key, "content.templates.en.title");
        assert!(err.reason.contains("{user_name}"));
    }

    #[test]
    fn braces_can_be_written_literally() {
        let values = HashMap::from([("talk_id", "5".to_string())]);
        assert_eq!(render("{{x}} {talk_id}}}", &values).unwrap(), "{x} 5}");
    }

    #[test]
    fn cutting_respects_character_boundaries_and_json_escapes() {
        assert_eq!(fit("abc", 3), "abc");
        // 3 bytes for each kana and for the ellipsis.
        assert_eq!(fit("あいうえお", 9), "あい…");
        assert_eq!(fit("あいうえお", 8), "あ…");
        assert_eq!(json_len("a\"b\n"), 6);
        assert!(json_len(&fit(&"\"".repeat(100), 50)) <= 50);
    }

    #[test]
    fn long_japanese_text_keeps_fcm_and_apns_payloads_within_4096_bytes() {
        let title = "長いタイトル".repeat(300);
        let program = "番組".repeat(500);
        let r = templates()
            .render(&talk(&title, &program), "talk_posted:42")
            .unwrap();
        for locale in ["en", "ja"] {
            let n = r.for_locale(Some(locale));
            assert!(n.body.ends_with('…') && n.title.ends_with('…'));
            let data: serde_json::Map<_, _> =
                n.data.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            // The APNs body, and what FCM counts against its limit (notification + data).
            let mut apns = json!({"aps": {"alert": {"title": n.title, "body": n.body},
                "sound": "default", "thread-id": n.thread_id}});
            for (k, v) in &data {
                apns[k] = v.clone();
            }
            let fcm = json!({"notification": {"title": n.title, "body": n.body}, "data": data});
            for payload in [apns, fcm] {
                let bytes = serde_json::to_vec(&payload).unwrap().len();
                assert!(bytes <= PAYLOAD_LIMIT, "{locale}: {bytes} bytes");
                assert!(
                    bytes > PAYLOAD_LIMIT - ENVELOPE_RESERVE - 200,
                    "text was cut too much: {bytes}"
                );
            }
        }
    }
}
