//! Path templates: `/sse/orders/{id}`, where `{name}` stands for one whole path segment.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is encoded, so a value can never add a `/`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    pub fn parse(s: &str) -> Result<PathTemplate, String> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!("`{s}` must start with `/`"));
        };
        if s.contains(['?', '#']) {
            return Err(format!("`{s}` must be a path without query or fragment"));
        }
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!("`{{{name}}}` is not a valid parameter name"));
                }
                if segments.contains(&Segment::Param(name.to_string())) {
                    return Err(format!("parameter `{name}` appears twice"));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if is_dot_segment(seg) || seg.contains('\\') {
                // URL parsers (WHATWG, and the `url` crate polls go through) resolve these, so
                // `/../admin` would leave the upstream's base path.
                return Err(format!(
                    "`{seg}`: dot segments (`.`, `..`, `%2e`) and backslashes are not allowed"
                ));
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "`{seg}`: a parameter must be a whole path segment, like `/{{id}}`"
                ));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathTemplate {
            raw: s.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    pub fn is_template(&self) -> bool {
        self.params().next().is_some()
    }

    /// Matches a request path (still percent-encoded, no query) segment by segment and returns
    /// the raw value of each parameter in order.
    pub fn match_path<'a>(&self, path: &'a str) -> Option<Vec<(&str, &'a str)>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let mut values = Vec::new();
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => values.push((name.as_str(), part)),
            }
        }
        parts.next().is_none().then_some(values)
    }

    /// Renders with decoded values, each percent-encoded as exactly one segment. Callers refuse
    /// `.` and `..` first: those are unreserved, so they would pass through as dot segments.
    pub fn render(&self, values: &[(&str, String)]) -> String {
        let mut out = String::with_capacity(self.raw.len() + 16);
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(lit) => out.push_str(lit),
                Segment::Param(name) => {
                    let value = values
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or("", |(_, v)| v.as_str());
                    out.extend(utf8_percent_encode(value, SEGMENT));
                }
            }
        }
        out
    }
}

/// `.` or `..`, also with `%2e` for a dot, as WHATWG URL §4.4 counts them.
fn is_dot_segment(seg: &str) -> bool {
    let dots = seg.to_ascii_lowercase().replace("%2e", ".");
    dots == "." || dots == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments() {
        let t = PathTemplate::parse("/sse/orders/{id}").unwrap();
        assert!(t.is_template());
        assert_eq!(t.params().collect::<Vec<_>>(), ["id"]);
        assert_eq!(t.match_path("/sse/orders/42"), Some(vec![("id", "42")]));
        assert_eq!(t.match_path("/sse/orders/"), None);
        assert_eq!(t.match_path("/sse/orders/42/"), None);
        assert_eq!(t.match_path("/sse/orders/4/2"), None);
        assert_eq!(t.match_path("/sse/order/42"), None);
        let plain = PathTemplate::parse("/sse/prices").unwrap();
        assert!(!plain.is_template());
        assert_eq!(plain.match_path("/sse/prices"), Some(vec![]));
    }

    #[test]
    fn values_render_into_one_encoded_segment() {
        let t = PathTemplate::parse("/api/orders/{id}/lines").unwrap();
        let r = |v: &str| t.render(&[("id", v.to_string())]);
        assert_eq!(r("42"), "/api/orders/42/lines");
        assert_eq!(r("a/../b"), "/api/orders/a%2F..%2Fb/lines");
        assert_eq!(r("%2F"), "/api/orders/%252F/lines");
        assert_eq!(r("é ?#"), "/api/orders/%C3%A9%20%3F%23/lines");
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "sse/x",
            "/a{b}",
            "/{}",
            "/{id}/{id}",
            "/{1x}",
            "/{a",
            "/a}",
            "/x?y=1",
            "/v1/../admin",
            "/./x",
            "/a/%2E%2e/b",
            "/a/.%2e",
            "/a\\..\\b",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
