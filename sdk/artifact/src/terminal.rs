//! Text safe to print on a terminal or in a log line.
//!
//! Text that comes from a registry (names, versions, descriptions, error
//! messages, field names quoted by a parse error; a search answer is not
//! even signed), from a plugin's metadata record or from a signature file
//! goes through [`escape`] before it is printed: it must not be able to
//! move the cursor, erase a line, start a new line or reorder characters on
//! the user's terminal, e.g. to forge a line "verified by key ...".
//! [`json`] is the same for JSON output. The host (`backworks`) and
//! `cargo backworks` both print through these, so there is one definition
//! of what is escaped.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: a control character
/// (C0 such as ESC, CR, LF, BEL; DEL; C1 such as CSI U+009B), a Unicode
/// bidirectional control (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066
/// to U+2069), or a line or paragraph separator (U+2028, U+2029).
pub fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` safe to print on a terminal: every character [`must_escape`]
/// says is written as an escape (`\n`, `\r`, `\t`, else `\u{1b}`), so the
/// text stays on its line and shows what it holds. Other text is returned
/// as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if must_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// `value` as pretty-printed JSON (two-space indent, like
/// `serde_json::to_string_pretty`) and a line break, with every character
/// [`must_escape`] names written as a `\uXXXX` escape: the same JSON
/// value, safe on a terminal. (`serde_json` already escapes every control
/// character below U+0020; this adds DEL, C1 and bidirectional controls
/// and the separators.)
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut bytes = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut bytes, TerminalSafe(Default::default()));
    if value.serialize(&mut serializer).is_err() {
        return String::from("null\n");
    }
    // The formatter writes only what serde_json gives it and ASCII escapes.
    let mut text = String::from_utf8(bytes).unwrap_or_default();
    text.push('\n');
    text
}

/// serde_json's pretty formatter, escaping what [`must_escape`] names in
/// strings (serde_json escapes C0 controls itself, before this sees them).
struct TerminalSafe(serde_json::ser::PrettyFormatter<'static>);

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| must_escape(c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            // Every such character is in the Basic Multilingual Plane.
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bidi_and_separator_characters_are_escaped() {
        for c in [
            '\u{1b}', '\r', '\n', '\u{7}', '\u{7f}', '\u{85}', '\u{9b}', '\u{61c}', '\u{200f}',
            '\u{202e}', '\u{2066}', '\u{2028}', '\u{2029}',
        ] {
            assert!(must_escape(c), "{c:?}");
        }
        assert_eq!(
            escape("ok\u{1b}[2K\rverified by key CAB78193ADCAB890\nnext\t\u{9b}\u{202e}"),
            "ok\\u{1b}[2K\\rverified by key CAB78193ADCAB890\\nnext\\t\\u{9b}\\u{202e}"
        );
        // Plain text and accents are left as they are.
        assert!(matches!(escape("Météo: 25 °C, 天气"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_keeps_the_data_and_nothing_raw() {
        let value = serde_json::json!({"d": "a\u{1b}[2K\r\nb\u{9b}c\u{7f}d\u{202e}e"});
        let printed = json(&value);
        assert!(printed.is_ascii(), "{printed}");
        assert!(
            printed.contains(r"a\u001b[2K\r\nb\u009bc\u007fd\u202ee"),
            "{printed}"
        );
        let decoded: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(decoded, value);
        assert_eq!(
            json(&serde_json::json!({"a": [1, "x"]})),
            serde_json::to_string_pretty(&serde_json::json!({"a": [1, "x"]})).unwrap() + "\n"
        );
    }
}
