//! `cors`, at the top level or per stream (WHATWG Fetch, CORS protocol).

use super::super::file::CorsFile;
use super::super::Cors;
use super::errors::Errors;

pub(super) fn cors(errs: &mut Errors, key: &str, c: &CorsFile) -> Option<Cors> {
    let mut ok = true;
    for (i, o) in c.origins.iter().enumerate() {
        // Browsers refuse `*` with credentials so that no site can read another's with its
        // visitors' cookies; answering with each origin would undo that (security review F2).
        if o == "*" && c.credentials {
            errs.add(
                format!("{key}.origins[{i}]"),
                "`*` with `credentials: true` would let every site read the stream with its \
                 visitors' cookies: list the origins, or drop `credentials`",
            );
            ok = false;
            continue;
        }
        let valid = o == "*"
            || url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && !o.ends_with('/')
                    && u.query().is_none()
            });
        if !valid {
            errs.add(
                format!("{key}.origins[{i}]"),
                format!("`{o}` is not an origin like https://app.example.com (or `*`)"),
            );
            ok = false;
        }
    }
    ok.then(|| Cors {
        origins: c.origins.clone(),
        credentials: c.credentials,
    })
}
