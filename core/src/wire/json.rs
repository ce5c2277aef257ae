//! [`Json`]: a message body kept as the JSON text it came as.
//!
//! A broker carries messages without looking inside them, so a message is checked to
//! be one JSON value and kept as its text: it is not parsed into a tree on the way
//! in, nor escaped again on the way out (to a reply, the write-ahead log or a
//! snapshot). Its bytes are copied once, from the request line.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// One JSON value, held as its text (as the client wrote it, whitespace inside kept).
#[derive(Clone)]
pub struct Json(Box<RawValue>);

impl Json {
    /// Checks that `text` is one JSON value and keeps it.
    pub fn parse(text: impl Into<String>) -> Result<Json, serde_json::Error> {
        RawValue::from_string(text.into()).map(Json)
    }

    /// `text` itself if it is one JSON value, else `text` as a JSON string (how a
    /// command-line message or a Kafka record's UTF-8 value becomes a message).
    pub fn parse_or_string(text: &str) -> Json {
        Json::parse(text).unwrap_or_else(|_| Value::String(text.to_owned()).into())
    }

    /// The value's JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// `value` written as JSON (a state machine for a Raft snapshot), without a tree
    /// in between.
    ///
    /// # Panics
    /// If `value` has no JSON form (a map with keys that are not strings).
    pub fn serialized(value: &impl Serialize) -> Json {
        Json(serde_json::value::to_raw_value(value).expect("the value serializes as JSON"))
    }

    /// The value read as a `T`.
    pub fn read<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.text())
    }

    /// The value as a tree, to look inside it.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.text()).expect("held text is valid JSON")
    }
}

/// From anything that makes a `Value`: `Json::from(json!({...}))`, `7.into()`.
impl<T: Into<Value>> From<T> for Json {
    fn from(value: T) -> Json {
        let value = value.into();
        Json(serde_json::value::to_raw_value(&value).expect("a Value always serializes"))
    }
}

impl Default for Json {
    /// `null`.
    fn default() -> Json {
        Json::from(Value::Null)
    }
}

/// Two messages are equal when they are the same JSON value (whitespace aside).
impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.text() == other.text() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// In JSON, the value itself; in a binary format, its text as a string.
impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            serializer.serialize_str(self.text())
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer).map(Json)
        } else {
            let text = String::deserialize(deserializer)?;
            Json::parse(text).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_kept_as_it_came_and_compares_as_a_value() {
        let m: Json = serde_json::from_str(r#" {"a": [1, "x\n"]} "#).unwrap();
        assert_eq!(m.text(), r#"{"a": [1, "x\n"]}"#);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"a": [1, "x\n"]}"#);
        assert_eq!(m, json!({"a": [1, "x\n"]}));
        assert_eq!(m, Json::from(json!({"a": [1, "x\n"]})));
        assert_ne!(m, Json::default());
        assert!(Json::parse("{").is_err() && Json::parse("1 2").is_err());
        assert_eq!(Json::parse_or_string("[1]"), json!([1]));
        assert_eq!(Json::parse_or_string("a b"), json!("a b"));
        // Inside a Value (a body buffered because `type` came late), too.
        let v: Value = serde_json::from_str(r#"{"m": {"b": true}}"#).unwrap();
        let back: std::collections::BTreeMap<String, Json> = serde_json::from_value(v).unwrap();
        assert_eq!(back["m"], json!({"b": true}));
    }
}
