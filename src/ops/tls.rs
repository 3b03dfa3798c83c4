//! TLS for the client listener: the certificate lives behind an `ArcSwap`, so a reload (a config
//! change or SIGHUP) swaps in renewed files without dropping a connection.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate `{cert}` or key `{key}`")]
    Load {
        cert: String,
        key: String,
        #[source]
        source: LoadError,
    },
}

/// What was wrong with the certificate and key files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(Box<pingora::Error>),
    #[error("no certificate or no private key in the PEM files")]
    Missing,
    #[error("no TLS crypto provider installed")]
    NoProvider,
    #[error(transparent)]
    Key(pingora::tls::RusTlsError),
}

/// Serves the current certificate to every handshake.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        Ok(CertStore {
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
        })
    }

    /// Reads the files again; on error the current certificate stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified_key(cert, key)?));
        Ok(())
    }
}

impl CertStore {
    /// The certificate handshakes get now, for tests that check what a reload left in place.
    #[cfg(test)]
    pub fn serving(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let fail = |source: LoadError| TlsError::Load {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    };
    pingora::tls::install_default_crypto_provider();
    let (chain, private) =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| fail(LoadError::Read(e)))?
            .ok_or_else(|| fail(LoadError::Missing))?;
    let provider = CryptoProvider::get_default().ok_or_else(|| fail(LoadError::NoProvider))?;
    let chain = chain.into_iter().map(|c| c.into_owned()).collect();
    CertifiedKey::from_der(chain, private.clone_key(), provider)
        .map_err(|e| fail(LoadError::Key(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_missing_file_is_named_and_its_cause_kept_as_the_source() {
        let err = CertStore::load(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("/nonexistent/c.pem"), "{message}");
        let cause = err.source().expect("the cause").to_string();
        assert!(!cause.is_empty());
        assert!(!message.contains(&cause), "{message} repeats {cause}");
    }
}
