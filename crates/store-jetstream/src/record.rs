//! The effects record: what one settled batch of an ordered subscription
//! decided, written once (compare-and-set on its subject) before any of it
//! is applied. See the crate docs for how it makes effects exactly-once.

use serde::{Deserialize, Serialize};

use courier_core::{Effects, Error, NewMessage, Result, StateOp};

/// A batch's decision for one source partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Bumped by every seek: offsets of an older epoch never guard a newer
    /// write.
    pub epoch: u64,
    /// Every offset up to this one (inclusive) is decided; `None` only for
    /// the record of a seek to the very start.
    pub through: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<RecordOp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<RecordMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead: Vec<RecordDead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum RecordOp {
    Set {
        key: String,
        #[serde(with = "base64_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    Increment {
        key: String,
        delta: i64,
    },
}

impl RecordOp {
    pub fn key(&self) -> &str {
        match self {
            RecordOp::Set { key, .. }
            | RecordOp::Delete { key }
            | RecordOp::Increment { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordMessage {
    pub topic: String,
    #[serde(
        default,
        with = "base64_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordDead {
    pub offset: u64,
    pub attempts: u32,
    pub reason: String,
    pub failed_at_ms: u64,
}

impl Record {
    pub fn has_effects(&self) -> bool {
        !(self.state.is_empty() && self.outbox.is_empty() && self.dead.is_empty())
    }

    /// Adds a batch's effects (the host coalesced them: one op per key).
    pub fn add_effects(&mut self, effects: Effects) {
        self.state
            .extend(effects.state.into_iter().map(|op| match op {
                StateOp::Set { key, value } => RecordOp::Set { key, value },
                StateOp::Delete { key } => RecordOp::Delete { key },
                StateOp::Increment { key, delta } => RecordOp::Increment { key, delta },
            }));
        self.outbox.extend(
            effects
                .publishes
                .into_iter()
                .map(|(topic, message)| RecordMessage {
                    topic,
                    key: message.key,
                    headers: message.headers,
                    payload: message.payload,
                }),
        );
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Record> {
        serde_json::from_slice(bytes).map_err(|error| Error::Corrupt {
            what: "jetstream effects record",
            detail: error.to_string(),
        })
    }
}

impl RecordMessage {
    pub fn to_new(&self) -> NewMessage {
        NewMessage {
            key: self.key.clone(),
            headers: self.headers.clone(),
            payload: self.payload.clone(),
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod base64_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::base64_bytes::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::base64_bytes")] Vec<u8>);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(bytes)| bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let mut record = Record {
            epoch: 2,
            through: Some(41),
            state: Vec::new(),
            outbox: Vec::new(),
            dead: vec![RecordDead {
                offset: 40,
                attempts: 5,
                reason: "bad order".into(),
                failed_at_ms: 7,
            }],
        };
        record.add_effects(Effects {
            publishes: vec![(
                "notifications".into(),
                NewMessage {
                    key: Some(vec![0, 255]),
                    headers: vec![("type".into(), "notice".into())],
                    payload: b"{\"x\":1}".to_vec(),
                },
            )],
            state: vec![
                StateOp::Increment {
                    key: "points:u-1".into(),
                    delta: -3,
                },
                StateOp::Set {
                    key: "level:u-1".into(),
                    value: vec![1, 2, 3],
                },
                StateOp::Delete { key: "x".into() },
            ],
        });
        assert!(record.has_effects());
        assert_eq!(Record::decode(&record.encode()).expect("decodes"), record);
        assert!(Record::decode(b"{\"epoch\":").is_err());
        assert!(Record::decode(b"\xff\x00").is_err());
    }
}
