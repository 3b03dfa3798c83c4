//! One SSE subscription per `--transport`: HTTP/1.1 (reqwest, as before TLS was measured),
//! HTTP/1.1 over TLS, HTTP/2 with a connection per client (a browser with one tab on the site),
//! or HTTP/2 with K clients' streams on each connection (one browser, many tabs). Every one ends
//! in the response body as a stream of bytes, so events are parsed and timed by the same code
//! whatever carried them.

use std::future::ready;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, LocalBoxStream, Stream, StreamExt};
use http::header::{ACCEPT, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyDataStream, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Transport {
    /// HTTP/1.1 over TCP.
    H1,
    /// HTTP/1.1 over TLS (ALPN http/1.1).
    Tls,
    /// HTTP/2 over TLS (ALPN h2), one connection per client.
    H2,
    /// HTTP/2 over TLS, `streams_per_conn` clients per connection.
    H2mux,
}

impl Transport {
    /// The name `--transport` takes, as the report writes it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::H1 => "h1",
            Transport::Tls => "tls",
            Transport::H2 => "h2",
            Transport::H2mux => "h2mux",
        }
    }
}

/// A subscription's response body; it ends where the connection fails or closes.
pub type Body = LocalBoxStream<'static, Bytes>;

/// Why a client got no event stream.
#[derive(Debug)]
pub enum Failed {
    Url(http::uri::InvalidUri),
    Io(std::io::Error),
    Reqwest(reqwest::Error),
    Http1(hyper::Error),
    Http2(h2::Error),
    Request(http::Error),
    /// Anything but a `200` of `text/event-stream`.
    Refused(StatusCode),
    /// No response head within `SETUP_TIMEOUT`.
    TimedOut,
    /// The connection ended before the response head.
    Closed,
}

macro_rules! from {
    ($($variant:ident($t:ty)),*) => {$(
        impl From<$t> for Failed {
            fn from(e: $t) -> Failed {
                Failed::$variant(e)
            }
        }
    )*};
}
from!(
    Url(http::uri::InvalidUri),
    Io(std::io::Error),
    Reqwest(reqwest::Error),
    Http1(hyper::Error),
    Http2(h2::Error),
    Request(http::Error)
);

/// Why the clients could not be set up at all.
#[derive(Debug)]
pub enum SetupError {
    Url(http::uri::InvalidUri),
    /// The URL's host and port resolve to no address.
    Address(String),
    /// A TLS transport without `--ca`.
    NoCa,
    Ca(tls::CaError),
}

/// A connection's handshake and its response head together take longer than this only when
/// the server has stopped answering; the client then counts as dropped.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The client's HTTP/2 receive windows, per stream and per connection: large, as a browser's
/// are (Chromium: 6 MB and 15 MB), so a connection of 100 streams never waits on the load
/// generator for a window update.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const EVENT_STREAM: &str = "text/event-stream";

/// What `Connector::new` needs to know.
pub struct Options<'a> {
    pub transport: Transport,
    /// Any one of the clients' URLs: the server's address, and its name for the certificate.
    pub url: &'a str,
    pub ca: Option<&'a str>,
    /// Loopback source addresses 127.0.0.1..=sources.
    pub sources: u8,
    pub clients: usize,
    pub streams_per_conn: usize,
    /// Connections in setup at once (TLS transports).
    pub in_flight: usize,
}

/// Opens the clients' subscriptions over one transport.
pub struct Connector {
    transport: Transport,
    via: Via,
}

enum Via {
    /// One reqwest client per source address, none keeping an idle connection.
    Plain(Vec<reqwest::Client>),
    Tls(Box<TlsClients>),
}

struct TlsClients {
    tls: TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    /// `Host` for HTTP/1.1 (HTTP/2 takes `:authority` from the URL).
    authority: String,
    sources: Vec<IpAddr>,
    streams_per_conn: usize,
    /// h2mux: connection j carries clients j·K to (j+1)·K − 1, opened by the first of them.
    shared: Vec<OnceCell<h2::client::SendRequest<Bytes>>>,
    /// Connections in setup at once. 10,000 clients connecting together would overflow the
    /// listen backlog while the server's cores are busy with handshakes, and a dropped SYN is
    /// retried only 1 s, then 3 s later: the attach would measure the kernel's backoff.
    setup: Semaphore,
}

impl Connector {
    pub fn new(o: &Options) -> Result<Connector, SetupError> {
        let sources: Vec<IpAddr> = (1..=o.sources.max(1))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect();
        let alpn: &[u8] = match o.transport {
            Transport::H1 => {
                let http = sources
                    .iter()
                    .filter_map(|&source| {
                        reqwest::Client::builder()
                            .no_proxy()
                            .local_address(source)
                            .pool_max_idle_per_host(0)
                            .build()
                            .ok()
                    })
                    .collect();
                return Ok(Connector {
                    transport: o.transport,
                    via: Via::Plain(http),
                });
            }
            Transport::Tls => b"http/1.1",
            Transport::H2 | Transport::H2mux => b"h2",
        };
        let uri: Uri = o.url.parse().map_err(SetupError::Url)?;
        let host = uri.host().unwrap_or("localhost");
        let port = uri.port_u16().unwrap_or(443);
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SetupError::Address(o.url.to_string()))?;
        let name = tls::server_name(host).ok_or_else(|| SetupError::Address(host.to_string()))?;
        let ca = o.ca.ok_or(SetupError::NoCa)?;
        let per = o.streams_per_conn.max(1);
        Ok(Connector {
            transport: o.transport,
            via: Via::Tls(Box::new(TlsClients {
                tls: tls::connector(ca, alpn).map_err(SetupError::Ca)?,
                addr,
                name,
                authority: uri
                    .authority()
                    .map_or_else(|| host.to_string(), |a| a.to_string()),
                sources,
                streams_per_conn: per,
                shared: (0..o.clients.div_ceil(per))
                    .map(|_| OnceCell::new())
                    .collect(),
                setup: Semaphore::new(o.in_flight.max(1)),
            })),
        })
    }

    /// Client `i`'s subscription to `url`: the body of a `200` of `text/event-stream`.
    pub async fn subscribe(&self, i: usize, url: &str) -> Result<Body, Failed> {
        match &self.via {
            Via::Plain(http) => plain(http, i, url).await,
            Via::Tls(c) => {
                let uri: Uri = url.parse()?;
                // Never closed, so a permit always comes.
                let _permit = c.setup.acquire().await;
                let open = async {
                    match self.transport {
                        Transport::H2 => {
                            let (send, conn) = c.http2(i).await?;
                            tokio::task::spawn_local(conn);
                            Ok(h2_body(get_h2(send, uri).await?))
                        }
                        Transport::H2mux => {
                            let send = c.shared_http2(i / c.streams_per_conn).await?;
                            Ok(h2_body(get_h2(send, uri).await?))
                        }
                        _ => {
                            let (mut send, conn) = c.http1(i).await?;
                            tokio::task::spawn_local(conn);
                            let resp = get_h1(&mut send, &uri, &c.authority).await?;
                            Ok(until_error(BodyDataStream::new(resp.into_body())))
                        }
                    }
                };
                tokio::time::timeout(SETUP_TIMEOUT, open)
                    .await
                    .unwrap_or(Err(Failed::TimedOut))
            }
        }
    }

    /// A fresh connection (HTTP/2 even for `h2mux`), its handshake and the response head of a
    /// subscription to `url`; then the connection is closed.
    pub async fn handshake(&self, i: usize, url: &str) -> Result<(), Failed> {
        let c = match &self.via {
            Via::Plain(http) => return plain(http, i, url).await.map(drop),
            Via::Tls(c) => c,
        };
        let uri: Uri = url.parse()?;
        let exchange = async {
            // The connection is driven beside the request and dropped with it, so the socket
            // closes as soon as the head is in.
            if self.transport == Transport::Tls {
                let (mut send, conn) = c.http1(i).await?;
                tokio::select! {
                    r = get_h1(&mut send, &uri, &c.authority) => r.map(drop),
                    _ = conn => Err(Failed::Closed),
                }
            } else {
                let (send, conn) = c.http2(i).await?;
                tokio::select! {
                    r = get_h2(send, uri) => r.map(drop),
                    _ = conn => Err(Failed::Closed),
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(Failed::TimedOut))
    }
}

type Http1 = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    hyper::client::conn::http1::Connection<TokioIo<TlsStream<TcpStream>>, Empty<Bytes>>,
);
type Http2 = (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<TlsStream<TcpStream>, Bytes>,
);

impl TlsClients {
    /// A TLS connection from the `k`th source address (round robin), handshake done.
    async fn tls(&self, k: usize) -> Result<TlsStream<TcpStream>, Failed> {
        let tcp = tls::tcp(self.sources[k % self.sources.len()], self.addr).await?;
        Ok(self.tls.connect(self.name.clone(), tcp).await?)
    }

    async fn http1(&self, k: usize) -> Result<Http1, Failed> {
        let tls = self.tls(k).await?;
        Ok(hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?)
    }

    async fn http2(&self, k: usize) -> Result<Http2, Failed> {
        let tls = self.tls(k).await?;
        Ok(h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(tls)
            .await?)
    }

    /// Connection `j` of `h2mux`, opened by whichever of its clients comes first.
    async fn shared_http2(&self, j: usize) -> Result<h2::client::SendRequest<Bytes>, Failed> {
        let cell = self.shared.get(j).ok_or(Failed::Closed)?;
        let send = cell
            .get_or_try_init(|| async {
                let (send, conn) = self.http2(j).await?;
                tokio::task::spawn_local(conn);
                Ok::<_, Failed>(send)
            })
            .await?;
        Ok(send.clone())
    }
}

async fn plain(http: &[reqwest::Client], i: usize, url: &str) -> Result<Body, Failed> {
    let http = http.get(i % http.len().max(1)).ok_or(Failed::Closed)?;
    let resp = http.get(url).header(ACCEPT, EVENT_STREAM).send().await?;
    check(resp.status(), resp.headers())?;
    Ok(until_error(resp.bytes_stream()))
}

async fn get_h1(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    uri: &Uri,
    authority: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, Failed> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(HOST, authority)
        .header(ACCEPT, EVENT_STREAM)
        .body(Empty::new())?;
    let resp = send.send_request(req).await?;
    check(resp.status(), resp.headers())?;
    Ok(resp)
}

/// A GET for `uri` as a new stream on the connection `send` belongs to; its response head.
async fn get_h2(
    send: h2::client::SendRequest<Bytes>,
    uri: Uri,
) -> Result<http::Response<h2::RecvStream>, Failed> {
    // Waits while the connection has as many streams open as the server allows.
    let mut send = send.ready().await?;
    let req = Request::get(uri).header(ACCEPT, EVENT_STREAM).body(())?;
    let (resp, _) = send.send_request(req, true)?;
    let resp = resp.await?;
    check(resp.status(), resp.headers())?;
    Ok(resp)
}

fn h2_body(resp: http::Response<h2::RecvStream>) -> Body {
    stream::unfold(resp.into_body(), |mut body| async move {
        let data = body.data().await?.ok()?;
        // h2 leaves giving the window back to the reader: without it a connection stops
        // after its first window of data, whatever its streams.
        let _ = body.flow_control().release_capacity(data.len());
        Some((data, body))
    })
    .boxed_local()
}

fn check(status: StatusCode, headers: &HeaderMap) -> Result<(), Failed> {
    let sse = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(EVENT_STREAM.as_bytes()));
    if status == StatusCode::OK && sse {
        Ok(())
    } else {
        Err(Failed::Refused(status))
    }
}

/// The body's bytes up to its first error: a broken stream ends like a closed one.
fn until_error<E>(body: impl Stream<Item = Result<Bytes, E>> + 'static) -> Body {
    body.take_while(|r| ready(r.is_ok()))
        .filter_map(|r| ready(r.ok()))
        .boxed_local()
}
