//! Docker's word processing: quote removal and variable substitution as
//! BuildKit's `shell.Lex` does it (`$V`, `${V}`, `${V:-w}`, `${V-w}`,
//! `${V:+w}`, `${V+w}`, `${V:?m}`, `${V?m}`, `${V#p}`, `${V##p}`, `${V%p}`,
//! `${V%%p}`), and the parser's word splitting (`parseWords`) that keeps
//! quotes for later processing.
//!
//! Hand-written because the rules are Docker's own (not POSIX sh's: no
//! command substitution, escapes differ inside double quotes) and no crate
//! implements them.

use crate::context::glob_match;

/// Looks a variable up; `None` means unset (different from empty for `-`/`+`).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// No variables at all.
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

/// The word processor for one escape character (`\` or `` ` ``).
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer { escape: '\\' }
    }
}

impl Lexer {
    pub fn new(escape: char) -> Lexer {
        Lexer { escape }
    }

    /// Expands variables and removes quotes; whitespace is kept.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, String> {
        let mut w = Word::new(word, self.escape, env);
        let (out, _) = w.process(None, false)?;
        Ok(out.into_iter().next().unwrap_or_default())
    }

    /// Expands variables, removes quotes, and splits on unquoted whitespace.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, String> {
        let mut w = Word::new(word, self.escape, env);
        let (out, _) = w.process(None, true)?;
        Ok(out)
    }
}

impl Lexer {
    /// Expands an unquoted heredoc body: `$` expansions and escapes of `$`
    /// and the escape character; quotes are kept as written.
    pub fn process_heredoc(&self, body: &str, env: &dyn Env) -> Result<String, String> {
        let mut w = Word::new(body, self.escape, env);
        let mut out = String::new();
        while let Some(c) = w.peek() {
            if c == '$' {
                out.push_str(&w.dollar()?);
                continue;
            }
            w.next();
            if c == self.escape {
                match w.peek() {
                    Some(n) if n == '$' || n == self.escape => {
                        w.next();
                        out.push(n);
                        continue;
                    }
                    _ => {}
                }
            }
            out.push(c);
        }
        Ok(out)
    }
}

struct Word<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Env,
}

impl<'a> Word<'a> {
    fn new(s: &str, escape: char, env: &'a dyn Env) -> Word<'a> {
        Word {
            chars: s.chars().collect(),
            pos: 0,
            escape,
            env,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or the end. With `split`, unquoted
    /// whitespace separates words; otherwise one word is returned.
    fn process(&mut self, stop: Option<char>, split: bool) -> Result<(Vec<String>, bool), String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                if in_word || !split {
                    words.push(cur);
                }
                return Ok((words, true));
            }
            if split && ch.is_whitespace() {
                self.next();
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                continue;
            }
            if ch == '$' && split {
                // Unquoted expansions are split into words, as a shell does.
                for c in self.dollar()?.chars() {
                    if c.is_whitespace() {
                        if in_word {
                            words.push(std::mem::take(&mut cur));
                            in_word = false;
                        }
                    } else {
                        cur.push(c);
                        in_word = true;
                    }
                }
                continue;
            }
            in_word = true;
            match ch {
                '\'' => cur.push_str(&self.single_quote()?),
                '"' => cur.push_str(&self.double_quote()?),
                '$' => cur.push_str(&self.dollar()?),
                _ => {
                    self.next();
                    if ch == self.escape {
                        // A trailing escape is dropped, as Docker does.
                        match self.next() {
                            Some(c) => cur.push(c),
                            None => break,
                        }
                    } else {
                        cur.push(ch);
                    }
                }
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        if in_word || !split {
            words.push(cur);
        }
        Ok((words, false))
    }

    fn single_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                out.push(n);
                            }
                            // Other escapes stay as written inside double quotes.
                            Some(_) => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!') {
                self.next();
                return c.to_string();
            }
        }
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' {
                self.next();
                name.push(c);
            } else {
                break;
            }
        }
        name
    }

    fn until_brace(&mut self) -> Result<String, String> {
        let (w, found) = self.process(Some('}'), false)?;
        if !found {
            return Err("syntax error: missing '}'".into());
        }
        Ok(w.into_iter().next().unwrap_or_default())
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.env.get(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let value = self.env.get(&name);
        let set = value.is_some();
        let value = value.unwrap_or_default();
        match self.next() {
            Some('}') => Ok(value),
            Some('?') => {
                let msg = self.until_brace()?;
                if !set {
                    return Err(unset_msg(&name, &msg, "is not allowed to be unset"));
                }
                Ok(value)
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.until_brace()?;
                match modifier {
                    Some('+') => Ok(if value.is_empty() {
                        String::new()
                    } else {
                        word
                    }),
                    Some('-') => Ok(if value.is_empty() { word } else { value }),
                    Some('?') => {
                        if !set {
                            Err(unset_msg(&name, &word, "is not allowed to be unset"))
                        } else if value.is_empty() {
                            Err(unset_msg(&name, &word, "is not allowed to be empty"))
                        } else {
                            Ok(value)
                        }
                    }
                    Some(m) => Err(format!("unsupported modifier ({m}) in substitution")),
                    None => Err("syntax error: missing '}'".into()),
                }
            }
            Some('+') => {
                let word = self.until_brace()?;
                Ok(if set { word } else { String::new() })
            }
            Some('-') => {
                let word = self.until_brace()?;
                Ok(if set { value } else { word })
            }
            Some(op @ ('#' | '%')) => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.next();
                }
                let pattern = self.until_brace()?;
                Ok(trim_pattern(&value, &pattern, op == '#', longest))
            }
            Some(c) => Err(format!("unsupported modifier ({c}) in substitution")),
            None => Err("syntax error: missing '}'".into()),
        }
    }
}

fn unset_msg(name: &str, msg: &str, default: &str) -> String {
    format!("{name}: {}", if msg.is_empty() { default } else { msg })
}

/// `${V#p}` / `${V##p}` / `${V%p}` / `${V%%p}` with `*` and `?` wildcards.
fn trim_pattern(value: &str, pattern: &str, prefix: bool, longest: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let pat: Vec<char> = pattern.chars().collect();
    let n = chars.len();
    let cuts: Vec<usize> = if longest {
        (0..=n).rev().collect()
    } else {
        (0..=n).collect()
    };
    for len in cuts {
        if prefix {
            if glob_match(&pat, &chars[..len]) {
                return chars[len..].iter().collect();
            }
        } else if glob_match(&pat, &chars[n - len..]) {
            return chars[..n - len].iter().collect();
        }
    }
    value.to_string()
}

/// The parser's word splitting (BuildKit `parseWords`): splits on unquoted
/// whitespace, keeping quotes and escapes in the words for later processing.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let end = pos == chars.len();
        let ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                word.push(chars[pos]);
                pos += 1;
                continue;
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        } else if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            word.push(ch);
            pos += 1;
            word.push(chars[pos]);
            pos += 1;
            continue;
        }
        word.push(ch);
        pos += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        [
            ("A", "alpha"),
            ("E", ""),
            ("P", "/usr/local/bin:/usr/bin"),
            ("F", "file.tar.gz"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn w(s: &str) -> Result<String, String> {
        let e = env();
        Lexer::default().process_word(s, &|k: &str| e.get(k).cloned())
    }

    fn ws(s: &str) -> Vec<String> {
        let e = env();
        Lexer::default()
            .process_words(s, &|k: &str| e.get(k).cloned())
            .unwrap()
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(w("$A").unwrap(), "alpha");
        assert_eq!(w("${A}x").unwrap(), "alphax");
        assert_eq!(w("$Ax").unwrap(), "");
        assert_eq!(w("x$U-y").unwrap(), "x-y");
        assert_eq!(w("a$").unwrap(), "a$");
        assert_eq!(w("$ b").unwrap(), "$ b");
    }

    #[test]
    fn modifiers() {
        assert_eq!(w("${U:-def}").unwrap(), "def");
        assert_eq!(w("${E:-def}").unwrap(), "def");
        assert_eq!(w("${E-def}").unwrap(), "");
        assert_eq!(w("${U-def}").unwrap(), "def");
        assert_eq!(w("${A:-def}").unwrap(), "alpha");
        assert_eq!(w("${A:+set}").unwrap(), "set");
        assert_eq!(w("${E:+set}").unwrap(), "");
        assert_eq!(w("${E+set}").unwrap(), "set");
        assert_eq!(w("${U+set}").unwrap(), "");
        assert_eq!(w("${U:-$A/x}").unwrap(), "alpha/x");
        assert_eq!(w("${U:-${E:-deep}}").unwrap(), "deep");
        assert_eq!(w("${F%.gz}").unwrap(), "file.tar");
        assert_eq!(w("${F%%.*}").unwrap(), "file");
        assert_eq!(w("${F#*.}").unwrap(), "tar.gz");
        assert_eq!(w("${F##*.}").unwrap(), "gz");
        assert_eq!(w("${A?}").unwrap(), "alpha");
        assert_eq!(w("${U?need U}").unwrap_err(), "U: need U");
        assert_eq!(w("${E:?}").unwrap_err(), "E: is not allowed to be empty");
    }

    #[test]
    fn syntax_errors() {
        assert!(w("${A").unwrap_err().contains("}"));
        assert_eq!(w("${}").unwrap_err(), "syntax error: bad substitution");
        assert!(w("${A:*x}").unwrap_err().contains("unsupported modifier"));
        assert!(w("'abc").unwrap_err().contains("single-quote"));
        assert!(w("\"abc").unwrap_err().contains("double-quote"));
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w("'$A'").unwrap(), "$A");
        assert_eq!(w("\"$A b\"").unwrap(), "alpha b");
        assert_eq!(w("\\$A").unwrap(), "$A");
        assert_eq!(w("\"\\$A\"").unwrap(), "$A");
        assert_eq!(w("\"a\\nb\"").unwrap(), "a\\nb");
        assert_eq!(w("a\\ b").unwrap(), "a b");
        assert_eq!(w("\"say \\\"hi\\\"\"").unwrap(), "say \"hi\"");
        assert_eq!(w("trailing\\").unwrap(), "trailing");
        let e = env();
        let bt = Lexer::new('`').process_word("`$A C:\\dir", &|k: &str| e.get(k).cloned());
        assert_eq!(bt.unwrap(), "$A C:\\dir");
    }

    #[test]
    fn words() {
        assert_eq!(ws("a  b\t$A"), vec!["a", "b", "alpha"]);
        assert_eq!(ws("\"a b\" c"), vec!["a b", "c"]);
        assert_eq!(ws("'' x"), vec!["", "x"]);
        assert_eq!(ws("$U"), Vec::<String>::new());
        assert_eq!(ws("x${P:+80 443}y"), vec!["x80", "443y"]);
        assert_eq!(ws("\"$U\""), vec![""]);
    }

    #[test]
    fn parser_words_keep_quotes() {
        assert_eq!(
            parse_words(r#"A="x y" B=z\ w C='q"'"#, '\\'),
            vec![r#"A="x y""#, r"B=z\ w", r#"C='q"'"#]
        );
        assert_eq!(parse_words("  ", '\\'), Vec::<String>::new());
        assert_eq!(parse_words("a \"\"", '\\'), vec!["a", "\"\""]);
    }
}
