//! How a tidelog table and key become NATS subject tokens, message ids and
//! KV keys, reversibly where NATS allows it.
//!
//! A NATS subject token cannot be empty nor hold `.`, `*`, `>` or
//! whitespace, and a whole publish line must fit the server's control line
//! (4 KiB by default), while a tidelog key can be any string. A token is:
//!
//! - an integer key: its decimal form (`42`, `-7`); it starts with a digit
//!   or `-`, which no other form does;
//! - a string of 1-[`MAX_PLAIN`] characters from `A-Z a-z 0-9 _ -` that
//!   starts with a letter or `_`: the string itself (`sensor_1`);
//! - any other string whose escaped form fits [`MAX_TOKEN`]: `%` followed
//!   by the string's UTF-8 bytes, each byte outside `A-Z a-z 0-9 _ -` as
//!   `%XX` (upper-case hex): `a.b` is `%a%2Eb`, `42` (a string) is `%42`,
//!   the empty string is `%`;
//! - a longer string: `#` and the 64 hex digits of the SHA-256 of its UTF-8
//!   bytes. This one is not reversible from the subject; every message also
//!   carries the key as JSON in its `Tidelog-Key` header, which is what a
//!   consumer should read.
//!
//! Tokens never contain `:`, so a message id made of tokens joined by `:`
//! is unambiguous.

use crate::local::codec::Key;

/// Longest string kept as is.
pub const MAX_PLAIN: usize = 128;
/// Longest escaped token before the digest form takes over. Keeps
/// `<prefix>.<table>.<key>` well inside the server's 4 KiB control line.
pub const MAX_TOKEN: usize = 256;

fn is_safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_plain(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_PLAIN
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.iter().all(|&b| is_safe_byte(b))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn escape_into(s: &str, out: &mut String, escape: char) {
    for &b in s.as_bytes() {
        if is_safe_byte(b) {
            out.push(char::from(b));
        } else {
            out.push(escape);
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// The subject token of a string (a table name or a string key).
pub fn string_token(s: &str) -> String {
    if is_plain(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 1);
    out.push('%');
    escape_into(s, &mut out, '%');
    if out.len() <= MAX_TOKEN {
        return out;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = String::with_capacity(65);
    out.push('#');
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    out
}

/// The subject token of a key.
pub fn key_token(key: &Key) -> String {
    match key {
        Key::Int(i) => i.to_string(),
        Key::Str(s) => string_token(s),
    }
}

/// What a subject token says about the key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedToken {
    Key(Key),
    /// A digest token (a long string key): read the `Tidelog-Key` header.
    Digest,
}

/// Reads a token made by [`key_token`] back; `None`: not such a token.
pub fn decode_key_token(token: &str) -> Option<DecodedToken> {
    let first = *token.as_bytes().first()?;
    if first.is_ascii_digit() || first == b'-' {
        return token.parse().ok().map(|i| DecodedToken::Key(Key::Int(i)));
    }
    if first == b'#' {
        let hex = &token[1..];
        return (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(DecodedToken::Digest);
    }
    if first == b'%' {
        let bytes = &token.as_bytes()[1..];
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                let v = u8::from_str_radix(hex, 16).ok()?;
                // One spelling per string: a safe byte is never escaped.
                if is_safe_byte(v) {
                    return None;
                }
                out.push(v);
                i += 3;
            } else if is_safe_byte(b) {
                out.push(b);
                i += 1;
            } else {
                return None;
            }
        }
        let s = String::from_utf8(out).ok()?;
        return (!is_plain(&s)).then_some(DecodedToken::Key(Key::Str(s)));
    }
    is_plain(token).then(|| DecodedToken::Key(Key::Str(token.to_string())))
}

/// A KV key part (KV keys allow `A-Z a-z 0-9 - _ = / .`): bytes outside
/// `A-Z a-z 0-9 _ -` as `=XX`. Not empty for a non-empty name.
pub fn kv_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out, '=');
    out
}

/// The `Nats-Msg-Id` of a write: origin node, stamp time, table, key. The
/// same write always gets the same id, so the server drops a republish
/// within its duplicate window.
pub fn msg_id(node: u64, time: u64, table_token: &str, key_token: &str) -> String {
    format!("tl:{node}:{time}:{table_token}:{key_token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(key: Key) -> String {
        let token = key_token(&key);
        assert!(!token.is_empty(), "{key:?}");
        assert!(
            !token.contains(['.', '*', '>', ':']) && !token.chars().any(char::is_whitespace),
            "{key:?} -> {token}"
        );
        assert!(token.len() <= MAX_TOKEN, "{key:?}");
        assert_eq!(decode_key_token(&token), Some(DecodedToken::Key(key)));
        token
    }

    #[test]
    fn plain_keys_stay_readable() {
        assert_eq!(round_trip(Key::Str("sensor_1".into())), "sensor_1");
        assert_eq!(round_trip(Key::Int(42)), "42");
        assert_eq!(round_trip(Key::Int(-7)), "-7");
        assert_eq!(round_trip(Key::Int(i64::MIN)), i64::MIN.to_string());
    }

    #[test]
    fn hostile_keys_escape_and_round_trip() {
        assert_eq!(round_trip(Key::Str("a.b".into())), "%a%2Eb");
        assert_eq!(round_trip(Key::Str(String::new())), "%");
        assert_eq!(round_trip(Key::Str("42".into())), "%42");
        assert_eq!(round_trip(Key::Str("-7".into())), "%-7");
        for s in [
            "*",
            ">",
            "a b",
            "tab\there",
            "new\nline",
            "%41",
            "#abc",
            ":",
            "ünïcødé ✓",
            "\u{0}",
            "a.*.>",
        ] {
            round_trip(Key::Str(s.into()));
        }
    }

    #[test]
    fn long_keys_become_digests() {
        let long = "k.".repeat(2048);
        let token = key_token(&Key::Str(long.clone()));
        assert_eq!(token.len(), 65);
        assert_eq!(decode_key_token(&token), Some(DecodedToken::Digest));
        assert_ne!(token, key_token(&Key::Str(format!("{long}x"))));
        // The longest plain string stays plain; one more character escapes.
        let plain = "a".repeat(MAX_PLAIN);
        assert_eq!(round_trip(Key::Str(plain.clone())), plain);
        round_trip(Key::Str(format!("{plain}a")));
    }

    #[test]
    fn foreign_tokens_are_refused() {
        for t in [
            "", "%%4", "%%zz", "%%41", "%a", "#12", "a.b", "1x", "--", "%\u{e9}", "%%C3",
        ] {
            assert_eq!(decode_key_token(t), None, "{t:?}");
        }
    }

    #[test]
    fn kv_parts_use_kv_characters() {
        assert_eq!(kv_part("hub-1"), "hub-1");
        assert_eq!(kv_part("jetstream:tidelog"), "jetstream=3Atidelog");
        assert!(kv_part("a.b/ü")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)));
    }
}
