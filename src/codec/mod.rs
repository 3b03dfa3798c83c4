//! Pure codecs: how a change is computed (`diff`), how an event is written (`sse`), and the
//! checksum of the document an event leaves a client with (`checksum`).
//! No I/O and no state, so each is tested by properties against a real parser or patcher.

pub(crate) mod checksum;
pub(crate) mod diff;
pub(crate) mod sse;
