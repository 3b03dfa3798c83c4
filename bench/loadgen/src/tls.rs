//! The TLS every `--transport` but `h1` speaks: one protocol version and one cipher suite, so
//! the gateway and nginx are compared doing the same cryptography whatever each prefers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// Why no client config could be built from `--ca`.
#[derive(Debug)]
pub enum CaError {
    Pem(rustls_pki_types::pem::Error),
    Tls(rustls::Error),
    Empty,
}

/// A client trusting only the certificates in the PEM file `ca`, offering `alpn`: TLS 1.3 with
/// TLS13_AES_128_GCM_SHA256 alone (what nginx is pinned to by `ssl_conf_command Ciphersuites`),
/// and no session resumption, so every connection pays a full handshake as a new visitor does.
pub fn connector(ca: &str, alpn: &[u8]) -> Result<TlsConnector, CaError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(CaError::Pem)? {
        roots
            .add(cert.map_err(CaError::Pem)?)
            .map_err(CaError::Tls)?;
    }
    if roots.is_empty() {
        return Err(CaError::Empty);
    }
    let provider = CryptoProvider {
        cipher_suites: vec![cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..default_provider()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(CaError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name the certificate is checked against: the URL's host, an IP address or a DNS name.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => Some(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_string()).ok(),
    }
}

/// A TCP connection from `source` (one of the loopback addresses the clients are spread over,
/// as reqwest's `local_address` does for `h1`) to `addr`, with Nagle off as reqwest has it.
pub async fn tcp(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    let tcp = sock.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}
