//! The versioned encoding of every record that outlives a process or
//! crosses between processes of possibly different berth versions: Raft log
//! entries and the commands in them, votes, snapshots and the state they
//! hold, and the manager-to-manager messages.
//!
//! A record is a two-byte envelope, [`MAGIC`] and the format version, then
//! the value as MessagePack with named fields (`rmp_serde::to_vec_named`).
//! Named fields make the encoding evolve as protobuf does: a reader skips
//! fields it does not know, and a field it knows but does not find takes
//! its `#[serde(default)]`. The rules for changing an encoded type are in
//! `ARCHITECTURE.md` (*Formats and versions*); in short:
//!
//! - a new field gets `#[serde(default)]`, and a write that sets it is
//!   refused until the cluster version says every manager keeps it;
//! - a field is never renamed, retyped or removed (stop writing it instead);
//! - a new enum variant (a new command kind) is written only once the
//!   cluster version says every manager can read it;
//! - an incompatible change of the envelope's encoding makes a new
//!   [`FORMAT_VERSION`]; the decoder keeps reading every version from
//!   [`OLDEST_READABLE_FORMAT`] on.
//!
//! Invariant: pure, no I/O; every encoded record starts with the envelope.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of every record: tells a berth record from anything else
/// (such as the unversioned postcard records of builds before 0.1).
pub const MAGIC: u8 = 0xBE;
/// The format this build writes.
pub const FORMAT_VERSION: u8 = 1;
/// The oldest format this build still reads.
pub const OLDEST_READABLE_FORMAT: u8 = 1;
/// Bytes before the value.
pub const ENVELOPE_BYTES: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error(
        "not a versioned berth record (it does not start with the format envelope); \
         data written by berth before release 0.1 cannot be read"
    )]
    NotVersioned,
    #[error(
        "written in format version {found}, which this berth (reading formats \
         {OLDEST_READABLE_FORMAT} to {FORMAT_VERSION}) cannot read: {}",
        if *found > FORMAT_VERSION { "it comes from a newer berth" } else { "it is too old to migrate" }
    )]
    UnreadableFormat { found: u8 },
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode a format {format} record: {reason}")]
    Decode { format: u8, reason: String },
}

/// Encodes `value` in the current format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = vec![MAGIC, FORMAT_VERSION];
    rmp_serde::encode::write_named(&mut bytes, value).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Decodes a record of any readable format.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let format = format_of(bytes)?;
    rmp_serde::from_slice(&bytes[ENVELOPE_BYTES..]).map_err(|e| CodecError::Decode { format, reason: e.to_string() })
}

/// The format version of a record, if this build can read it.
pub fn format_of(bytes: &[u8]) -> Result<u8, CodecError> {
    match bytes {
        [MAGIC, format, ..] if (OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(format) => Ok(*format),
        [MAGIC, format, ..] => Err(CodecError::UnreadableFormat { found: *format }),
        _ => Err(CodecError::NotVersioned),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Command {
        Create { name: String, replicas: u64 },
        Remove { name: String },
    }

    /// The same record as an older build knew it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SpecV1 {
        name: String,
        replicas: u64,
    }

    /// A newer build added a field, with a default for records without it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SpecV2 {
        name: String,
        replicas: u64,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }

    #[test]
    fn a_newer_reader_defaults_a_field_an_older_writer_did_not_know() -> Result<(), CodecError> {
        let old = encode(&SpecV1 { name: "web".into(), replicas: 3 })?;
        let read: SpecV2 = decode(&old)?;
        assert_eq!(read, SpecV2 { name: "web".into(), replicas: 3, labels: BTreeMap::new() });
        Ok(())
    }

    #[test]
    fn an_older_reader_skips_a_field_a_newer_writer_added() -> Result<(), CodecError> {
        let labels = BTreeMap::from([("tier".to_string(), "front".to_string())]);
        let new = encode(&SpecV2 { name: "web".into(), replicas: 3, labels })?;
        let read: SpecV1 = decode(&new)?;
        assert_eq!(read, SpecV1 { name: "web".into(), replicas: 3 });
        Ok(())
    }

    #[test]
    fn unversioned_and_future_records_are_refused_with_what_they_are() {
        let unversioned = [0x01, 0x03, b'w', b'e', b'b'];
        assert_eq!(decode::<SpecV1>(&unversioned), Err(CodecError::NotVersioned));
        assert_eq!(decode::<SpecV1>(&[]), Err(CodecError::NotVersioned));
        let future = [MAGIC, FORMAT_VERSION + 1, 0x90];
        let refused = decode::<SpecV1>(&future);
        assert_eq!(refused, Err(CodecError::UnreadableFormat { found: FORMAT_VERSION + 1 }));
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("newer berth") && message.contains(&FORMAT_VERSION.to_string()), "{message}");
    }

    #[test]
    fn a_record_of_the_wrong_shape_is_a_decode_error_naming_its_format() {
        let bytes = encode(&Command::Remove { name: "web".into() }).unwrap_or_default();
        assert!(matches!(decode::<SpecV1>(&bytes), Err(CodecError::Decode { format: FORMAT_VERSION, .. })));
    }

    proptest! {
        #[test]
        fn every_value_round_trips(name in ".{0,40}", replicas in any::<u64>(), remove in any::<bool>()) {
            let command = if remove { Command::Remove { name } } else { Command::Create { name, replicas } };
            let bytes = encode(&command).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&bytes[..ENVELOPE_BYTES], &[MAGIC, FORMAT_VERSION]);
            prop_assert_eq!(decode::<Command>(&bytes), Ok(command));
        }
    }
}
