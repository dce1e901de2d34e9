//! Reading a large configuration one `[[residents]]` entry at a time.
//!
//! A TOML parser holds a whole document at once. For 10,000 residents (a 1.3 MB file) the
//! `config` crate's parser peaked at ~40 MB of heap: its token list alone was 18 MB, and the
//! value tree 11 MB more. Here the entries are cut out of the text along their table headers,
//! found with the TOML lexer of `toml_parser` (so a `[` inside a string, a comment or an array
//! is never taken for a header). Each entry is then parsed on its own, and the rest of the
//! file, now small, is read as before.
//!
//! Cutting is only an optimisation: whenever the text is not plain enough to cut safely
//! (no entries at all, or a `[residents.x]` sub-table that does not directly follow its
//! entry), `cut_residents` returns `None` and the caller reads the whole file in one go.

use toml_parser::lexer::TokenKind;
use toml_parser::Source;

/// The configuration text with its `[[residents]]` entries taken out.
#[derive(Debug)]
pub(super) struct Cut<'t> {
    /// The file without its `[[residents]]` entries, in file order.
    pub rest: String,
    /// Where each piece of `rest` starts: (offset in `rest`, offset in the file).
    pieces: Vec<(usize, usize)>,
    /// Each entry's text, header (and any `[residents.x]` sub-tables) included, with the
    /// offset in the file where it starts.
    pub residents: Vec<(usize, &'t str)>,
}

impl Cut<'_> {
    /// The file offset of byte `offset` of `rest`.
    pub fn file_offset(&self, offset: usize) -> usize {
        let i = self.pieces.partition_point(|&(r, _)| r <= offset);
        match i.checked_sub(1).and_then(|i| self.pieces.get(i)) {
            Some(&(r, f)) => f + (offset - r),
            None => offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `[[residents]]`: a new entry.
    Entry,
    /// `[residents.x]` or `[[residents.x]]`: part of the entry above it.
    Part,
    Other,
}

/// Cuts the `[[residents]]` entries out of `text`; `None` if there are none or the text is
/// not plain enough to cut (see the module comment).
pub(super) fn cut_residents(text: &str) -> Option<Cut<'_>> {
    let headers = top_level_headers(text);
    let first = headers.first().map_or(text.len(), |h| h.0);
    let mut rest = String::with_capacity(first + 4096);
    let mut pieces = vec![(0, 0)];
    rest.push_str(&text[..first]);
    let mut residents: Vec<(usize, &str)> = Vec::new();
    let mut after_entry = false;
    for (i, &(start, kind)) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |h| h.0);
        match kind {
            Header::Entry => {
                residents.push((start, &text[start..end]));
                after_entry = true;
            }
            Header::Part if after_entry => {
                let (entry_start, _) = residents.last()?;
                let entry_start = *entry_start;
                *residents.last_mut()? = (entry_start, &text[entry_start..end]);
            }
            Header::Part => return None,
            Header::Other => {
                pieces.push((rest.len(), start));
                rest.push_str(&text[start..end]);
                after_entry = false;
            }
        }
    }
    if residents.is_empty() {
        return None;
    }
    Some(Cut {
        rest,
        pieces,
        residents,
    })
}

/// The start offset and kind of every table header at the top level of `text`: a `[` that
/// begins a line outside any value.
fn top_level_headers(text: &str) -> Vec<(usize, Header)> {
    let mut headers = Vec::new();
    let mut tokens = Source::new(text).lex();
    // How deep inside arrays and inline tables of a value we are.
    let mut depth = 0u32;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Eof => break,
            TokenKind::Newline => line_start = true,
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let start = token.span().start();
                let mut end = token.span().end();
                let mut comment = false;
                for t in tokens.by_ref() {
                    match t.kind() {
                        TokenKind::Newline | TokenKind::Eof => break,
                        TokenKind::Comment => comment = true,
                        TokenKind::Whitespace => {}
                        _ if !comment => end = t.span().end(),
                        _ => {}
                    }
                }
                headers.push((start, classify(&text[start..end])));
                line_start = true;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1);
                line_start = false;
            }
            _ => line_start = false,
        }
    }
    headers
}

fn classify(header: &str) -> Header {
    if header == "[[residents]]" {
        return Header::Entry;
    }
    // Any other spelling (`[[ residents ]]`, `[["residents"]]`, `[residents.x]`): the TOML
    // parser reads the header's key.
    match header.parse::<toml::Table>() {
        Ok(t) if t.len() == 1 => match t.get("residents") {
            Some(toml::Value::Array(_)) => Header::Entry,
            Some(toml::Value::Table(_)) => Header::Part,
            _ => Header::Other,
        },
        _ => Header::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# a comment with [[residents]] in it
site_id = "x"
note = """
[[residents]]
not a header
"""
list = [
  ["nested"],
]

[mqtt]
url = "mqtt://a"

[[residents]] # first
id = "r1"
team = [
 "a",
]

[[ residents ]]
id = "r2"
[residents.extra]
k = 1

[[staff]]
id = "a"

  [[residents]]
id = "r3"
"#;

    #[test]
    fn entries_are_cut_out_along_top_level_headers_only() {
        let cut = cut_residents(FILE).expect("cut");
        let texts: Vec<&str> = cut.residents.iter().map(|r| r.1).collect();
        assert_eq!(texts.len(), 3);
        assert!(texts[0].starts_with("[[residents]] # first\nid = \"r1\""));
        assert!(texts[0].ends_with("]\n\n"));
        assert!(texts[1].starts_with("[[ residents ]]\nid = \"r2\"\n[residents.extra]\nk = 1"));
        assert_eq!(texts[2], "[[residents]]\nid = \"r3\"\n");
        for &(at, t) in &cut.residents {
            assert_eq!(&FILE[at..at + t.len()], t);
        }
        // The rest is still valid TOML, and holds everything but the entries.
        let rest: toml::Table = cut.rest.parse().expect("rest parses");
        assert!(rest.get("residents").is_none());
        assert_eq!(rest["mqtt"]["url"].as_str(), Some("mqtt://a"));
        assert_eq!(rest["staff"][0]["id"].as_str(), Some("a"));
        assert!(rest["note"].as_str().unwrap().contains("[[residents]]"));
        // Each entry parses on its own into one resident.
        for (_, t) in &cut.residents {
            let one: toml::Table = t.parse().expect("entry parses");
            assert_eq!(one["residents"].as_array().map(Vec::len), Some(1));
        }
    }

    #[test]
    fn offsets_in_the_rest_map_back_to_the_file() {
        let cut = cut_residents(FILE).unwrap();
        let at = cut.rest.find("[[staff]]").unwrap();
        assert_eq!(&FILE[cut.file_offset(at)..][..9], "[[staff]]");
        let at = cut.rest.find("url =").unwrap();
        assert_eq!(&FILE[cut.file_offset(at)..][..5], "url =");
    }

    use proptest::prelude::*;

    /// A `[[residents]]` entry in one of many spellings, with values that look like headers.
    fn entry(n: usize) -> impl Strategy<Value = String> {
        let header = prop_oneof![
            Just("[[residents]]".to_string()),
            Just("[[ residents ]]".to_string()),
            Just("[[\"residents\"]]".to_string()),
            Just("  [[residents]]   # the next one".to_string()),
        ];
        let name = prop_oneof![
            Just("\"王秀英\"".to_string()),
            Just("\"\"\"\n[[residents]]\nnot a header\n\"\"\"".to_string()),
            Just("'[mqtt]'".to_string()),
            Just("\"a # not a comment\"".to_string()),
        ];
        let team = prop_oneof![
            Just("[\"li\"]".to_string()),
            Just("[\n  \"li\",\n  # [[residents]]\n  \"wang\",\n]".to_string()),
            Just("[\n[\"nested\"],\n]".to_string()),
            Just("{ a = [1,\n2] }".to_string()),
        ];
        let part = prop_oneof![
            Just(String::new()),
            Just("[residents.extra]\nk = 1\n".to_string()),
            Just("\n# a comment\n\n[[residents.pets]]\nname = \"cat\"\n".to_string()),
        ];
        (header, name, team, part).prop_map(move |(h, name, team, part)| {
            format!("{h}\nid = \"r{n}\"\nname = {name}\nteam = {team}\n{part}\n")
        })
    }

    fn other(n: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            Just(format!(
                "[[staff]]\nid = \"s{n}\"\nnote = \"\"\"\n[x]\n\"\"\"\n\n"
            )),
            Just(format!("[section{n}]\nlist = [\n  [1],\n]\n\n")),
            Just(format!("[section{n}.sub]\nk = '[[residents]]'\n\n")),
        ]
    }

    fn document() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<bool>(), 1..12).prop_flat_map(|kinds| {
            let parts: Vec<BoxedStrategy<String>> = kinds
                .iter()
                .enumerate()
                .map(|(i, &is_entry)| {
                    if is_entry {
                        entry(i).boxed()
                    } else {
                        other(i).boxed()
                    }
                })
                .collect();
            parts.prop_map(|p| format!("site_id = \"x\" # [[residents]]\n\n{}", p.concat()))
        })
    }

    proptest! {
        #[test]
        fn cutting_reads_the_same_values_as_parsing_the_whole_text(text in document()) {
            let whole: toml::Table = text.parse().expect("the generated text is TOML");
            let Some(cut) = cut_residents(&text) else {
                // Only texts without entries are left whole here.
                prop_assert!(whole.get("residents").is_none(), "{text}");
                return Ok(());
            };
            let expected = whole["residents"].as_array().expect("an array of entries");
            prop_assert_eq!(cut.residents.len(), expected.len(), "{}", text);
            for ((_, t), want) in cut.residents.iter().zip(expected) {
                let one: toml::Table = t.parse().expect("an entry parses on its own");
                prop_assert_eq!(&one["residents"][0], want, "{}", t);
            }
            let rest: toml::Table = cut.rest.parse().expect("the rest parses");
            let mut whole = whole;
            whole.remove("residents");
            prop_assert_eq!(rest, whole, "{}", cut.rest);
        }
    }

    #[test]
    fn texts_it_cannot_cut_safely_are_left_whole() {
        assert!(cut_residents("site_id = \"x\"\n[mqtt]\nurl = \"y\"\n").is_none());
        // A sub-table whose entry is not directly above it.
        let late = "[[residents]]\nid = \"r1\"\n[mqtt]\nurl = \"y\"\n[residents.extra]\nk = 1\n";
        assert!(cut_residents(late).is_none());
    }
}
