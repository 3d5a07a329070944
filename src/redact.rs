//! Masking secret values in text shown to people and machines.
//!
//! A [`Redactor`] holds the values of a build's secrets (`--secret`, used by
//! `RUN --mount=type=secret` as a file or with `env=`, and by auto builds)
//! and replaces each occurrence in a piece of text with [`MASK`]. It lives
//! in [`crate::progress::Progress`], the one choke point every log line,
//! task name, message and (in the CLI) error message passes through, so an
//! output mode or a report added later cannot forget it.
//!
//! What one secret value masks (each form only when at least [`MIN_LEN`]
//! bytes long, so that a secret such as `1` or `no` cannot mask ordinary
//! output):
//! - the value as given;
//! - the value without its trailing line ending (`\n`, `\r\n`): a secret
//!   file usually ends in one, a printed line never contains it;
//! - the value without surrounding whitespace;
//! - each line of a multi-line value (a PEM key printed line by line, a
//!   `.netrc`), with and without surrounding whitespace, for values up to
//!   [`MAX_SPLIT_LEN`] bytes: a larger file is data (a keystore, an archive)
//!   whose "lines" are arbitrary fragments.
//!
//! A form longer than [`MAX_LEN`] is not searched for: the matcher's size
//! grows with the patterns (a 4 MiB value takes over a second to add), and
//! no log line or message holds such a value whole.
//!
//! Values are compared as text (invalid UTF-8 replaced as in the logs,
//! which are read the same way). Only the literal text is found: an
//! encoding of a secret (base64, URL-escaped, hex) is not.
//!
//! All forms of all secrets are found in one pass by an Aho-Corasick
//! automaton (`aho-corasick`, the crate `regex` is built on), leftmost
//! longest first, so a whole multi-line value is masked as one `****`
//! rather than line by line.

use std::borrow::Cow;
use std::collections::BTreeSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// What a secret is replaced with.
pub const MASK: &str = "****";

/// Forms of a secret shorter than this (bytes) are not masked.
pub const MIN_LEN: usize = 4;

/// Values up to this size (bytes) also have each of their lines masked.
pub const MAX_SPLIT_LEN: usize = 64 * 1024;

/// Forms longer than this (bytes) are not masked.
pub const MAX_LEN: usize = 1024 * 1024;

/// The secrets to mask, and a matcher for all their forms.
#[derive(Default)]
pub struct Redactor {
    /// Every form of every secret, without duplicates.
    patterns: BTreeSet<String>,
    /// `None` while there is nothing to mask.
    matcher: Option<AhoCorasick>,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Adds a secret value. Returns whether it added anything to mask (a
    /// value already known, or one whose forms are all too short, does not).
    pub fn add(&mut self, value: &[u8]) -> bool {
        let new: Vec<String> = forms(value)
            .into_iter()
            .filter(|f| !self.patterns.contains(f))
            .collect();
        if new.is_empty() {
            return false;
        }
        self.patterns.extend(new.iter().cloned());
        // Plain string patterns of at most MAX_LEN: building fails only
        // past the crate's state limit (thousands of such secrets). Should
        // it, the earlier matcher stays.
        match build(&self.patterns) {
            Some(m) => self.matcher = Some(m),
            None => {
                for f in &new {
                    self.patterns.remove(f);
                }
                return false;
            }
        }
        true
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret form replaced by [`MASK`]; borrowed when
    /// there is nothing to replace (the common case, no allocation).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => {
                let mut out = String::with_capacity(text.len());
                m.replace_all_with(text, &mut out, |_, _, dst| {
                    dst.push_str(MASK);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(text),
        }
    }
}

fn build(patterns: &BTreeSet<String>) -> Option<AhoCorasick> {
    if patterns.is_empty() {
        return None;
    }
    // A contiguous NFA, never the DFA the crate picks for few patterns:
    // the DFA of one 64 KiB secret takes ~25 s to build, the NFA ~10 ms,
    // and log lines are short enough that the search speed is the same.
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(patterns)
        .ok()
}

/// The forms of a secret value that are masked (see the module doc).
fn forms(value: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(value);
    let mut out: Vec<&str> = vec![&text, text.trim_end_matches(['\r', '\n']), text.trim()];
    if value.len() <= MAX_SPLIT_LEN && text.contains('\n') {
        for line in text.split('\n') {
            let line = line.trim_end_matches('\r');
            out.push(line);
            out.push(line.trim());
        }
    }
    out.into_iter()
        .filter(|f| (MIN_LEN..=MAX_LEN).contains(&f.len()) && !f.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> Redactor {
        let mut r = Redactor::new();
        for v in values {
            r.add(v);
        }
        r
    }

    #[test]
    fn masks_a_value_wherever_it_appears() {
        let r = with(&[b"hunter22"]);
        assert_eq!(r.redact("token=hunter22;"), "token=****;");
        assert_eq!(r.redact("hunter22 and hunter22"), "**** and ****");
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_trailing_line_ending_does_not_hide_the_value() {
        // A secret file written by `echo`: the printed line has no newline.
        let r = with(&[b"s3cr3t-value\n"]);
        assert_eq!(r.redact("s3cr3t-value"), "****");
        assert_eq!(r.redact("got s3cr3t-value!"), "got ****!");
        let r = with(&[b"s3cr3t-value\r\n"]);
        assert_eq!(r.redact("s3cr3t-value"), "****");
        assert_eq!(r.redact("a\r\ns3cr3t-value\r\nb"), "a\r\n****b");
        let r = with(&[b"  padded-value \n"]);
        assert_eq!(r.redact("x padded-value y"), "x **** y");
    }

    #[test]
    fn each_line_of_a_multi_line_value_is_masked() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        let r = with(&[pem]);
        // Printed line by line (the sandbox logs one line at a time).
        for line in std::str::from_utf8(pem).unwrap().lines() {
            assert_eq!(r.redact(line), "****", "{line}");
        }
        // Printed whole (an error message): one mask, not one per line.
        let whole = std::str::from_utf8(pem).unwrap();
        assert_eq!(r.redact(&format!("key: {whole}")), "key: ****");
        // Indented by a tool.
        assert_eq!(r.redact("    MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "    ****");
    }

    #[test]
    fn short_values_and_lines_are_not_masked() {
        let r = with(&[b"abc", b"ab\n", b"\n\n", b"   \n"]);
        assert!(r.is_empty());
        assert_eq!(r.redact("abc ab"), "abc ab");
        // A multi-line value: its short lines stay, its long ones go.
        let r = with(&[b"ok\nlong-enough-line\n}\n"]);
        assert_eq!(r.redact("ok }"), "ok }");
        assert_eq!(r.redact("long-enough-line"), "****");
        // The shortest masked form is MIN_LEN bytes.
        let r = with(&[b"abcd"]);
        assert_eq!(r.redact("xabcdx"), "x****x");
    }

    #[test]
    fn a_large_value_is_masked_whole_only() {
        let mut big = "line-of-data\n".repeat(MAX_SPLIT_LEN / 13 + 1);
        big.push_str("end");
        let r = with(&[big.as_bytes()]);
        assert_eq!(r.redact("line-of-data"), "line-of-data");
        assert_eq!(r.redact(&big), "****");
        // Past MAX_LEN, nothing.
        let r = with(&["x".repeat(MAX_LEN + 1).as_bytes()]);
        assert!(r.is_empty());
    }

    #[test]
    fn several_secrets_and_overlapping_forms() {
        let r = with(&[b"token-one", b"token-one-longer", b"second"]);
        assert_eq!(
            r.redact("token-one-longer token-one second"),
            "**** **** ****"
        );
        // Adding a known value changes nothing.
        let mut r = r;
        assert!(!r.add(b"second"));
        assert!(r.add(b"third"));
        assert_eq!(r.redact("third"), "****");
    }

    #[test]
    fn invalid_utf8_is_compared_as_the_logs_show_it() {
        let r = with(&[b"ab\xffcd-secret"]);
        let shown = String::from_utf8_lossy(b"x ab\xffcd-secret y");
        assert_eq!(r.redact(&shown), "x **** y");
    }
}
