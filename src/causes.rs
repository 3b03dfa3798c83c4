//! An error told on one line: its message, then each cause once. The gateway's errors leave
//! their causes to `source` rather than repeating them in the message, so walking the chain is
//! how a log line or the CLI shows what went wrong. A leaf: it imports nothing of the gateway.

use std::error::Error;

/// The causes of `e`, outermost first, joined by `: `; empty when it has none.
pub fn of(e: &dyn Error) -> String {
    let mut causes = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    causes.join(": ")
}

/// `e`'s message, then its causes.
pub fn with_causes(e: &dyn Error) -> String {
    let causes = of(e);
    if causes.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {causes}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_told_once_after_the_message() {
        let e = Outer(std::io::Error::other("no room"));
        assert_eq!(of(&e), "no room");
        assert_eq!(with_causes(&e), "cannot start: no room");
        assert_eq!(with_causes(&std::io::Error::other("plain")), "plain");
    }
}
