//! Pure codecs: how a change is computed (`diff`) and how an event is written (`sse`).
//! No I/O and no state, so each is tested by properties against a real parser or patcher.

pub(crate) mod diff;
pub(crate) mod sse;
