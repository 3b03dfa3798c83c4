//! What travels through Redis, both ways: feed messages, and the scripts' answers. Pure, so the
//! parsing of every shape is tested without a Redis.

use bytes::Bytes;
use redis::Value;

use crate::codec::sse;
use crate::hub::topic::Frame;
use crate::hub::LastEventId;

/// One message on an instance's channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A change: `f <epoch> <seq> <snapshot len> <json patch len> <merge patch len>\n` + bytes.
    Frame(Frame),
    /// The upstream's health: `s <1 failing | 0 healthy>\n` + the status event.
    Status { failing: bool, event: Bytes },
    /// The upstream refused these credentials: `d <status>\n` + the last event.
    Denied { status: u16, last: Bytes },
    /// The holder's heartbeat, with where it stands: `h <epoch> <seq>`.
    Tick { epoch: u64, seq: u64 },
    /// The holder let go of its lease: `r`.
    Released,
    /// Someone asked for `POST /streams/refresh`: `q`.
    Refresh,
}

/// A frame as Redis holds it: the snapshot and the patches, already encoded as SSE events by
/// the holder, so every replica sends the same bytes. The checksum is read back out of the
/// snapshot's id; a frame written without one (by a gateway from before checksums) gets 0,
/// which no client's id names, so its clients resume with a snapshot.
fn frame(
    epoch: u64,
    seq: u64,
    snapshot: Bytes,
    json_patch: Option<Bytes>,
    merge_patch: Option<Bytes>,
) -> Frame {
    let checksum = sse::id_of(&snapshot)
        .and_then(LastEventId::parse)
        .map_or(0, |id| id.checksum);
    Frame {
        epoch,
        seq,
        checksum,
        snapshot,
        json_patch,
        merge_patch,
    }
}

pub fn epoch_text(epoch: u64) -> String {
    format!("{epoch:012x}")
}

fn some(b: Bytes) -> Option<Bytes> {
    (!b.is_empty()).then_some(b)
}

impl Message {
    pub fn parse(payload: &[u8]) -> Option<Message> {
        let payload = Bytes::copy_from_slice(payload);
        let (head, body) = match payload.iter().position(|&b| b == b'\n') {
            Some(i) => (payload.slice(..i), payload.slice(i + 1..)),
            None => (payload.clone(), Bytes::new()),
        };
        let head = std::str::from_utf8(&head).ok()?;
        let mut words = head.split(' ');
        let message = match words.next()? {
            "f" => {
                let epoch = u64::from_str_radix(words.next()?, 16).ok()?;
                let mut num = || words.next()?.parse::<usize>().ok();
                let (seq, s, j, m) = (num()?, num()?, num()?, num()?);
                if body.len() != s + j + m {
                    return None;
                }
                Message::Frame(frame(
                    epoch,
                    seq as u64,
                    body.slice(..s),
                    some(body.slice(s..s + j)),
                    some(body.slice(s + j..)),
                ))
            }
            "s" => Message::Status {
                failing: words.next()? == "1",
                event: body,
            },
            "d" => Message::Denied {
                status: words.next()?.parse().ok()?,
                last: body,
            },
            "h" => Message::Tick {
                epoch: u64::from_str_radix(words.next()?, 16).ok()?,
                seq: words.next()?.parse().ok()?,
            },
            "r" => Message::Released,
            "q" => Message::Refresh,
            _ => return None,
        };
        Some(message)
    }
}

/// What `JOIN` answered: whether this replica holds the lease now, who does, and the state a
/// replica starts from.
#[derive(Debug, Default)]
pub struct Joined {
    pub held: bool,
    pub holder: String,
    pub epoch: u64,
    pub seq: u64,
    /// The upstream-status event while the upstream fails.
    pub status: Option<Bytes>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// How long ago the last poll ran (Redis's clock), if one did.
    pub since_poll_ms: Option<u64>,
    /// Oldest first, consecutive, ending at `seq`: those after what the caller holds, or the
    /// newest ones.
    pub frames: Vec<Frame>,
}

fn bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Int(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn nonempty(v: &Value) -> Option<String> {
    text(v).filter(|s| !s.is_empty())
}

impl Joined {
    pub fn parse(v: &Value) -> Option<Joined> {
        let Value::Array(items) = v else { return None };
        let [held, holder, epoch, seq, status, etag, lm, age, frames] = items.as_slice() else {
            return None;
        };
        let epoch = u64::from_str_radix(&text(epoch)?, 16).ok()?;
        let Value::Array(entries) = frames else {
            return None;
        };
        let frames: Vec<Frame> = entries
            .iter()
            .map(|e| entry(epoch, e))
            .collect::<Option<_>>()?;
        Some(Joined {
            held: int(held)? == 1,
            holder: text(holder).unwrap_or_default(),
            epoch,
            seq: u64::try_from(int(seq)?).ok()?,
            status: bytes(status).filter(|b| !b.is_empty()),
            etag: nonempty(etag),
            last_modified: nonempty(lm),
            since_poll_ms: u64::try_from(int(age)?).ok(),
            frames,
        })
    }
}

/// A log entry: `[<seq>-0, [s, snapshot, j, json patch, m, merge patch, n, size]]`.
fn entry(epoch: u64, v: &Value) -> Option<Frame> {
    let Value::Array(pair) = v else { return None };
    let [id, fields] = pair.as_slice() else {
        return None;
    };
    let seq = text(id)?.split_once('-')?.0.parse().ok()?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let (mut snapshot, mut json_patch, mut merge_patch) = (Bytes::new(), None, None);
    for kv in fields.chunks(2) {
        let [k, v] = kv else { return None };
        match text(k)?.as_str() {
            "s" => snapshot = bytes(v)?,
            "j" => json_patch = some(bytes(v)?),
            "m" => merge_patch = some(bytes(v)?),
            _ => {}
        }
    }
    Some(frame(epoch, seq, snapshot, json_patch, merge_patch))
}

/// What `RENEW` answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Renewed {
    pub held: bool,
    pub json_patch_wanted: bool,
    pub merge_patch_wanted: bool,
}

impl Renewed {
    pub fn parse(v: &Value) -> Option<Renewed> {
        let Value::Array(items) = v else { return None };
        let [held, jp, mp] = items.as_slice() else {
            return None;
        };
        Some(Renewed {
            held: int(held)? == 1,
            json_patch_wanted: int(jp)? == 1,
            merge_patch_wanted: int(mp)? == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let f = Message::parse(b"f 00000000abcd 7 3 2 0\nsnpjp").unwrap();
        assert_eq!(
            f,
            Message::Frame(Frame {
                epoch: 0xabcd,
                seq: 7,
                checksum: 0,
                snapshot: Bytes::from_static(b"snp"),
                json_patch: Some(Bytes::from_static(b"jp")),
                merge_patch: None,
            })
        );
        assert_eq!(
            Message::parse(b"s 1\nevent: upstream-status\n\n"),
            Some(Message::Status {
                failing: true,
                event: Bytes::from_static(b"event: upstream-status\n\n")
            })
        );
        assert_eq!(
            Message::parse(b"d 401\nend"),
            Some(Message::Denied {
                status: 401,
                last: Bytes::from_static(b"end")
            })
        );
        assert_eq!(
            Message::parse(b"h 00000000000f 9"),
            Some(Message::Tick { epoch: 15, seq: 9 })
        );
        assert_eq!(Message::parse(b"r"), Some(Message::Released));
        assert_eq!(Message::parse(b"q"), Some(Message::Refresh));
        for bad in [
            &b"f 1 2 3 4 5\nshort"[..],
            b"f zz 1 0 0 0\n",
            b"x",
            b"h 1",
            b"",
        ] {
            assert_eq!(Message::parse(bad), None, "{bad:?}");
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_join_answer_gives_the_frames_oldest_first() {
        let entry = |seq: u64, jp: &str| {
            Value::Array(vec![
                bulk(&format!("{seq}-0")),
                Value::Array(vec![
                    bulk("s"),
                    bulk(&format!("snap{seq}")),
                    bulk("j"),
                    bulk(jp),
                    bulk("m"),
                    bulk(""),
                    bulk("n"),
                    bulk("9"),
                ]),
            ])
        };
        let v = Value::Array(vec![
            Value::Int(1),
            bulk("a:tok"),
            bulk("000000000010"),
            bulk("5"),
            bulk(""),
            bulk("\"v1\""),
            bulk(""),
            Value::Int(120),
            Value::Array(vec![entry(4, ""), entry(5, "p5")]),
        ]);
        let j = Joined::parse(&v).unwrap();
        assert!(j.held);
        assert_eq!((j.epoch, j.seq, j.since_poll_ms), (16, 5, Some(120)));
        assert_eq!(j.etag.as_deref(), Some("\"v1\""));
        assert_eq!((j.status, j.last_modified), (None, None));
        let seqs: Vec<u64> = j.frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(j.frames[0].json_patch, None);
        assert_eq!(j.frames[1].json_patch, Some(Bytes::from_static(b"p5")));
        // No poll yet: -1.
        let mut items = match v {
            Value::Array(i) => i,
            _ => unreachable!(),
        };
        items[7] = Value::Int(-1);
        assert_eq!(
            Joined::parse(&Value::Array(items)).unwrap().since_poll_ms,
            None
        );
    }
}
