//! Key path → line and column, built once from the YAML text, so semantic errors (which serde
//! never sees) can still point into the file.
//!
//! It reads block-style YAML by indentation: `key:` lines, `- ` list items, and the keys of a
//! one-line flow map (`headers: { A: b }`). Multi-line flow collections and anchors are not
//! tracked; an error under them points at the nearest enclosing key.

use std::collections::HashMap;

pub struct KeyIndex {
    lines: HashMap<String, (usize, usize)>,
}

impl KeyIndex {
    pub fn build(text: &str) -> KeyIndex {
        let mut lines = HashMap::new();
        // (indent, path of this entry)
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut items: HashMap<String, usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut indent = raw.len() - trimmed.len();
            let mut rest = trimmed;
            while let Some(after) = rest
                .strip_prefix("- ")
                .or_else(|| (rest == "-").then_some(""))
            {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                let parent = stack.last().map_or(String::new(), |(_, p)| p.clone());
                let counter = items.entry(parent.clone()).or_insert(0);
                let path = format!("{parent}[{counter}]");
                *counter += 1;
                lines.entry(path.clone()).or_insert((line_no, indent + 1));
                stack.push((indent, path));
                let skipped = rest.len() - after.len();
                indent += skipped + (after.len() - after.trim_start().len());
                rest = after.trim_start();
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let path = join(stack.last().map(|(_, p)| p.as_str()), key);
            lines.entry(path.clone()).or_insert((line_no, indent + 1));
            // Keys of a one-line flow map.
            let value = value.trim();
            if value.starts_with('{') {
                let base_col = raw.len() - value.len();
                for (pos, k) in flow_keys(value) {
                    lines
                        .entry(join(Some(&path), k))
                        .or_insert((line_no, base_col + pos + 1));
                }
            }
            stack.push((indent, path));
        }
        KeyIndex { lines }
    }

    /// The line and column of `key`, or of its nearest indexed ancestor.
    pub fn locate(&self, key: &str) -> (usize, usize) {
        let mut k = key;
        loop {
            if let Some(loc) = self.lines.get(k) {
                return *loc;
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return (1, 1),
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

/// `key: value` → (key, value); keys may be quoted.
fn split_key(s: &str) -> Option<(&str, &str)> {
    let (key, rest) = if let Some(q) = s.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = s.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = s.find(':')?;
        (s[..end].trim_end(), &s[end..])
    };
    let value = rest.trim_start().strip_prefix(':')?;
    (value.is_empty() || value.starts_with([' ', '\t'])).then_some((key, value))
}

/// Keys of a flow map `{ a: 1, "b": 2 }` with their byte offsets.
fn flow_keys(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    let mut in_quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        if let Some(q) = in_quote {
            if c == q {
                in_quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => in_quote = Some(c),
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    start = Some(i + 1);
                }
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => start = Some(i + 1),
            ':' if depth == 1 => {
                if let Some(st) = start.take() {
                    let k = s[st..i].trim();
                    let k = k.trim_matches(['"', '\'']);
                    let lead = s[st..i].len() - s[st..i].trim_start().len();
                    out.push((st + lead, k));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
}
