//! Reversible quoting of manifest paths that snapdir's format cannot carry.
//!
//! A manifest line ends at `\n`, and the text must be UTF-8, so a file name with a newline, a carriage
//! return or bytes that are not UTF-8 cannot be written verbatim (snapdir writes the newline as is and
//! produces a manifest it cannot read back; it refuses non-UTF-8 names). snapsync writes such a path in
//! double quotes with C-style escapes, as git does for `core.quotePath`:
//!
//! - `\\` and `\"` for a backslash and a double quote,
//! - `\n`, `\r`, `\t` for those characters,
//! - `\xHH` (two lowercase hex digits) for any other control byte (below 0x20, and 0x7f) and for each
//!   byte that is not part of valid UTF-8,
//! - every other character as itself.
//!
//! Only paths that need it are quoted, so every manifest snapdir can produce is rendered byte for byte as
//! snapdir renders it. The quoting is unambiguous because an unquoted path always starts with `./` (or
//! with `/` under `--absolute`), never with `"`. Exactly one quoted form is accepted for each path (the
//! one [`render`] produces), so a manifest has one canonical text and one snapshot id.

use std::borrow::Cow;

/// Whether `path` must be quoted to appear on a manifest line.
#[must_use]
pub fn needs_quoting(path: &[u8]) -> bool {
    path.first() == Some(&b'"')
        || path.iter().any(|&b| b == b'\n' || b == b'\r')
        || std::str::from_utf8(path).is_err()
}

/// The form of `path` that appears on a manifest line: verbatim when possible, quoted otherwise.
#[must_use]
pub fn render(path: &[u8]) -> Cow<'_, str> {
    if !needs_quoting(path)
        && let Ok(text) = std::str::from_utf8(path)
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(quote(path))
}

fn quote(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    out.push('"');
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\x7f' => push_hex_byte(&mut out, c as u8),
                c => out.push(c),
            }
        }
        for &byte in chunk.invalid() {
            push_hex_byte(&mut out, byte);
        }
    }
    out.push('"');
    out
}

fn push_hex_byte(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\x");
    out.push(char::from(DIGITS[usize::from(byte >> 4)]));
    out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
}

/// Recovers the raw path bytes from a path field of a manifest line.
///
/// # Errors
/// A description of the problem when a quoted field is malformed or not in canonical form.
pub fn parse(field: &str) -> Result<Cow<'_, [u8]>, &'static str> {
    let Some(inner) = field.strip_prefix('"') else {
        if needs_quoting(field.as_bytes()) {
            return Err("path with a carriage return must be quoted");
        }
        return Ok(Cow::Borrowed(field.as_bytes()));
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err("quoted path has no closing quote");
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(b'\\') => out.push(b'\\'),
                Some(b'"') => out.push(b'"'),
                Some(b'n') => out.push(b'\n'),
                Some(b'r') => out.push(b'\r'),
                Some(b't') => out.push(b'\t'),
                Some(b'x') => {
                    let high = bytes.next().and_then(hex_value);
                    let low = bytes.next().and_then(hex_value);
                    match (high, low) {
                        (Some(h), Some(l)) => out.push((h << 4) | l),
                        _ => return Err("quoted path has a bad \\x escape"),
                    }
                }
                _ => return Err("quoted path has an unknown escape"),
            },
            b'"' => return Err("quoted path has an unescaped quote"),
            b => out.push(b),
        }
    }
    // One text per path: anything but the form `render` writes (a quoted path that did not need quotes,
    // `\x41` for `A`, a raw tab) is refused, so equal manifests always have equal ids.
    if render(&out) != field {
        return Err("quoted path is not in canonical form");
    }
    Ok(Cow::Owned(out))
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_paths_are_verbatim() {
        for p in [
            "./",
            "./a b/c",
            "./tab\there",
            "./back\\slash",
            "./q\"uote",
            "./ünï/çødé",
            "/abs/x",
        ] {
            assert_eq!(render(p.as_bytes()), p);
            assert_eq!(parse(p).unwrap(), p.as_bytes());
        }
    }

    #[test]
    fn special_paths_are_quoted() {
        assert_eq!(render(b"./new\nline"), "\"./new\\nline\"");
        assert_eq!(render(b"./cr\r"), "\"./cr\\r\"");
        assert_eq!(render(b"./bad\xffname"), "\"./bad\\xffname\"");
        assert_eq!(render(b"./a\n\"b\\\x01\tc"), "\"./a\\n\\\"b\\\\\\x01\\tc\"");
        assert_eq!(render(b"\"leading"), "\"\\\"leading\"");
    }

    #[test]
    fn non_canonical_quoting_is_refused() {
        assert!(parse("\"./plain\"").is_err(), "quotes that are not needed");
        assert!(
            parse("\"./new\\x0aline\"").is_err(),
            "\\x for a byte with a short escape"
        );
        assert!(parse("\"./new\\nline").is_err(), "no closing quote");
        assert!(parse("\"./a\\q\\n\"").is_err(), "unknown escape");
        assert!(parse("\"./a\\x4\\n\"").is_err(), "short hex escape");
        assert!(parse("\"./a\"b\\n\"").is_err(), "unescaped quote");
        assert!(parse("\"./a\\xFF\"").is_err(), "uppercase hex");
        assert!(parse("./raw\rreturn").is_err(), "unquoted carriage return");
        assert!(parse("./raw\rreturn").is_err(), "unquoted carriage return");
    }

    proptest! {
        #[test]
        fn quoting_round_trips(path in proptest::collection::vec(any::<u8>(), 0..64)) {
            let rendered = render(&path);
            prop_assert!(!rendered.contains('\n') && !rendered.contains('\r'));
            let back = parse(&rendered).unwrap();
            prop_assert_eq!(back.as_ref(), path.as_slice());
        }
    }
}
