//! Key path → line and column, built once from the YAML text, so semantic errors (which serde
//! never sees) can still point into the file.
//!
//! It reads YAML by indentation, as an operator writes it: `key:` lines, `- ` list items, and
//! flow collections (`{ A: b }`, `[{path: /a}]`), also over several lines. It skips what can
//! hold text that looks like keys: comments, block scalars (`|`, `>`) and quoted strings that
//! run over lines. A key it cannot see (one brought in by an alias or a merge key) is placed at
//! its nearest enclosing key; a key with no enclosing key in the file has no line, since a
//! wrong line is worse than none.

use std::collections::HashMap;

pub struct KeyIndex {
    lines: HashMap<String, (usize, usize)>,
}

/// What the lines being read belong to, when it is not block structure.
enum Inside {
    /// A `|` or `>` scalar: lines indented past this column, and blank ones.
    BlockScalar(usize),
    /// A quoted scalar still open at the end of its line.
    Quote(char),
    Flow(Flow),
}

impl Inside {
    /// Reads `raw` if it belongs here: `Some` of what the next line is inside, or `None` when
    /// `raw` is block structure again.
    fn read(
        self,
        raw: &str,
        line_no: usize,
        lines: &mut HashMap<String, (usize, usize)>,
    ) -> Option<Option<Inside>> {
        let trimmed = raw.trim_start();
        match self {
            Inside::BlockScalar(col) => {
                (trimmed.is_empty() || raw.len() - trimmed.len() > col).then_some(Some(self))
            }
            Inside::Quote(q) => Some(closing_quote(raw, q).is_none().then_some(self)),
            Inside::Flow(mut flow) => {
                let closed = flow.feed(raw, 0, line_no, lines);
                Some((!closed).then_some(Inside::Flow(flow)))
            }
        }
    }
}

impl KeyIndex {
    pub fn build(text: &str) -> KeyIndex {
        let mut lines = HashMap::new();
        // (indent, path of this entry)
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut items: HashMap<String, usize> = HashMap::new();
        let mut inside: Option<Inside> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim_start();
            let mut indent = raw.len() - trimmed.len();
            if let Some(now) = inside.take() {
                if let Some(next) = now.read(raw, line_no, &mut lines) {
                    inside = next;
                    continue;
                }
            }
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut rest = trimmed;
            let mut path = stack.last().map_or(String::new(), |(_, p)| p.clone());
            // The column a block scalar's lines must be indented past: its key's, or its dash's.
            let mut base = indent;
            while let Some(after) = rest
                .strip_prefix("- ")
                .or_else(|| (rest == "-").then_some(""))
            {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                let parent = stack.last().map_or(String::new(), |(_, p)| p.clone());
                let counter = items.entry(parent.clone()).or_insert(0);
                path = format!("{parent}[{counter}]");
                *counter += 1;
                lines.entry(path.clone()).or_insert((line_no, indent + 1));
                stack.push((indent, path.clone()));
                base = indent;
                let skipped = rest.len() - after.len();
                indent += skipped + (after.len() - after.trim_start().len());
                rest = strip_properties(after.trim_start());
            }
            let value = match split_key(rest) {
                Some((key, value)) => {
                    while stack.last().is_some_and(|(i, _)| *i >= indent) {
                        stack.pop();
                    }
                    path = join(stack.last().map(|(_, p)| p.as_str()), key);
                    lines.entry(path.clone()).or_insert((line_no, indent + 1));
                    stack.push((indent, path.clone()));
                    base = indent;
                    strip_properties(value.trim_start())
                }
                // A list item's own value, or a whole document in flow style.
                None if rest.len() < trimmed.len() || stack.is_empty() => rest,
                None => continue,
            };
            let at = raw.len() - value.len();
            inside = match value.chars().next() {
                Some('|' | '>') => Some(Inside::BlockScalar(base)),
                Some(q @ ('"' | '\'')) if closing_quote(&value[1..], q).is_none() => {
                    Some(Inside::Quote(q))
                }
                Some('{' | '[') => {
                    let mut flow = Flow::at(path);
                    (!flow.feed(raw, at, line_no, &mut lines)).then_some(Inside::Flow(flow))
                }
                _ => None,
            };
        }
        KeyIndex { lines }
    }

    /// The line and column of exactly `key`, if the file writes it on a line of its own.
    pub fn exact(&self, key: &str) -> Option<(usize, usize)> {
        self.lines.get(key).copied()
    }

    /// The line and column of `key`, or of its nearest indexed ancestor; `(0, 0)`, which
    /// `ConfigError` prints as no place, when not even its top-level key is in the file.
    pub fn locate(&self, key: &str) -> (usize, usize) {
        let mut k = key;
        loop {
            if let Some(loc) = self.lines.get(k) {
                return *loc;
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return (0, 0),
            }
        }
    }
}

fn join(parent: Option<&str>, key: &str) -> String {
    match parent {
        Some(p) if !p.is_empty() => format!("{p}.{key}"),
        _ => key.to_string(),
    }
}

/// `&anchor` and `!tag` say nothing about where a key is; the value follows them.
fn strip_properties(mut s: &str) -> &str {
    while s.starts_with(['&', '!']) {
        s = s.find(' ').map_or("", |i| s[i..].trim_start());
    }
    s
}

/// The byte offset, in `s`, of the quote that closes a scalar opened by `q` before `s`.
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if q == '"' => i += 1,
            // `''` is a quote inside a single-quoted scalar.
            b'\'' if q == '\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
            c if c == q as u8 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A flow collection being read, which may run over several lines.
struct Flow {
    /// The open collections, innermost last, under a root that holds the whole value.
    frames: Vec<Frame>,
    /// A quoted scalar still open at the end of the last line.
    quote: Option<char>,
}

struct Frame {
    path: String,
    /// The next item's index in a sequence; `None` in a map.
    next: Option<usize>,
    state: State,
}

enum State {
    /// Before a map's key or a sequence's item.
    Key,
    /// After `key:` (or at an item), the value of this path.
    Value(String),
    /// After a value, before `,` or the closing bracket.
    After,
}

impl Flow {
    fn at(path: String) -> Flow {
        let root = Frame {
            path: path.clone(),
            next: None,
            state: State::Value(path),
        };
        Flow {
            frames: vec![root],
            quote: None,
        }
    }

    fn done(&self) -> bool {
        self.frames.len() == 1 && matches!(self.frames[0].state, State::After)
    }

    /// Reads `raw` from byte `start`, indexing keys and items; true once the collection closed.
    fn feed(
        &mut self,
        raw: &str,
        start: usize,
        line_no: usize,
        lines: &mut HashMap<String, (usize, usize)>,
    ) -> bool {
        let b = raw.as_bytes();
        let mut i = start;
        loop {
            if let Some(q) = self.quote {
                match closing_quote(&raw[i..], q) {
                    Some(j) => i += j + 1,
                    None => return false,
                }
                self.quote = None;
            }
            while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
                i += 1;
            }
            if self.done() {
                return true;
            }
            if i >= b.len() || (b[i] == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace())) {
                return false;
            }
            i = self.step(raw, i, line_no, lines);
        }
    }

    /// One token at byte `i` (not a space); returns where the next one may start.
    fn step(
        &mut self,
        raw: &str,
        i: usize,
        line_no: usize,
        lines: &mut HashMap<String, (usize, usize)>,
    ) -> usize {
        let b = raw.as_bytes();
        let depth = self.frames.len();
        let top = self
            .frames
            .last_mut()
            .expect("the root frame is never popped");
        let state = std::mem::replace(&mut top.state, State::After);
        match (state, b[i]) {
            (State::After | State::Key, b'}' | b']') if depth > 1 => {
                self.frames.pop();
                i + 1
            }
            (State::After | State::Key, b',') => {
                top.state = State::Key;
                i + 1
            }
            (State::After, _) => i + 1,
            (State::Key, c) if top.next.is_some() => {
                let n = top.next.unwrap_or(0);
                top.next = Some(n + 1);
                let path = format!("{}[{n}]", top.path);
                // A scalar item is shown at its sequence's key, as errors always were.
                if matches!(c, b'{' | b'[') {
                    lines.entry(path.clone()).or_insert((line_no, i + 1));
                }
                top.state = State::Value(path);
                i
            }
            (State::Key, _) => map_key(top, &mut self.quote, raw, i, line_no, lines),
            (State::Value(path), open @ (b'{' | b'[')) => {
                let next = (open == b'[').then_some(0);
                self.frames.push(Frame {
                    path,
                    next,
                    state: State::Key,
                });
                i + 1
            }
            (State::Value(_), q @ (b'"' | b'\'')) => {
                self.quote = Some(q as char);
                i + 1
            }
            (State::Value(path), b'&' | b'!') => {
                top.state = State::Value(path);
                (i..b.len())
                    .find(|&j| matches!(b[j], b' ' | b',' | b'}' | b']'))
                    .unwrap_or(b.len())
            }
            (State::Value(_), b',' | b'}' | b']') => i,
            (State::Value(_), _) => plain_end(b, i, false),
        }
    }
}

/// A key of a flow map at byte `i`; returns where its value, or the next token, starts.
fn map_key(
    top: &mut Frame,
    quote: &mut Option<char>,
    raw: &str,
    i: usize,
    line_no: usize,
    lines: &mut HashMap<String, (usize, usize)>,
) -> usize {
    let b = raw.as_bytes();
    match b[i] {
        q @ (b'"' | b'\'') => match closing_quote(&raw[i + 1..], q as char) {
            Some(j) => {
                let path = join(Some(&top.path), &raw[i + 1..i + 1 + j]);
                lines.entry(path.clone()).or_insert((line_no, i + 1));
                let after = i + 2 + j;
                let colon = raw[after..].trim_start();
                if let Some(value) = colon.strip_prefix(':') {
                    top.state = State::Value(path);
                    return raw.len() - value.len();
                }
                after
            }
            None => {
                *quote = Some(q as char);
                b.len()
            }
        },
        _ => {
            let end = plain_end(b, i, true);
            let path = join(Some(&top.path), raw[i..end].trim());
            lines.entry(path.clone()).or_insert((line_no, i + 1));
            if b.get(end) == Some(&b':') {
                top.state = State::Value(path);
                return end + 1;
            }
            end
        }
    }
}

/// Where a plain scalar starting at `i` ends: at `,` or a closing bracket, at ` #`, and for a
/// key also at a `:` followed by a space, a delimiter or the end of the line.
fn plain_end(b: &[u8], i: usize, key: bool) -> usize {
    (i..b.len())
        .find(|&j| match b[j] {
            b',' | b'}' | b']' => true,
            b'#' => b[j - 1].is_ascii_whitespace(),
            b':' => {
                key && b
                    .get(j + 1)
                    .is_none_or(|c| matches!(c, b' ' | b'\t' | b',' | b'}' | b']'))
            }
            _ => false,
        })
        .unwrap_or(b.len())
}

/// `key: value` → (key, value); keys may be quoted.
fn split_key(s: &str) -> Option<(&str, &str)> {
    let (key, rest) = if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = s.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else if s.starts_with(['{', '[']) {
        return None;
    } else {
        let end = s.find(':')?;
        (s[..end].trim_end(), &s[end..])
    };
    let value = rest.trim_start().strip_prefix(':')?;
    (value.is_empty() || value.starts_with([' ', '\t'])).then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lists_and_flow_maps_are_located() {
        let text = "listen: 1\nupstreams:\n  legacy:\n    url: x\n    headers: { Authorization: \"a\" }\nstreams:\n  - path: /a\n    upstream: legacy\n  - path: /b\n    ignore: [/x]\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("listen"), (1, 1));
        assert_eq!(idx.locate("upstreams.legacy.url"), (4, 5));
        assert_eq!(idx.locate("upstreams.legacy.headers.Authorization").0, 5);
        assert_eq!(idx.locate("streams[0].path"), (7, 5));
        assert_eq!(idx.locate("streams[0].upstream"), (8, 5));
        assert_eq!(idx.locate("streams[1].path"), (9, 5));
        assert_eq!(idx.locate("streams[1].ignore[0]"), (10, 5));
        assert_eq!(idx.locate("streams[1]"), (9, 3));
    }

    #[test]
    fn items_of_a_flow_sequence_are_located() {
        let text = "streams: [{path: /a, upstream: x}, {path: /b, ignore: [/p, /q]}]\nlisten: 1\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("streams[0]"), (1, 11));
        assert_eq!(idx.locate("streams[0].path"), (1, 12));
        assert_eq!(idx.locate("streams[0].upstream"), (1, 22));
        assert_eq!(idx.locate("streams[1].path"), (1, 37));
        assert_eq!(idx.locate("streams[1].ignore[1]"), (1, 47));
        assert_eq!(idx.locate("listen"), (2, 1));
    }

    #[test]
    fn a_flow_collection_over_several_lines_is_followed() {
        let text = "streams: [\n  {path: /a,\n   upstream: x},\n  { \"path\": '/b' }  # c: {d: 1}\n]\nlisten: 1\nupstreams:\n  - {\n    url: u }\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("streams[0].path"), (2, 4));
        assert_eq!(idx.locate("streams[0].upstream"), (3, 4));
        assert_eq!(idx.locate("streams[1].path"), (4, 5));
        assert_eq!(
            idx.locate("streams[1].c"),
            (4, 3),
            "a comment holds no keys"
        );
        assert_eq!(idx.locate("listen"), (6, 1));
        assert_eq!(idx.locate("upstreams[0].url"), (9, 5));
    }

    #[test]
    fn a_list_item_written_as_a_flow_map_is_located() {
        let text = "streams:\n  - {path: /a, upstream: x}\n  - path: /b\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("streams[0].upstream"), (2, 16));
        assert_eq!(idx.locate("streams[1].path"), (3, 5));
    }

    #[test]
    fn a_whole_document_in_flow_style_is_located() {
        let idx = KeyIndex::build("{listen: 1, streams: [{path: /a}]}\n");
        assert_eq!(idx.locate("listen"), (1, 2));
        assert_eq!(idx.locate("streams[0].path"), (1, 24));
    }

    #[test]
    fn anchors_and_tags_hide_no_keys_and_aliases_point_at_their_use() {
        let text = "upstreams:\n  a: &up { url: x }\n  b: *up\n  c: !!map\n    url: y\nstreams:\n  - &s\n    path: /a\n  - *s\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("upstreams.a.url"), (2, 12));
        assert_eq!(
            idx.locate("upstreams.b.url"),
            (3, 3),
            "the alias is where b gets it"
        );
        assert_eq!(idx.locate("upstreams.c.url"), (5, 5));
        assert_eq!(idx.locate("streams[0].path"), (8, 5));
        assert_eq!(idx.locate("streams[1].path"), (9, 3));
    }

    #[test]
    fn a_merged_key_points_at_the_map_that_merges_it() {
        let text = "upstreams:\n  base: &b\n    url: x\n  api:\n    <<: *b\n    headers: {}\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("upstreams.api.url"), (4, 3));
        assert_eq!(idx.locate("upstreams.api.headers"), (6, 5));
    }

    #[test]
    fn block_scalars_and_quoted_lines_hold_no_keys() {
        let text = "upstreams:\n  a:\n    url: |\n      - path: x\n      upstream: y\n\n    timeout: 1s\n  b:\n    url: \"a\n  - path: \\\" z\n  c: d\"\n    headers: { X: 'it''s: - a' }\nstreams:\n  - >-\n    - path: q\n  - path: /r\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("upstreams.a.url.upstream"), (3, 5));
        assert_eq!(idx.locate("upstreams.a.timeout"), (7, 5));
        // Neither the item nor the key inside the quoted URL was read: both fall back.
        assert_eq!(idx.locate("upstreams[0]"), (1, 1));
        assert_eq!(idx.locate("upstreams.c"), (1, 1));
        assert_eq!(idx.locate("upstreams.b.headers.X"), (12, 16));
        assert_eq!(idx.locate("streams[0].path"), (14, 3));
        assert_eq!(idx.locate("streams[1].path"), (16, 5));
    }

    #[test]
    fn a_hash_inside_quotes_is_not_a_comment() {
        let text = "upstreams:\n  a:\n    headers: { X: \"#1, b: 2\", Y: '#' } # Z: 3\n";
        let idx = KeyIndex::build(text);
        assert_eq!(idx.locate("upstreams.a.headers.Y"), (3, 31));
        assert_eq!(idx.locate("upstreams.a.headers.b"), (3, 5));
        assert_eq!(idx.locate("upstreams.a.headers.Z"), (3, 5));
    }

    #[test]
    fn a_key_not_in_the_file_has_no_line() {
        let idx = KeyIndex::build("listen: 1\n");
        assert_eq!(idx.locate("streams"), (0, 0));
        assert_eq!(KeyIndex::build("").locate("streams"), (0, 0));
    }
}
