//! What every request of the gateway, client or operator, shares: built once by `app.rs` and
//! passed down, never a `static`. The client side's own counts stay in `edge::ClientSide`.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::routes::Routes;

pub(crate) struct Shared {
    /// Replaced whole by a reload; a request loads it once and sees one consistent table.
    pub routes: ArcSwap<Routes>,
    pub hub: Arc<dyn Hub>,
    pub metrics: Arc<Metrics>,
}
