//! The stored row: a header (tombstone flag, version stamp, creation time,
//! the version the write replaced) and then the record's JSON, or a
//! tombstone's log sequence. Index entries of scalar attributes carry the
//! same bytes (see `index_entries`).
//!
//! A record's first version is most of what an edge writes (readings with
//! new keys), and its creation time is its stamp's time and its base the
//! zero stamp: flag bits stand for those two fields instead of 24 stored
//! bytes, in the row and in its index entries' copies.

use crate::error::{Error, Result};
use crate::local::codec::Stamp;

/// A stored row: a live record or a tombstone, with its version stamp.
#[derive(Clone)]
pub(crate) struct RowHeader {
    pub(crate) tombstone: bool,
    pub(crate) stamp: Stamp,
    /// HLC time at which the record was first created (kept across updates).
    pub(crate) created: u64,
    /// The version this one replaced at its origin (its *base*, see
    /// `local::settle`), where conflict handling recorded one; the zero
    /// stamp when the write replaced nothing. Kept in the row rather than
    /// beside it so a write costs no extra key.
    pub(crate) base: Option<Stamp>,
}

const FLAG_TOMBSTONE: u8 = 1;
/// A base stamp is stored after the creation time.
const FLAG_BASE: u8 = 2;
/// The creation time is the stamp's time and is not stored.
const FLAG_CREATED_AT_STAMP: u8 = 4;
/// The base is the zero stamp and is not stored.
const FLAG_BASE_NOTHING: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_TOMBSTONE | FLAG_BASE | FLAG_CREATED_AT_STAMP | FLAG_BASE_NOTHING;

const STAMP_LEN: usize = 16;
const TIME_LEN: usize = 8;

/// The header length a flag byte announces. Rows written before bases moved
/// into the row, or before the two short forms, use flags 0-3 and read as
/// they always did.
fn header_len(flags: u8) -> usize {
    let created = if flags & FLAG_CREATED_AT_STAMP != 0 {
        0
    } else {
        TIME_LEN
    };
    let base = if flags & FLAG_BASE != 0 { STAMP_LEN } else { 0 };
    1 + STAMP_LEN + created + base
}

impl RowHeader {
    fn flags(&self) -> u8 {
        let mut flags = u8::from(self.tombstone);
        if self.created == self.stamp.time {
            flags |= FLAG_CREATED_AT_STAMP;
        }
        match self.base {
            Some(b) if b == Stamp::default() => flags |= FLAG_BASE_NOTHING,
            Some(_) => flags |= FLAG_BASE,
            None => {}
        }
        flags
    }
}

/// Whether a stored row is a live record, from its flag byte alone (for
/// counting; a damaged flag byte counts as not live).
pub(crate) fn is_live_row(v: &[u8]) -> bool {
    v.first()
        .is_some_and(|f| f & !KNOWN_FLAGS == 0 && f & FLAG_TOMBSTONE == 0)
}

pub(crate) fn encode_row(h: &RowHeader, body: &[u8]) -> Vec<u8> {
    let flags = h.flags();
    let mut v = Vec::with_capacity(header_len(flags) + body.len());
    v.push(flags);
    v.extend_from_slice(&h.stamp.time.to_be_bytes());
    v.extend_from_slice(&h.stamp.node.to_be_bytes());
    if flags & FLAG_CREATED_AT_STAMP == 0 {
        v.extend_from_slice(&h.created.to_be_bytes());
    }
    if let (Some(b), true) = (h.base, flags & FLAG_BASE != 0) {
        v.extend_from_slice(&b.time.to_be_bytes());
        v.extend_from_slice(&b.node.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

/// A stored row's header and where its body starts.
pub(crate) fn decode_row(v: &[u8]) -> Result<(RowHeader, usize)> {
    let flags = *v
        .first()
        .ok_or_else(|| Error::Corrupt("row header: empty row".into()))?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::Corrupt(format!(
            "row header: unknown flags {flags:#04x} (a newer tidelog wrote it, or the row is damaged)"
        )));
    }
    if flags & FLAG_BASE != 0 && flags & FLAG_BASE_NOTHING != 0 {
        return Err(Error::Corrupt(format!(
            "row header: flags {flags:#04x} both store a base and say there is none (the row is damaged)"
        )));
    }
    let len = header_len(flags);
    if v.len() < len {
        return Err(Error::Corrupt(format!(
            "row header: {} bytes, expected at least {len}",
            v.len()
        )));
    }
    let u = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let stamp = Stamp {
        time: u(1),
        node: u(9),
    };
    let (created, base_at) = if flags & FLAG_CREATED_AT_STAMP != 0 {
        (stamp.time, 17)
    } else {
        (u(17), 25)
    };
    let base = if flags & FLAG_BASE != 0 {
        Some(Stamp {
            time: u(base_at),
            node: u(base_at + 8),
        })
    } else if flags & FLAG_BASE_NOTHING != 0 {
        Some(Stamp::default())
    } else {
        None
    };
    let header = RowHeader {
        tombstone: flags & FLAG_TOMBSTONE != 0,
        stamp,
        created,
        base,
    };
    Ok((header, len))
}

/// A live row's JSON text, from where [`decode_row`] said its body starts.
pub(crate) fn row_json(v: &[u8], body_at: usize) -> Result<&str> {
    std::str::from_utf8(&v[body_at..]).map_err(|_| Error::Corrupt("record is not UTF-8".into()))
}

pub(crate) fn decode_row_header(v: &[u8]) -> Result<RowHeader> {
    decode_row(v).map(|(h, _)| h)
}

/// A row as it stands before a write, from storage or from an earlier write
/// of the same commit.
#[derive(Clone)]
pub(crate) struct OldRow {
    pub(crate) header: RowHeader,
    pub(crate) json: std::sync::Arc<str>,
}

impl OldRow {
    pub(crate) fn object(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        match serde_json::from_str::<serde_json::Value>(&self.json) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(Error::Corrupt("stored record is not a JSON object".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row_body(v: &[u8]) -> Result<&[u8]> {
        let (_, at) = decode_row(v)?;
        Ok(&v[at..])
    }

    fn stamp(time: u64, node: u64) -> Stamp {
        Stamp { time, node }
    }

    /// Every combination of the fields the short forms stand for reads
    /// back as written, and the short forms are shorter by what they omit.
    #[test]
    fn every_header_form_round_trips() {
        let s = stamp(7 << 16, 9);
        for tombstone in [false, true] {
            for created in [s.time, 3] {
                for base in [None, Some(Stamp::default()), Some(stamp(5 << 16, 2))] {
                    let h = RowHeader {
                        tombstone,
                        stamp: s,
                        created,
                        base,
                    };
                    let v = encode_row(&h, b"{\"a\":1}");
                    let (back, at) = decode_row(&v).unwrap();
                    assert_eq!(
                        (back.tombstone, back.stamp, back.created, back.base),
                        (tombstone, s, created, base)
                    );
                    assert_eq!(&v[at..], b"{\"a\":1}");
                    let omitted = if created == s.time { 8 } else { 0 };
                    let stored_base = if base.is_some_and(|b| b != Stamp::default()) {
                        16
                    } else {
                        0
                    };
                    assert_eq!(
                        at,
                        25 - omitted + stored_base,
                        "{tombstone} {created} {base:?}"
                    );
                    assert_eq!(is_live_row(&v), !tombstone);
                }
            }
        }
    }

    /// A new record's row (base: the zero stamp, created: its stamp) is 24
    /// bytes shorter than it was written before the short forms.
    #[test]
    fn a_first_version_stores_neither_its_creation_time_nor_a_zero_base() {
        let s = stamp(7 << 16, 9);
        let h = RowHeader {
            tombstone: false,
            stamp: s,
            created: s.time,
            base: Some(Stamp::default()),
        };
        assert_eq!(encode_row(&h, b"{}").len(), 17 + 2);
    }

    /// Rows written by earlier versions keep reading with the body where
    /// they put it, including a zero base stored in full.
    #[test]
    fn rows_in_the_earlier_layouts_still_read() {
        let time = 7u64 << 16;
        // Before bases moved into the row: flag byte 0/1, 25 header bytes.
        let mut old = vec![1u8];
        old.extend_from_slice(&time.to_be_bytes());
        old.extend_from_slice(&9u64.to_be_bytes());
        old.extend_from_slice(&0u64.to_be_bytes());
        old.extend_from_slice(&42u64.to_be_bytes());
        let back = decode_row_header(&old).unwrap();
        assert!(back.tombstone && back.base.is_none());
        assert_eq!(back.stamp, stamp(time, 9));
        assert_eq!(row_body(&old).unwrap(), &42u64.to_be_bytes());
        // With a base, stored in full even when it was the zero stamp.
        let mut zero_base = vec![FLAG_BASE];
        zero_base.extend_from_slice(&time.to_be_bytes());
        zero_base.extend_from_slice(&9u64.to_be_bytes());
        zero_base.extend_from_slice(&time.to_be_bytes());
        zero_base.extend_from_slice(&[0; 16]);
        zero_base.extend_from_slice(b"{}");
        let (back, at) = decode_row(&zero_base).unwrap();
        assert_eq!(
            (back.base, back.created, at),
            (Some(Stamp::default()), time, 41)
        );
        assert_eq!(row_body(&zero_base).unwrap(), b"{}");
    }

    #[test]
    fn damaged_row_headers_are_corrupt_not_panics() {
        let h = RowHeader {
            tombstone: false,
            stamp: stamp(1, 1),
            created: 2,
            base: Some(stamp(2, 2)),
        };
        let good = encode_row(&h, b"{}");
        let mut unknown_flag = good.clone();
        unknown_flag[0] = 0x10;
        let mut all_flags = good.clone();
        all_flags[0] = 0xFF;
        let mut base_and_none = good.clone();
        base_and_none[0] = FLAG_BASE | FLAG_BASE_NOTHING;
        // The base flag set on a row too short to hold the base.
        let mut short = encode_row(
            &RowHeader {
                base: None,
                ..h.clone()
            },
            b"",
        );
        short[0] = FLAG_BASE;
        for bad in [
            &unknown_flag[..],
            &all_flags[..],
            &base_and_none[..],
            &short[..],
            &good[..30],
            &[][..],
        ] {
            assert!(matches!(decode_row_header(bad), Err(Error::Corrupt(_))));
            assert!(matches!(row_body(bad), Err(Error::Corrupt(_))));
            assert!(bad.is_empty() || bad[0] & !KNOWN_FLAGS == 0 || !is_live_row(bad));
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
            if let Ok((_, at)) = decode_row(&bytes) {
                prop_assert!(at <= bytes.len());
            }
        }
    }
}
