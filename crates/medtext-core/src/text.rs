//! Validation of the text a clinician submits, before any work is done on it.

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
    if text.trim().is_empty() {
        return Err(Error::EmptyText);
    }
    let limit = limit.min(MAX_TEXT_CHARS);
    let chars = text.chars().count();
    if chars > limit {
        return Err(Error::TextTooLong { chars, limit });
    }
    Ok(())
}

/// Most bytes read from a file or pipe for one text: the longest text at
/// four bytes per character. Reading stops there, so a huge file is refused
/// without being loaded.
pub const MAX_INPUT_BYTES: u64 = 4 * MAX_TEXT_CHARS as u64;

/// Reads one text from `reader` (a file, standard input), refusing input
/// over [`MAX_INPUT_BYTES`] before it is all in memory, then decodes it.
pub fn read_bounded(reader: impl std::io::Read, source: &std::path::Path) -> Result<String> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut reader.take(MAX_INPUT_BYTES + 1), &mut bytes)
        .map_err(|e| Error::io(source, e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(Error::InputTooLarge {
            limit_bytes: MAX_INPUT_BYTES,
        });
    }
    decode_utf8(bytes)
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
    fn input_is_read_up_to_the_limit_and_no_further() {
        let source = std::path::Path::new("note.txt");
        let at_limit = vec![b'a'; MAX_INPUT_BYTES as usize];
        assert_eq!(
            read_bounded(&at_limit[..], source).unwrap().len(),
            at_limit.len()
        );
        let over = std::io::repeat(b'a'); // endless: must stop on its own
        assert!(matches!(
            read_bounded(over, source),
            Err(Error::InputTooLarge { .. })
        ));
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
