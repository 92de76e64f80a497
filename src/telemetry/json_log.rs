//! The JSON log line (`LOG_FORMAT=json`): one object per line, the event's fields and the fields
//! of every span it runs in at the top level, beside `timestamp`, `level`, `message` and `target`.
//!
//! tracing-subscriber's own JSON format nests span fields under `span`/`spans`; a log pipeline
//! filters on `event_id` wherever a line came from, so here they are flattened. The innermost
//! value wins: an event's own field over its span's, an inner span's over an outer one's. Field
//! names and the four fixed keys are what pipelines and tests read: keep them.

use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format; span fields must be recorded as JSON (`JsonFields`) for it to read them.
pub(crate) struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                // A span without fields records nothing, which is not JSON: nothing to add.
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(recorded) {
                    for (name, value) in map {
                        fields.set(name, value);
                    }
                }
            }
        }
        event.record(&mut fields);
        let line = fields
            .to_line(&timestamp, event.metadata())
            .map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Fields in the order first seen, a later value for a name replacing the earlier one.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    /// The line: `timestamp`, `level`, the fields (`message` among them), `target`.
    fn to_line(&self, timestamp: &str, meta: &tracing::Metadata<'_>) -> serde_json::Result<String> {
        let mut line = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::new(&mut line);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", timestamp)?;
        map.serialize_entry("level", meta.level().as_str())?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry("target", meta.target())?;
        map.end()?;
        // serde_json writes UTF-8 only.
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn set(&mut self, name: String, value: Value) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn record(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.set(name.to_string(), value);
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use tracing::{info, info_span};
    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;
    use crate::telemetry::tests::Captured;

    fn lines(log: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = out.text();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn span_fields_reach_the_top_level_and_the_innermost_value_wins() {
        let lines = lines(|| {
            let _event =
                info_span!("event", event_id = "e-1", talk_id = 7, dry_run = true).entered();
            info!(provider = "fcm", "inside");
            info!(talk_id = 8, "overridden");
        });
        assert_eq!(lines[0]["event_id"], "e-1");
        assert_eq!(lines[0]["talk_id"], 7);
        assert_eq!(lines[0]["dry_run"], true);
        assert_eq!(lines[0]["provider"], "fcm");
        assert_eq!(lines[0]["message"], "inside");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].is_string() && lines[0]["target"].is_string());
        assert_eq!(lines[1]["talk_id"], 8);
    }

    #[test]
    fn a_line_outside_any_span_has_only_its_own_fields() {
        let lines = lines(|| info!(n = 1, "alone"));
        let keys: Vec<_> = lines[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 5, "{keys:?}");
    }
}
