//! Pure codecs: how a change is computed (`diff`, with `keyed` lining up the arrays named in
//! `array_keys`), how an event is written (`sse`), and the
//! checksum of the document an event leaves a client with (`checksum`).
//! No I/O and no state, so each is tested by properties against a real parser or patcher.

pub(crate) mod checksum;
pub(crate) mod diff;
mod keyed;
pub(crate) mod sse;
#[cfg(test)]
mod tests_keyed;
