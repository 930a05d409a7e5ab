//! What one source file refers to: its `crate::`, `super::` and `self::` paths (in `use`
//! trees and in code), and child-module paths in `use` trees, read from the text with a
//! small lexer (comments, strings and character literals cannot produce a path).
//!
//! Items under `#[cfg(test)]` are left out: test modules may reach anywhere.

/// One path the file names, as written, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The module the path is written in: the file's own, plus inline `mod x { … }` blocks.
    pub scope: Vec<String>,
    /// The segments, `crate`/`super`/`self` included.
    pub segments: Vec<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// The paths `text` (the source of module `module`) refers to.
pub fn refs(text: &str, module: &[String]) -> Vec<Ref> {
    let toks = lex(text);
    let mut out = Vec::new();
    let mut p = Parser { toks: &toks, i: 0, scope: module.to_vec(), inline: Vec::new(), depth: 0, out: &mut out };
    p.items();
    out
}

struct Parser<'a> {
    toks: &'a [(Tok, usize)],
    i: usize,
    scope: Vec<String>,
    /// Brace depth at which each inline module opened.
    inline: Vec<usize>,
    depth: usize,
    out: &'a mut Vec<Ref>,
}

impl Parser<'_> {
    fn peek(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|(t, _)| t)
    }

    fn ident(&self, k: usize) -> Option<&str> {
        match self.peek(k) {
            Some(Tok::Ident(s)) => Some(s),
            _ => None,
        }
    }

    fn line(&self) -> usize {
        self.toks.get(self.i).map_or(0, |(_, l)| *l)
    }

    fn items(&mut self) {
        while self.i < self.toks.len() {
            match self.peek(0).cloned() {
                Some(Tok::Punct('#')) => self.attribute(),
                Some(Tok::Punct('{')) => {
                    self.depth += 1;
                    self.i += 1;
                }
                Some(Tok::Punct('}')) => {
                    if self.inline.last() == Some(&self.depth) {
                        self.inline.pop();
                        self.scope.pop();
                    }
                    self.depth = self.depth.saturating_sub(1);
                    self.i += 1;
                }
                Some(Tok::Punct('$')) => self.i += 2, // `$crate::…` in a macro: the caller's crate
                Some(Tok::Ident(w)) if w == "mod" && self.peek(2) == Some(&Tok::Punct('{')) => {
                    let name = self.ident(1).unwrap_or_default().to_string();
                    self.i += 3;
                    self.depth += 1;
                    self.inline.push(self.depth);
                    self.scope.push(name);
                }
                Some(Tok::Ident(w)) if w == "use" => {
                    self.i += 1;
                    let line = self.line();
                    let mut paths = Vec::new();
                    self.use_tree(Vec::new(), &mut paths);
                    for segments in paths {
                        self.push(segments, line);
                    }
                }
                Some(Tok::Ident(w))
                    if matches!(w.as_str(), "crate" | "super" | "self") && self.peek(1) == Some(&Tok::Sep) =>
                {
                    let line = self.line();
                    let mut segments = Vec::new();
                    while let Some(s) = self.ident(0).map(str::to_string) {
                        segments.push(s);
                        self.i += 1;
                        if self.peek(0) != Some(&Tok::Sep) {
                            break;
                        }
                        self.i += 1;
                    }
                    self.push(segments, line);
                }
                _ => self.i += 1,
            }
        }
    }

    fn push(&mut self, segments: Vec<String>, line: usize) {
        if !segments.is_empty() {
            self.out.push(Ref { scope: self.scope.clone(), segments, line });
        }
    }

    /// `#[…]` or `#![…]`; a `#[cfg(test)]` skips the item it is on.
    fn attribute(&mut self) {
        let start = self.i;
        self.i += 1;
        if self.peek(0) == Some(&Tok::Punct('!')) {
            self.i += 1;
        }
        if self.peek(0) != Some(&Tok::Punct('[')) {
            return;
        }
        let end = self.matching(self.i, '[', ']');
        let body: Vec<&Tok> = self.toks[self.i + 1..end].iter().map(|(t, _)| t).collect();
        let cfg_test = body
            == [&Tok::Ident("cfg".into()), &Tok::Punct('('), &Tok::Ident("test".into()), &Tok::Punct(')')]
            && self.toks.get(start + 1).map(|(t, _)| t) != Some(&Tok::Punct('!'));
        self.i = end + 1;
        if cfg_test {
            self.skip_item();
        }
    }

    /// Past the next item: its further attributes, then up to its `;` or its `{ … }`.
    fn skip_item(&mut self) {
        while self.peek(0) == Some(&Tok::Punct('#')) && self.peek(1) == Some(&Tok::Punct('[')) {
            self.i = self.matching(self.i + 1, '[', ']') + 1;
        }
        while let Some(t) = self.peek(0) {
            match t {
                Tok::Punct(';') => {
                    self.i += 1;
                    return;
                }
                Tok::Punct('{') => {
                    self.i = self.matching(self.i, '{', '}') + 1;
                    return;
                }
                _ => self.i += 1,
            }
        }
    }

    /// Index of the bracket closing the one at `open` (the last token if unbalanced).
    fn matching(&self, open: usize, o: char, c: char) -> usize {
        let mut depth = 0usize;
        for (k, (t, _)) in self.toks.iter().enumerate().skip(open) {
            if *t == Tok::Punct(o) {
                depth += 1;
            } else if *t == Tok::Punct(c) {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
        }
        self.toks.len().saturating_sub(1)
    }

    /// One use tree after `prefix`, its paths appended to `out`; stops after `;`, `,` or
    /// before `}`.
    fn use_tree(&mut self, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        loop {
            match self.peek(0).cloned() {
                Some(Tok::Sep) => self.i += 1,
                Some(Tok::Ident(w)) if w == "as" => self.i += 2,
                Some(Tok::Ident(w)) if w == "self" && !prefix.is_empty() => self.i += 1,
                Some(Tok::Ident(w)) => {
                    prefix.push(w);
                    self.i += 1;
                }
                Some(Tok::Punct('*')) => self.i += 1,
                Some(Tok::Punct('{')) => {
                    self.i += 1;
                    while !matches!(self.peek(0), None | Some(Tok::Punct('}'))) {
                        self.use_tree(prefix.clone(), out);
                    }
                    self.i += 1;
                    if self.peek(0) == Some(&Tok::Punct(',')) {
                        self.i += 1;
                    }
                    return;
                }
                Some(Tok::Punct(',' | ';')) => {
                    self.i += 1;
                    out.push(prefix);
                    return;
                }
                Some(Tok::Punct('}')) | None => {
                    out.push(prefix);
                    return;
                }
                Some(Tok::Punct(_)) => self.i += 1,
            }
        }
    }
}

/// Identifiers, `::` and punctuation, with their line; comments, string, byte-string, raw
/// string and character literals, lifetimes and numbers dropped.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&c, i) {
            // r"…", r#"…"#, br"…": no escapes, ends at a quote and as many #.
            i = c[i..].iter().position(|&x| x == '"').map_or(c.len(), |p| i + p + 1);
            while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#')) {
                line += usize::from(c[i] == '\n');
                i += 1;
            }
            i += 1 + hashes;
        } else if ch == '"' || (ch == 'b' && at(i + 1) == '"') {
            i += if ch == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                line += usize::from(c[i] == '\n');
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                // An escaped character literal: up to the closing quote.
                i = q + 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                // A lifetime or label: the quote alone, the name is read as an identifier.
                i = q + 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The number of `#` of a raw string starting at `i` (`r"`, `r#"`, `br"`…).
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    let prev_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    if prev_ident {
        return None;
    }
    let mut k = i;
    if c.get(k) == Some(&'b') {
        k += 1;
    }
    if c.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let hashes = c[k..].iter().take_while(|&&x| x == '#').count();
    (c.get(k + hashes) == Some(&'"')).then_some(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        refs(text, &["a".to_string()]).iter().map(|r| format!("{}@{}", r.segments.join("::"), r.line)).collect()
    }

    #[test]
    fn use_trees_and_paths_in_code() {
        let src = "use crate::b::{self, c::{D, e as f}, *};\nuse super::g;\n\nfn x() { crate::h::i(); self.j(); super::k::L }\n";
        assert_eq!(
            paths(src),
            [
                "crate::b@1",
                "crate::b::c::D@1",
                "crate::b::c::e@1",
                "crate::b@1",
                "super::g@2",
                "crate::h::i@4",
                "super::k::L@4"
            ]
        );
    }

    #[test]
    fn comments_strings_and_chars_name_nothing() {
        let src = r###"
            //! see [`crate::doc`]
            /* crate::block /* nested crate::x */ */
            const S: &str = "crate::string";
            const R: &str = r#"crate::raw "quoted""#;
            const C: char = '"'; const E: char = '\''; fn f<'a>(x: &'a str) -> &'a str { x }
            fn g() { crate::real::one(); }
        "###;
        assert_eq!(paths(src), ["crate::real::one@7"]);
    }

    #[test]
    fn test_items_are_skipped_and_inline_modules_scope_super() {
        let src = "#[cfg(test)]\n#[allow(x)]\nmod tests { use crate::t; }\n#[cfg(test)] use crate::u;\nmod inner { use super::v; }\n#[derive(Debug)] struct S;\nuse crate::w;";
        let r = refs(src, &["a".to_string()]);
        let got: Vec<(String, Vec<String>)> = r.iter().map(|r| (r.segments.join("::"), r.scope.clone())).collect();
        assert_eq!(
            got,
            [
                ("super::v".to_string(), vec!["a".to_string(), "inner".to_string()]),
                ("crate::w".to_string(), vec!["a".to_string()])
            ]
        );
    }
}
