//! Just enough HTTP/1.1 for the built-in upstream: request heads and their headers.

use tokio::io::AsyncReadExt;

/// The next request head on `sock` (through its blank line), keeping in `buf` whatever
/// follows it; `None` once the client closes or sends a head past 64 KB.
pub async fn read_head(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    const END: &[u8] = b"\r\n\r\n";
    let mut searched = 0;
    loop {
        if let Some(i) = buf[searched..].windows(END.len()).position(|w| w == END) {
            let end = searched + i + END.len();
            return Some(buf.drain(..end).collect());
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        // The terminator may straddle two reads.
        searched = buf.len().saturating_sub(END.len() - 1);
        let mut chunk = [0u8; 8192];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The value of header `name` (any case) in a request head.
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
