//! The fields of the pretty log line (`LOG_FORMAT=pretty`), written as tracing-subscriber's
//! default writes them (`message` bare, then `name=value`, text values quoted unless logged with
//! `%`), except that no value can break the line: a control character in a value (a newline in an
//! `identifier` or an `event_id` a caller chose) is written escaped (`\n`, `\r`, `\t`,
//! `\u{1b}`), and so are the Unicode line and paragraph separators. One event is one line.
//!
//! The same formatter records span fields, so an event's span prefix is escaped too. The JSON
//! format needs none of this: JSON strings escape control characters already.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The field formatter of the pretty format.
pub(crate) struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Fields {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Fields<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    fn write(&mut self, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
        let name = field.name();
        // As the default formatter: the `log` crate's metadata fields are not the event's.
        if name.starts_with("log.") {
            return Ok(());
        }
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        let name = name.strip_prefix("r#").unwrap_or(name);
        if name != "message" {
            if self.writer.has_ansi_escapes() {
                // Italic name, dimmed `=`, as tracing-subscriber writes them.
                write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                write!(self.writer, "{name}=")?;
            }
        }
        write!(Escaping(&mut self.writer), "{value:?}")
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{}", super::ErrorChain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.write(field, value);
        }
    }
}

/// Writes through, escaping what would end or disturb a line.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (at, c) in s.char_indices() {
            if !(c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
                continue;
            }
            self.0.write_str(&s[clean..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            clean = at + c.len_utf8();
        }
        self.0.write_str(&s[clean..])
    }
}

#[cfg(test)]
mod tests {
    use tracing::{info, info_span, warn};

    use super::*;
    use crate::telemetry::tests::Captured;

    fn pretty(ansi: bool, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_target(false)
            .with_ansi(ansi)
            .fmt_fields(EscapedFields)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        out.text()
    }

    #[test]
    fn a_value_with_newlines_stays_on_its_line_in_span_and_event_fields() {
        let forged = "order-1\n2026-01-01T00:00:00Z  INFO Event processed.\r\x1b[2J\u{2028}";
        let text = pretty(false, || {
            let _span = info_span!("api_push", identifier = %forged, entry = "1-0").entered();
            warn!(token = %forged, quoted = forged, "left\nout");
            info!(n = 3, "plain");
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        let first = text.lines().next().unwrap();
        assert!(
            first.contains(r"identifier=order-1\n2026-01-01T00:00:00Z  INFO Event processed.\r\u{1b}[2J\u{2028}"),
            "{first}"
        );
        assert!(
            first.contains(r#"entry="1-0""#),
            "text values quoted as before: {first}"
        );
        assert!(first.contains(r"left\nout"), "{first}");
        assert!(first.contains(r#"quoted="order-1\n"#), "{first}");
        assert!(
            text.lines().nth(1).unwrap().ends_with("plain n=3"),
            "{text}"
        );
    }

    #[test]
    fn with_colours_the_names_are_styled_and_the_values_still_escaped() {
        let text = pretty(true, || info!(identifier = %"a\nb", "m"));
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            text.contains("\x1b[3midentifier\x1b[0m\x1b[2m=\x1b[0ma\\nb"),
            "{text:?}"
        );
    }
}
