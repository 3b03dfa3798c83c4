//! `${VAR}` expansion in upstream URLs, upstream headers and the admin token.

use super::errors::Errors;

/// Expands `${VAR}` from the environment; `$${` is a literal `${`.
pub(super) fn expand(
    errs: &mut Errors,
    key: &str,
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut ok = true;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                errs.add(key, "`${` without a closing `}`");
                return None;
            };
            let var = &tail[..end];
            match env(var) {
                Some(v) => out.push_str(&v),
                None => {
                    errs.add(key, format!("environment variable `{var}` is not set"));
                    ok = false;
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    ok.then_some(out)
}
