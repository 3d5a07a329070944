//! deb822 control data (Packages indexes, Release files, .deb `control`,
//! dpkg `status`): paragraphs of `Field: value` lines with continuation
//! lines. Hand-written because kiln reads ~60 MB of Packages text per
//! suite and only needs field lookup; the deb822 crates build a lossless
//! syntax tree that is several times slower for that.

/// One paragraph, kept as its text; fields are looked up on demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paragraph {
    pub text: String,
}

impl Paragraph {
    pub fn new(text: impl Into<String>) -> Paragraph {
        Paragraph { text: text.into() }
    }

    /// The value of a field (case-insensitive name), continuation lines
    /// joined with `\n`, trimmed.
    pub fn get(&self, name: &str) -> Option<String> {
        field(&self.text, name)
    }

    /// Field names in order.
    pub fn names(&self) -> Vec<&str> {
        self.text
            .lines()
            .filter(|l| !l.starts_with([' ', '\t']) && !l.starts_with('#'))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n))
            .collect()
    }
}

/// Looks a field up in paragraph text.
pub fn field(text: &str, name: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if !n.eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = v.trim().to_string();
        for cont in lines.by_ref() {
            if !cont.starts_with([' ', '\t']) {
                break;
            }
            value.push('\n');
            value.push_str(cont.trim_start());
        }
        return Some(value.trim().to_string());
    }
    None
}

/// Splits deb822 text into paragraphs (blank-line separated), returning
/// each paragraph's text and the 1-based line it starts on.
pub fn paragraphs(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (line, byte offset)
    let mut offset = 0;
    for (no, line) in text.split_inclusive('\n').enumerate() {
        let blank = line.trim().is_empty();
        match (blank, start) {
            (false, None) => start = Some((no + 1, offset)),
            (true, Some((l, s))) => {
                out.push((l, &text[s..offset]));
                start = None;
            }
            _ => {}
        }
        offset += line.len();
    }
    if let Some((l, s)) = start {
        out.push((l, &text[s..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_paragraphs() {
        let t =
            "Package: a\nVersion: 1\nDescription: x\n more\n .\n\nPackage: b\nDepends: c,\n d\n";
        let ps = paragraphs(t);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[1].0, 7);
        assert_eq!(field(ps[0].1, "package").as_deref(), Some("a"));
        assert_eq!(field(ps[0].1, "Description").as_deref(), Some("x\nmore\n."));
        assert_eq!(field(ps[1].1, "Depends").as_deref(), Some("c,\nd"));
        assert_eq!(field(ps[1].1, "Version"), None);
        assert_eq!(Paragraph::new(ps[1].1).names(), vec!["Package", "Depends"]);
    }
}
