//! How iPXE reads a script, line by line and token by token, before it expands settings:
//! the oracle the tests and the fuzzer hold rendered scripts against.
//!
//! The rules follow iPXE's `src/image/script.c` (`process_script`) and `src/core/exec.c`
//! (`split_command`, `command_terminator`, `system`):
//! - the script is split at `\n`; one trailing `\r` is dropped; a line then ending in `\`
//!   loses the `\` and is joined with the next line (no separator in between);
//! - a line is a C string: it ends at its first NUL;
//! - after leading whitespace, `:name` makes `name` the line's label, the rest is the command;
//! - the command is split on whitespace (`isspace`: space, `\t`, `\n`, `\v`, `\f`, `\r`);
//! - a token starting with `#` ends the line (comment); `||`, `&&` and `;` end a command and
//!   start the next one;
//! - each token is then expanded (`${name}`): not modelled here; a rendered script must
//!   contain no `${` at all.

/// One command as iPXE would run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The label of the line this command starts (only the line's first command has one).
    pub label: Option<String>,
    /// The tokens, before setting expansion. Empty for a label-only line.
    pub tokens: Vec<String>,
    /// The separator after this command: `||`, `&&`, `;`, or `None` at the end of a line.
    pub then: Option<&'static str>,
}

impl Command {
    /// The command name, or `:label` for a label-only line.
    pub fn name(&self) -> String {
        match (self.tokens.first(), &self.label) {
            (Some(t), _) => t.clone(),
            (None, Some(l)) => format!(":{l}"),
            (None, None) => String::new(),
        }
    }
}

/// iPXE's `isspace`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The logical lines of a script: continuations joined, CRs dropped, cut at a NUL. Mirrors
/// `process_script`'s loop, including its edge: a continuation on the last line drops that
/// line.
pub fn lines(script: &str) -> Vec<String> {
    let data = script.as_bytes();
    let mut out = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut offset = 0;
    loop {
        let rest = &data[offset.min(data.len())..];
        let frag = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        line.extend_from_slice(&rest[..frag]);
        offset += frag + 1;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.last() == Some(&b'\\') {
            line.pop();
            if offset < data.len() {
                continue;
            }
            break;
        }
        let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
        out.push(String::from_utf8_lossy(&line[..end]).into_owned());
        line.clear();
        if offset >= data.len() {
            break;
        }
    }
    out
}

/// Every command of `script` in order, with labels; label-only lines are kept (as a command
/// without tokens), empty lines and comments dropped.
pub fn commands(script: &str) -> Vec<Command> {
    let mut out = Vec::new();
    for line in lines(script) {
        let mut rest = line.trim_start_matches(is_space);
        let mut label = None;
        if let Some(l) = rest.strip_prefix(':') {
            let end = l.find(is_space).unwrap_or(l.len());
            label = Some(l[..end].to_string());
            rest = &l[end..];
        }
        let mut tokens = Vec::new();
        let mut any = false;
        for tok in rest.split(is_space).filter(|t| !t.is_empty()) {
            if tok.starts_with('#') {
                break;
            }
            let then = match tok {
                "||" => "||",
                "&&" => "&&",
                ";" => ";",
                _ => {
                    tokens.push(tok.to_string());
                    continue;
                }
            };
            out.push(Command { label: label.take(), tokens: std::mem::take(&mut tokens), then: Some(then) });
            any = true;
        }
        if !tokens.is_empty() || label.is_some() || any {
            out.push(Command { label, tokens, then: None });
        }
    }
    out.retain(|c| c.label.is_some() || !c.tokens.is_empty() || c.then.is_some());
    out
}

/// The command names of `script` (`:label` for label-only lines), for shape comparisons.
pub fn names(script: &str) -> Vec<String> {
    commands(script).iter().map(Command::name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_like_ipxe() {
        let s = "#!ipxe\n:retry kernel http://x/k a=b || goto retry\r\n  \n# comment\necho a \\\nb # c || d\n:end\n";
        let c = commands(s);
        assert_eq!(c.len(), 4, "{c:#?}");
        assert_eq!(c[0].label.as_deref(), Some("retry"));
        assert_eq!(c[0].tokens, toks(&["kernel", "http://x/k", "a=b"]));
        assert_eq!(c[0].then, Some("||"));
        assert_eq!((c[1].label.as_ref(), c[1].tokens.clone()), (None, toks(&["goto", "retry"])));
        assert_eq!(c[2].tokens, toks(&["echo", "a", "b"]), "continuation joins, comment ends the line");
        assert_eq!(names(s), ["kernel", "goto", "echo", ":end"]);
    }

    #[test]
    fn hostile_bytes_split_or_cut_lines() {
        assert_eq!(names("echo a\nshell"), ["echo", "shell"]);
        assert_eq!(names("echo a\rshell"), ["echo"], "a lone CR is whitespace inside a line");
        assert_eq!(commands("echo a\rshell")[0].tokens, toks(&["echo", "a", "shell"]));
        assert_eq!(names("echo a\0\nshell"), ["echo", "shell"]);
        assert_eq!(commands("echo a\0 b")[0].tokens, toks(&["echo", "a"]), "NUL ends the C string");
        assert_eq!(names("echo a ; shell && exit"), ["echo", "shell", "exit"]);
        assert_eq!(names("echo a #; shell"), ["echo"]);
        assert_eq!(names("echo a\x0bshell"), ["echo"]);
        assert!(names("echo \\").is_empty(), "a continuation on the last line drops it");
        assert_eq!(names("echo \\\nb"), ["echo"]);
    }
}
