//! Gaurun's request body read as Go's `encoding/json` reads it into Gaurun's structs, so that a
//! request Gaurun decoded is decoded here to the same values:
//!
//! - `null` leaves a field at its zero value (`""`, `0`, `false`, no list), wherever it appears:
//!   a field, a token, a notification, the whole body;
//! - a key names the field spelled the same, else one equal to it under case folding (`Token`,
//!   `PLATFORM`); of repeated keys the last wins; unknown keys are ignored;
//! - only the first JSON value is read: what follows it is ignored (`json.Decoder.Decode`);
//! - a value of the wrong type (`"platform": "1"`, `"token": "x"`) fails the whole body, as in Go.
//!
//! Integers also accept a whole float (`1.0`, as PHP writes floats), which Go refused. The same
//! `Deserialize` reads the backlog's entries back (written by the derived `Serialize`).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::gaurun::{Extend, GaurunNotification};

/// The body: `{"notifications": [...]}`; absent or `null` is an empty list.
#[derive(Debug, Default)]
pub(super) struct PushRequest {
    pub(super) notifications: Vec<GaurunNotification>,
}

/// Reads the first JSON value of `body` as Gaurun's request.
pub(super) fn decode(body: &[u8]) -> Result<PushRequest, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    // No `de.end()`: trailing characters are left unread, as Go's decoder leaves them.
    Ok(Option::<PushRequest>::deserialize(&mut de)?.unwrap_or_default())
}

/// Which of `names` (lower-case ASCII) `key` names: the same spelling first, else the first equal
/// under Go's folding (`foldName`: ASCII upper-cased, any other rune `ToUpper(ToLower(r))`, which
/// lets `ſ` stand for `s` and the Kelvin sign for `k`).
fn field_of(key: &str, names: &[&str]) -> Option<usize> {
    names
        .iter()
        .position(|n| *n == key)
        .or_else(|| names.iter().position(|n| folds_to(key, n)))
}

fn folds_to(key: &str, name: &str) -> bool {
    let mut key = key.chars();
    name.chars().all(|n| {
        key.next()
            .is_some_and(|k| fold(k) == n.to_ascii_uppercase())
    }) && key.next().is_none()
}

fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let lower = single(c.to_lowercase()).unwrap_or(c);
    single(lower.to_uppercase()).unwrap_or(lower)
}

/// Go's mappings are rune to rune: a character that maps to several is left as it is.
fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

/// A map key looked up among `names`: its index, or `None` for a key to ignore.
struct FieldOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldOf {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(field_of(key, self.0))
    }
}

/// An integer field: `364`, or `364.0` (the same number to JSON); `364.5` is refused, and so is
/// a number outside the 64-bit range, however written.
struct Whole(i64);

/// 2^53: past it a float no longer tells one integer from the next (`-9223372036854775809`
/// reads as the float of `i64::MIN`).
const EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        let float = || n.as_f64().filter(|f| f.abs() < EXACT_FLOAT);
        n.as_i64()
            .or_else(|| crate::event::whole(float()?))
            .map(Whole)
            .ok_or_else(|| de::Error::custom(format!("{n} is not a 64-bit integer")))
    }
}

/// Reads the next value as `T`, `null` giving `T`'s zero value.
fn zero_if_null<'de, A, T>(map: &mut A) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

fn whole<'de, A: MapAccess<'de>>(map: &mut A) -> Result<i64, A::Error> {
    Ok(map.next_value::<Option<Whole>>()?.map_or(0, |w| w.0))
}

/// A list whose `null` items are zero values.
struct ZeroIfNullItems<T>(Vec<T>);

impl<T> Default for ZeroIfNullItems<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for ZeroIfNullItems<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for Items<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<T>, S::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<Option<T>>()? {
                    items.push(item.unwrap_or_default());
                }
                Ok(items)
            }
        }
        d.deserialize_seq(Items(std::marker::PhantomData))
            .map(ZeroIfNullItems)
    }
}

fn list<'de, A, T>(map: &mut A) -> Result<Vec<T>, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(zero_if_null::<A, ZeroIfNullItems<T>>(map)?.0)
}

/// Visits an object, giving each key's index among `names` to `set`, which reads the value.
fn visit_object<'de, A, T, F>(
    mut map: A,
    names: &'static [&'static str],
    mut set: F,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Default,
    F: FnMut(&mut T, &'static str, &mut A) -> Result<(), A::Error>,
{
    let mut value = T::default();
    while let Some(key) = map.next_key_seed(FieldOf(names))? {
        match key {
            Some(at) => set(&mut value, names[at], &mut map)?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(value)
}

impl<'de> Deserialize<'de> for PushRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Body;
        impl<'de> Visitor<'de> for Body {
            type Value = PushRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object {"notifications": [...]}"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PushRequest, A::Error> {
                visit_object(map, &["notifications"], |r: &mut PushRequest, _, map| {
                    r.notifications = list(map)?;
                    Ok(())
                })
            }
        }
        d.deserialize_map(Body)
    }
}

/// Gaurun's `RequestGaurunNotification` fields this reads; others (`retry`, `seq_id`) are ignored.
const NOTIFICATION_FIELDS: &[&str] = &[
    "token",
    "platform",
    "message",
    "title",
    "subtitle",
    "badge",
    "category",
    "sound",
    "content_available",
    "mutable_content",
    "expiry",
    "push_type",
    "collapse_key",
    "delay_while_idle",
    "time_to_live",
    "priority",
    "extend",
    "identifier",
];

impl<'de> Deserialize<'de> for GaurunNotification {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Notification;
        impl<'de> Visitor<'de> for Notification {
            type Value = GaurunNotification;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a notification object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<GaurunNotification, A::Error> {
                visit_object(map, NOTIFICATION_FIELDS, set_field)
            }
        }
        d.deserialize_map(Notification)
    }
}

fn set_field<'de, A: MapAccess<'de>>(
    n: &mut GaurunNotification,
    name: &str,
    map: &mut A,
) -> Result<(), A::Error> {
    match name {
        "token" => n.token = list(map)?,
        "platform" => n.platform = whole(map)?,
        "message" => n.message = zero_if_null(map)?,
        "title" => n.title = zero_if_null(map)?,
        "subtitle" => n.subtitle = zero_if_null(map)?,
        "badge" => n.badge = whole(map)?,
        "category" => n.category = zero_if_null(map)?,
        "sound" => n.sound = zero_if_null(map)?,
        "content_available" => n.content_available = zero_if_null(map)?,
        "mutable_content" => n.mutable_content = zero_if_null(map)?,
        "expiry" => n.expiry = whole(map)?,
        "push_type" => n.push_type = zero_if_null(map)?,
        "collapse_key" => n.collapse_key = zero_if_null(map)?,
        "delay_while_idle" => n.delay_while_idle = zero_if_null(map)?,
        "time_to_live" => n.time_to_live = whole(map)?,
        "priority" => n.priority = zero_if_null(map)?,
        "extend" => n.extend = list(map)?,
        _ => n.identifier = zero_if_null(map)?,
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Extend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pair;
        impl<'de> Visitor<'de> for Pair {
            type Value = Extend;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object {"key": ..., "val": ...}"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Extend, A::Error> {
                // `value` is read as `val` too (an easy slip Gaurun ignored).
                visit_object(
                    map,
                    &["key", "val", "value"],
                    |e: &mut Extend, name, map| {
                        match name {
                            "key" => e.key = zero_if_null(map)?,
                            _ => e.val = zero_if_null(map)?,
                        }
                        Ok(())
                    },
                )
            }
        }
        d.deserialize_map(Pair)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one(body: &str) -> GaurunNotification {
        let mut r = decode(body.as_bytes()).unwrap();
        assert_eq!(r.notifications.len(), 1, "{body}");
        r.notifications.remove(0)
    }

    #[test]
    fn null_is_the_zero_value_of_every_field() {
        let mut fields = serde_json::Map::new();
        for name in NOTIFICATION_FIELDS {
            fields.insert(name.to_string(), serde_json::Value::Null);
        }
        let body = json!({ "notifications": [fields] }).to_string();
        let n = one(&body);
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::to_value(GaurunNotification::default()).unwrap()
        );
        let nulls = one(
            r#"{"notifications":[{"token":["a",null],"extend":[null,{"key":"k","val":null}]}]}"#,
        );
        assert_eq!(nulls.token, ["a", ""]);
        assert_eq!(
            nulls
                .extend
                .iter()
                .map(|e| (e.key.as_str(), e.val.as_str()))
                .collect::<Vec<_>>(),
            [("", ""), ("k", "")]
        );
        for empty in [
            "null",
            "{}",
            r#"{"notifications":null}"#,
            r#"{"notifications":[]}"#,
        ] {
            assert!(
                decode(empty.as_bytes()).unwrap().notifications.is_empty(),
                "{empty}"
            );
        }
        let zero = decode(br#"{"notifications":[null]}"#).unwrap();
        assert_eq!(zero.notifications.len(), 1);
        assert_eq!(zero.notifications[0].platform, 0);
    }

    #[test]
    fn keys_match_as_go_matches_them() {
        let n = one(
            r#"{"Notifications":[{"TOKEN":["a"],"Platform":2,"mESSAGE":"m","Push_Type":"alert"}]}"#,
        );
        assert_eq!(
            (
                n.token,
                n.platform,
                n.message.as_str(),
                n.push_type.as_str()
            ),
            (vec!["a".to_string()], 2, "m", "alert")
        );
        // The last of repeated keys wins, whatever their spelling.
        let n =
            one(r#"{"notifications":[{"token":["a"],"Token":["b"],"platform":1,"platform":2}]}"#);
        assert_eq!((n.token, n.platform), (vec!["b".to_string()], 2));
        // Go folds U+017F (long s) to S and U+212A (Kelvin sign) to K.
        let n = one(
            "{\"notifications\":[{\"\u{17f}ound\":\"x\",\"extend\":[{\"\u{212a}ey\":\"k\",\"VAL\":\"v\"}]}]}",
        );
        assert_eq!(
            (
                n.sound.as_str(),
                n.extend[0].key.as_str(),
                n.extend[0].val.as_str()
            ),
            ("x", "k", "v")
        );
        let n =
            one(r#"{"notifications":[{"tokens":["a"],"platforms":2,"retry":"x","seq_id":{}}]}"#);
        assert!(
            n.token.is_empty() && n.platform == 0,
            "near misses are unknown keys"
        );
    }

    #[test]
    fn only_the_first_value_is_read() {
        let n = one(r#"{"notifications":[{"token":["a"]}]} trailing {"notifications":[]}"#);
        assert_eq!(n.token, ["a"]);
        assert!(
            decode(br#"{"notifications":[{"token":["a"]}]"#).is_err(),
            "a value cut short"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_fails_the_body() {
        for body in [
            r#"[]"#,
            r#""x""#,
            r#"{"notifications":3}"#,
            r#"{"notifications":[3]}"#,
            r#"{"notifications":[{"platform":"1"}]}"#,
            r#"{"notifications":[{"token":"a"}]}"#,
            r#"{"notifications":[{"token":[1]}]}"#,
            r#"{"notifications":[{"badge":1.5}]}"#,
            r#"{"notifications":[{"badge":1e300}]}"#,
            r#"{"notifications":[{"badge":-9223372036854775809}]}"#,
            r#"{"notifications":[{"badge":9223372036854775808}]}"#,
            r#"{"notifications":[{"content_available":1}]}"#,
            r#"{"notifications":[{"extend":{"key":"a"}}]}"#,
            r#"{"notifications":[{"extend":[{"key":1}]}]}"#,
            "not json",
        ] {
            assert!(decode(body.as_bytes()).is_err(), "{body}");
        }
        let n = one(
            r#"{"notifications":[{"platform":2.0,"badge":3e0,"expiry":-9223372036854775808}]}"#,
        );
        assert_eq!((n.platform, n.badge, n.expiry), (2, 3, i64::MIN));
    }

    #[test]
    fn what_serialize_writes_reads_back_the_same() {
        let n = one(
            r#"{"notifications":[{"token":["a","b"],"platform":1,"message":"m","badge":2,"content_available":true,"extend":[{"key":"k","value":"v"}],"identifier":"id"}]}"#,
        );
        let back: GaurunNotification =
            serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&n).unwrap()
        );
        assert_eq!(back.extend[0].val, "v");
    }
}
