//! Files the binary serves as they are: the browser client (`clients/js/`), on the client
//! listener for pages and on the admin listener for the console.

/// `clients/js/live-document.js`, the ES module a page imports to follow a stream.
pub const CLIENT_JS: &str = include_str!("../clients/js/live-document.js");
