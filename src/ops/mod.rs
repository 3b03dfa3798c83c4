//! The operator's side: the admin listener, config reload and the listener's certificate.
//! These read and change the running state from above; nothing below them names them.

pub(crate) mod admin;
pub(crate) mod reload;
pub(crate) mod tls;
