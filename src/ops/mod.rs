//! The operator's side: the admin listener, config reload, the listener's certificate and the
//! upgrade socket. These read and change the running state from above; nothing below them names
//! them.

pub(crate) mod admin;
pub(crate) mod reload;
pub(crate) mod tls;
pub(crate) mod upgrade;
