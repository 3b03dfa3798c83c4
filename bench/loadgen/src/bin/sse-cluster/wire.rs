//! A minimal SSE client on a bare socket: one GET, the response head, chunked transfer coding
//! undone, and each event's text handed over. At 100,000 clients the load generator shares the
//! two cores with the gateways, so its CPU per event is on the critical path of every change;
//! this costs a fraction of reqwest + eventsource-stream, which sse-loadgen keeps (it also talks
//! to nchan, Pushpin and Node).

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// One read buffer for every client of a process (they run on one thread): a client keeps only
/// the bytes of its unfinished event, not a read buffer of its own.
pub type Scratch = Rc<RefCell<Vec<u8>>>;

pub fn scratch() -> Scratch {
    Rc::new(RefCell::new(vec![0; 64 * 1024]))
}

/// A stream whose head said 200 and `text/event-stream`.
pub struct Stream {
    sock: TcpStream,
    scratch: Scratch,
    chunked: bool,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Decoded body not yet split into events.
    body: Vec<u8>,
}

/// Connects from `source` (port chosen by the kernel) and sends the GET; `None` unless the
/// answer is a 200 event stream.
pub async fn open(
    source: IpAddr,
    to: SocketAddr,
    path: String,
    scratch: Scratch,
) -> Option<Stream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut sock = socket.connect(to).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nAccept: text/event-stream\r\n\r\n");
    sock.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::with_capacity(2048);
    let end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i + 4;
        }
        if raw.len() > 16 * 1024 || read_more(&sock, &scratch, &mut raw).await == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let ok = head.starts_with("http/1.1 200") && head.contains("content-type: text/event-stream");
    let chunked = head.contains("transfer-encoding: chunked");
    raw.drain(..end);
    ok.then_some(Stream {
        sock,
        scratch,
        chunked,
        raw,
        body: Vec::new(),
    })
}

/// Appends what the socket has to `buf`; 0 when it closed or failed.
async fn read_more(sock: &TcpStream, scratch: &Scratch, buf: &mut Vec<u8>) -> usize {
    loop {
        if sock.readable().await.is_err() {
            return 0;
        }
        let mut s = scratch.borrow_mut();
        match sock.try_read(&mut s) {
            Ok(n) => {
                buf.extend_from_slice(&s[..n]);
                return n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => return 0,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Stream {
    /// Calls `each` with the text of every complete event, until the stream ends.
    pub async fn events(mut self, mut each: impl FnMut(&[u8])) {
        loop {
            if self.chunked {
                if !dechunk(&mut self.raw, &mut self.body) {
                    return;
                }
            } else {
                self.body.append(&mut self.raw);
            }
            let mut start = 0;
            while let Some(i) = find(&self.body[start..], b"\n\n") {
                each(&self.body[start..start + i]);
                start += i + 2;
            }
            self.body.drain(..start);
            if read_more(&self.sock, &self.scratch, &mut self.raw).await == 0 {
                return;
            }
        }
    }
}

/// Moves every complete chunk's data from `raw` to `out`; false at the last chunk or on a
/// framing error (the stream is over either way).
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    let mut at = 0;
    let ok = loop {
        let Some(eol) = find(&raw[at..], b"\r\n") else {
            break true;
        };
        let line = String::from_utf8_lossy(&raw[at..at + eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break false;
        };
        if size == 0 {
            break false;
        }
        let data = at + eol + 2;
        if raw.len() < data + size + 2 {
            break true;
        }
        out.extend_from_slice(&raw[data..data + size]);
        at = data + size + 2;
    };
    raw.drain(..at);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_anywhere_come_out_whole() {
        let wire = b"1a\r\nevent: snapshot\ndata: {}\n\n\r\n5\r\ndata:\r\n3\r\n 1\n\r\n1\r\n\n\r\n";
        for cut in 0..wire.len() {
            let (mut raw, mut out) = (wire[..cut].to_vec(), Vec::new());
            assert!(dechunk(&mut raw, &mut out));
            raw.extend_from_slice(&wire[cut..]);
            assert!(dechunk(&mut raw, &mut out));
            assert_eq!(out, b"event: snapshot\ndata: {}\n\ndata: 1\n\n");
            assert!(raw.is_empty());
        }
    }

    #[test]
    fn the_last_chunk_ends_the_stream() {
        let (mut raw, mut out) = (b"2\r\nab\r\n0\r\n\r\n".to_vec(), Vec::new());
        assert!(!dechunk(&mut raw, &mut out));
        assert_eq!(out, b"ab");
    }
}
