//! Validation of the text a clinician submits, before any work is done on it.

use crate::user_files::Limit;
use crate::{Error, Result};

/// The longest text accepted, in characters (Unicode scalar values).
///
/// 100,000 characters is roughly 40 pages of a dense note: well beyond a
/// discharge summary, small enough that a 2-core workstation classifies it in a
/// few seconds through overlapping windows.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// Checks that `text` has something to classify and is within the limit.
pub fn validate(text: &str) -> Result<()> {
    validate_within(text, MAX_TEXT_CHARS)
}

/// [`validate`] with a lower `limit` (the machine policy's).
pub fn validate_within(text: &str, limit: usize) -> Result<()> {
    if !has_content(text) {
        return Err(Error::EmptyText);
    }
    let limit = limit.min(MAX_TEXT_CHARS);
    let chars = text.chars().count();
    if chars > limit {
        return Err(Error::TextTooLong { chars, limit });
    }
    Ok(())
}

/// Whether `text` has anything to classify: a character that is neither
/// white space nor invisible. A "note" of NUL bytes or zero-width spaces
/// (pasted from a broken export) would otherwise be classified as
/// confidently as a real one.
pub fn has_content(text: &str) -> bool {
    text.chars().any(|c| !c.is_whitespace() && !is_invisible(c))
}

/// Control characters (C0, DEL, C1) and Unicode's default-ignorable code
/// points (Unicode 15, DerivedCoreProperties.txt): zero-width spaces and
/// joiners, word joiner, byte order mark, soft hyphen, bidirectional and
/// variation selectors, Hangul fillers, tags. They show nothing by
/// themselves.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// The most bytes read from a file or pipe for one text: the longest text
/// at four bytes per character. Reading stops there, so a huge file (or
/// `/dev/zero`) is refused without being loaded.
pub const INPUT_LIMIT: Limit = Limit {
    bytes: 4 * MAX_TEXT_CHARS as u64,
    what: "one text to classify",
    advice: "split it into parts and classify each",
};

/// Reads one text from `reader` (a file, standard input) within
/// [`INPUT_LIMIT`], then decodes it.
pub fn read_bounded(reader: impl std::io::Read, source: &std::path::Path) -> Result<String> {
    decode_utf8(INPUT_LIMIT.read(reader, source)?)
}

/// Decodes bytes read from a file or pipe as UTF-8, with an error that says where
/// decoding failed (never what the bytes were).
pub fn decode_utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        offset: e.utf8_error().valid_up_to(),
    })
}

/// A cell for a CSV file that people open in a spreadsheet: one that starts
/// like a formula (`=`, `+`, `-`, `@`, a tab or a carriage return) gets a
/// leading apostrophe, so that a note beginning "=HYPERLINK(...)" is shown
/// as text, never run (OWASP's advice on CSV injection). JSON exports keep
/// every text exactly.
pub fn spreadsheet_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// `text` from a pack, an archive or a signature file as it may be printed:
/// control characters (terminal escape sequences, a bell, C1 codes) and the
/// invisible characters that reorder or hide text (bidi overrides,
/// zero-width marks) become `\u{..}` escapes, so a crafted name cannot drive
/// the terminal or disguise a message. Everything else, quotes and accents
/// included, is kept as it is, for names shown to people; messages quote
/// names with `{:?}`, which escapes the same characters.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let hidden = matches!(
            c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        );
        if c.is_control() || hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_look_like_formulas_are_kept_as_text() {
        assert_eq!(spreadsheet_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_cell("-2 mmol/L"), "'-2 mmol/L");
        assert_eq!(spreadsheet_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_cell("chest pain"), "chest pain");
        assert_eq!(spreadsheet_cell(""), "");
    }

    #[test]
    fn control_and_invisible_characters_are_printed_as_escapes() {
        assert_eq!(
            printable("\u{1b}[2Jx\u{7}\u{9b}31m\u{202e}y\n"),
            "\\u{1b}[2Jx\\u{7}\\u{9b}31m\\u{202e}y\\u{a}"
        );
        assert_eq!(printable("Crohn's \"disease\" é"), "Crohn's \"disease\" é");
    }

    #[test]
    fn a_text_is_read_up_to_the_limit_and_no_further() {
        let source = std::path::Path::new("note.txt");
        let at_limit = vec![b'a'; INPUT_LIMIT.bytes as usize];
        assert_eq!(
            read_bounded(&at_limit[..], source).unwrap().len(),
            at_limit.len()
        );
        let over = std::io::repeat(b'a'); // endless: must stop on its own
        let err = read_bounded(over, source).unwrap_err().to_string();
        assert!(
            err.starts_with("note.txt is larger than 400,000 bytes"),
            "{err}"
        );
        assert!(matches!(
            read_bounded(&b"ok \xff"[..], source),
            Err(Error::InvalidUtf8 { offset: 3 })
        ));
    }

    #[test]
    fn empty_and_whitespace_are_rejected() {
        assert!(matches!(validate(""), Err(Error::EmptyText)));
        assert!(matches!(validate(" \n\t "), Err(Error::EmptyText)));
    }

    #[test]
    fn a_text_of_only_invisible_characters_is_refused_like_whitespace() {
        for invisible in [
            "\0",
            "\0\0 \n\0",
            "\u{200b}\u{200c}\u{200d}",
            "\u{2060}\u{feff}",
            "\u{00ad}\u{034f}\u{180e}\u{2061}\u{206f}\u{3164}\u{fe0f}\u{e0001}",
            "\u{1}\u{7f}\u{85}\u{9f} \u{a0}\u{2028}\u{3000}",
        ] {
            let err = validate(invisible).unwrap_err();
            assert!(matches!(err, Error::EmptyText), "{invisible:?}");
            assert!(err.to_string().contains("invisible characters"), "{err}");
        }
        // Something visible among them is a text (a zero-width joiner is
        // part of many scripts' words).
        for visible in [
            "\u{200b}a",
            "\0 1",
            "\u{feff}chest pain",
            "\u{200d}\u{2764}",
        ] {
            assert!(validate(visible).is_ok(), "{visible:?}");
        }
    }

    #[test]
    fn over_the_limit_is_rejected_with_both_sizes() {
        let long = "a".repeat(MAX_TEXT_CHARS + 1);
        match validate(&long) {
            Err(Error::TextTooLong { chars, limit }) => {
                assert_eq!(chars, MAX_TEXT_CHARS + 1);
                assert_eq!(limit, MAX_TEXT_CHARS);
            }
            other => panic!("expected TextTooLong, got {other:?}"),
        }
        assert!(validate(&"é".repeat(MAX_TEXT_CHARS)).is_ok());
    }

    #[test]
    fn invalid_utf8_names_the_offset_not_the_content() {
        let err = decode_utf8(vec![b'o', b'k', 0xff, b'x']).unwrap_err();
        assert!(matches!(err, Error::InvalidUtf8 { offset: 2 }));
        assert!(!err.to_string().contains("ok"));
    }
}
