//! The JSON-lines codec: envelopes, body decoding, encoding, and a bounded line framer.
//!
//! Decoding is one pass with no intermediate `Value` when `type` is the body's first
//! key (as Maelstrom and Herald's clients write it); otherwise the body is buffered
//! once. A line that fails to decode is parsed again, slowly, only to find out whom to
//! answer with which error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire::msg::{ErrorCode, Payload};

/// One message: Maelstrom's envelope around a body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's id.
    pub src: String,
    /// The receiver's id.
    pub dest: String,
    /// What is said.
    pub body: Body,
}

/// A body: the typed payload plus the correlation header, written in the order of
/// Maelstrom's samples: `type`, the payload's fields, `in_reply_to`, `msg_id`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Body {
    /// The payload, with its `type`.
    #[serde(flatten)]
    pub payload: Payload,
    /// On a reply: the `msg_id` of the request it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<u64>,
    /// The sender's id for this message, unique per sender; replies quote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<u64>,
}

/// A line that is JSON with an envelope we can answer, but whose body is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Who sent it (the error reply goes there).
    pub src: String,
    /// Whom it was for.
    pub dest: String,
    /// The request's `msg_id`, if it had a usable one (no id, no reply).
    pub msg_id: Option<u64>,
    /// 10 (not-supported) for an unknown `type`, 12 (malformed-request) otherwise.
    pub code: ErrorCode,
    /// What was wrong.
    pub reason: String,
}

/// Why a line could not be decoded into a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or JSON without a string `src`: nobody can be answered, only logged.
    Unreadable(String),
    /// An envelope we can answer with an error reply.
    Invalid(Invalid),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unreadable(reason) => write!(f, "unreadable line: {reason}"),
            DecodeError::Invalid(bad) => {
                write!(f, "invalid message from {}: {}", bad.src, bad.reason)
            }
        }
    }
}

/// Decodes one line (without its newline) into a message.
pub fn decode(line: &[u8]) -> Result<Message, DecodeError> {
    serde_json::from_slice(line).map_err(|err| classify(line, &err, None))
}

/// Decodes a line from a client whose name the driver knows (a TCP connection):
/// `src` and `dest` may be left out and are replaced by `src` and `dest` given here,
/// so replies always go back to the connection the request came from.
pub fn decode_from(line: &[u8], src: &str, dest: &str) -> Result<Message, DecodeError> {
    #[derive(Deserialize)]
    struct Envelope {
        body: Body,
    }
    match serde_json::from_slice::<Envelope>(line) {
        Ok(e) => Ok(Message {
            src: src.to_owned(),
            dest: dest.to_owned(),
            body: e.body,
        }),
        Err(err) => Err(classify(line, &err, Some((src, dest)))),
    }
}

/// Works out whom a bad line came from (or is known to come from: `named`) and which
/// error code it deserves.
fn classify(line: &[u8], err: &serde_json::Error, named: Option<(&str, &str)>) -> DecodeError {
    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(line) else {
        return DecodeError::Unreadable(err.to_string());
    };
    let (src, dest) = match (named, envelope.remove("src"), envelope.remove("dest")) {
        (Some((src, dest)), _, _) => (src.to_owned(), dest.to_owned()),
        (None, Some(Value::String(src)), Some(Value::String(dest))) => (src, dest),
        (None, Some(Value::String(src)), _) => (src, String::new()),
        (None, _, _) => return DecodeError::Unreadable(format!("no string `src`: {err}")),
    };
    let body = envelope.get("body");
    let field = |name: &str| body.and_then(|b| b.get(name));
    let msg_id = field("msg_id").and_then(Value::as_u64);
    let (code, reason) = match field("type").and_then(Value::as_str) {
        Some(kind) if !Payload::is_known_kind(kind) => (
            ErrorCode::NotSupported,
            format!("unsupported message type {kind:?}"),
        ),
        _ => (ErrorCode::MalformedRequest, err.to_string()),
    };
    DecodeError::Invalid(Invalid {
        src,
        dest,
        msg_id,
        code,
        reason,
    })
}

/// Appends `msg` as one compact JSON line (with its `\n`) to `out`.
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and every Herald type serializes (string map keys,
    // struct payloads): the round-trip tests cover each kind.
    serde_json::to_writer(&mut *out, msg).expect("Herald messages always serialize");
    out.push(b'\n');
}

/// The correlation header, gathered while the payload's own fields are decoded.
#[derive(Default)]
struct Header {
    msg_id: Option<u64>,
    in_reply_to: Option<u64>,
}

impl<'de> Deserialize<'de> for Payload {
    /// A payload on its own (as stored in snapshots): a body without a header.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        Body::deserialize(deserializer).map(|body| body.payload)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_map(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message body object with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let Some(first) = map.next_key::<Key<'de>>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first.0 == "type" {
            let kind: Key<'de> = map.next_value()?;
            let mut header = Header::default();
            let payload = Payload::decode_fields(
                &kind.0,
                HeaderTap {
                    map,
                    header: &mut header,
                },
            )?;
            return Ok(Body {
                payload,
                msg_id: header.msg_id,
                in_reply_to: header.in_reply_to,
            });
        }
        // Slow path: `type` comes later, so buffer the body once.
        let mut fields = serde_json::Map::new();
        fields.insert(first.0.into_owned(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.insert(key, value);
        }
        let number = |name: &str| -> Result<Option<u64>, A::Error> {
            match fields.get(name) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    de::Error::custom(format_args!("`{name}` must be a non-negative integer"))
                }),
            }
        };
        let msg_id = number("msg_id")?;
        let in_reply_to = number("in_reply_to")?;
        let Some(Value::String(kind)) = fields.remove("type") else {
            return Err(de::Error::missing_field("type"));
        };
        let payload =
            Payload::decode_fields(&kind, Value::Object(fields)).map_err(de::Error::custom)?;
        Ok(Body {
            payload,
            msg_id,
            in_reply_to,
        })
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Passes a body's remaining fields to the payload's decoder, taking out `msg_id` and
/// `in_reply_to` on the way.
struct HeaderTap<'h, A> {
    map: A,
    header: &'h mut Header,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for HeaderTap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "msg_id" => self.header.msg_id = Some(self.map.next_value()?),
                "in_reply_to" => self.header.in_reply_to = Some(self.map.next_value()?),
                "type" => {
                    self.map.next_value::<IgnoredAny>()?;
                }
                _ => return seed.deserialize(key.0.into_deserializer()).map(Some),
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for HeaderTap<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msg::*;
    use std::collections::BTreeMap;

    fn msg(payload: Payload, msg_id: Option<u64>, in_reply_to: Option<u64>) -> Message {
        Message {
            src: "c1".into(),
            dest: "n1".into(),
            body: Body {
                payload,
                msg_id,
                in_reply_to,
            },
        }
    }

    fn every_kind() -> Vec<Payload> {
        vec![
            Payload::Init(Init {
                node_id: "n1".into(),
                node_ids: vec!["n1".into(), "n2".into()],
            }),
            Payload::InitOk,
            Payload::Echo(Echo {
                echo: serde_json::json!({"a": [1, "x", null]}),
            }),
            Payload::EchoOk(Echo {
                echo: Value::String("hi".into()),
            }),
            Payload::Generate,
            Payload::GenerateOk(GenerateOk { id: "n1-7".into() }),
            Payload::Topology(Topology {
                topology: BTreeMap::from([("n1".into(), vec!["n2".into()])]),
            }),
            Payload::TopologyOk,
            Payload::Broadcast(Broadcast { message: -4 }),
            Payload::BroadcastOk,
            Payload::Read,
            Payload::ReadOk(ReadOk {
                messages: Some(vec![1, 2]),
                value: None,
            }),
            Payload::ReadOk(ReadOk {
                messages: None,
                value: Some(9),
            }),
            Payload::Add(Add { delta: 3 }),
            Payload::AddOk,
            Payload::Gossip(Gossip { values: vec![5, 6] }),
            Payload::GossipOk,
            Payload::Merge(Merge {
                inc: BTreeMap::from([("n1".into(), 4)]),
                dec: BTreeMap::new(),
            }),
            Payload::MergeOk,
            Payload::Error(ErrorBody::new(ErrorCode::Abort, "no")),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for payload in every_kind() {
            assert!(Payload::is_known_kind(payload.kind()));
            let m = msg(payload, Some(3), Some(2));
            let mut line = Vec::new();
            encode(&m, &mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            assert_eq!(decode(&line[..line.len() - 1]), Ok(m));
        }
    }

    #[test]
    fn encodes_maelstrom_shapes_exactly() {
        let mut line = Vec::new();
        encode(
            &msg(Payload::EchoOk(Echo { echo: "x".into() }), Some(1), Some(5)),
            &mut line,
        );
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"src\":\"c1\",\"dest\":\"n1\",\"body\":{\"type\":\"echo_ok\",\"echo\":\"x\",\
             \"in_reply_to\":5,\"msg_id\":1}}\n"
        );
        let mut line = Vec::new();
        encode(&msg(Payload::InitOk, None, Some(1)), &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"src\":\"c1\",\"dest\":\"n1\",\"body\":{\"type\":\"init_ok\",\"in_reply_to\":1}}\n"
        );
    }

    #[test]
    fn type_anywhere_unknown_keys_and_escapes_are_accepted() {
        let line = br#"{"id":4,"dest":"n1","body":{"msg_id":9,"echo":"x","extra":[1],"type":"echo"},"src":"c\u0031"}"#;
        let m = decode(line).unwrap();
        assert_eq!(m.src, "c1");
        assert_eq!(m.body.msg_id, Some(9));
        assert_eq!(m.body.payload, Payload::Echo(Echo { echo: "x".into() }));
        let line = br#"{"src":"c1","dest":"n1","body":{"type":"read","msg_id":2,"key":"ignored","m\u0073g_id":3}}"#;
        let m = decode(line).unwrap();
        assert_eq!((m.body.payload, m.body.msg_id), (Payload::Read, Some(3)));
    }

    #[test]
    fn bad_bodies_are_classified_for_the_reply() {
        let invalid = |line: &[u8]| match decode(line) {
            Err(DecodeError::Invalid(bad)) => bad,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let bad = invalid(br#"{"src":"c1","dest":"n1","body":{"type":"frob","msg_id":4}}"#);
        assert_eq!(
            (bad.code, bad.msg_id, bad.src.as_str()),
            (ErrorCode::NotSupported, Some(4), "c1")
        );
        let bad = invalid(br#"{"src":"c1","dest":"n1","body":{"type":"add","msg_id":5}}"#);
        assert_eq!(
            (bad.code, bad.msg_id),
            (ErrorCode::MalformedRequest, Some(5))
        );
        assert!(bad.reason.contains("delta"), "{}", bad.reason);
        let bad =
            invalid(br#"{"src":"c1","dest":"n1","body":{"msg_id":6,"type":"add","delta":"x"}}"#);
        assert_eq!(
            (bad.code, bad.msg_id),
            (ErrorCode::MalformedRequest, Some(6))
        );
        let bad =
            invalid(br#"{"src":"c1","dest":"n1","body":{"type":"echo","echo":1,"msg_id":-1}}"#);
        assert_eq!((bad.code, bad.msg_id), (ErrorCode::MalformedRequest, None));
        let bad = invalid(br#"{"src":"c1","body":{"type":"echo","msg_id":1}}"#);
        assert_eq!(
            (bad.code, bad.msg_id, bad.dest.as_str()),
            (ErrorCode::MalformedRequest, Some(1), "")
        );
        for line in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"dest\":\"n1\"}",
            b"{\"src\":5}",
            b"",
        ] {
            assert!(
                matches!(decode(line), Err(DecodeError::Unreadable(_))),
                "{line:?}"
            );
        }
    }

    #[test]
    fn client_lines_are_named_by_the_connection() {
        let m = decode_from(
            br#"{"body":{"type":"echo","msg_id":3,"echo":1}}"#,
            "conn-7",
            "herald",
        )
        .unwrap();
        assert_eq!(
            (m.src.as_str(), m.dest.as_str(), m.body.msg_id),
            ("conn-7", "herald", Some(3))
        );
        let m = decode_from(
            br#"{"src":"spoof","body":{"type":"read","msg_id":1}}"#,
            "conn-7",
            "herald",
        )
        .unwrap();
        assert_eq!(m.src, "conn-7", "a client cannot answer as someone else");
        match decode_from(br#"{"body":{"type":"add","msg_id":4}}"#, "conn-7", "herald") {
            Err(DecodeError::Invalid(bad)) => {
                assert_eq!(
                    (bad.src.as_str(), bad.msg_id, bad.code),
                    ("conn-7", Some(4), ErrorCode::MalformedRequest)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_from(b"nope", "conn-7", "herald"),
            Err(DecodeError::Unreadable(_))
        ));
    }

    #[test]
    fn decode_never_panics_on_any_bytes() {
        bolero::check!().for_each(|bytes: &[u8]| {
            let _ = decode(bytes);
        });
    }
}
