//! TLS on the JSON-lines and Kafka listeners (rustls): the server's configuration from
//! PEM files, and a connection's socket, plain or encrypted, behind one non-blocking
//! read and write.
//!
//! rustls is sans-IO like the core: bytes from the socket go in (`read_tls`), are
//! decrypted (`process_new_packets`), and the plaintext is read out; plaintext written
//! in comes out as records (`write_tls`). The handshake runs inside the same calls.

use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConnection};

/// Plaintext taken into rustls per write: with the records it makes, what one
/// connection buffers beyond its write buffer.
const MAX_PLAINTEXT_PER_WRITE_BYTES: usize = 64 * 1024;

/// Where the listeners' certificate and key are, and who may connect.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), its own certificate first.
    pub cert_path: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// Certificate authorities (PEM) whose client certificates are required; `None`:
    /// clients need no certificate.
    pub client_ca_path: Option<PathBuf>,
}

impl TlsConfig {
    /// The rustls configuration, once the files are read and agree with each other.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let file = |p: &PathBuf| p.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_path)
            .and_then(Iterator::collect)
            .map_err(|e| format!("--tls-cert {}: {e}", file(&self.cert_path)))?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no certificate in it",
                file(&self.cert_path)
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_path)
            .map_err(|e| format!("--tls-key {}: {e}", file(&self.key_path)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_path {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let flag =
                    |e: &dyn std::fmt::Display| format!("--tls-client-ca {}: {e}", file(path));
                let mut roots = RootCertStore::empty();
                for ca in CertificateDer::pem_file_iter(path).map_err(|e| flag(&e))? {
                    roots.add(ca.map_err(|e| flag(&e))?).map_err(|e| flag(&e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| flag(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("--tls-cert and --tls-key: {e}"))?;
        Ok(Arc::new(config))
    }
}

/// A connection's socket: plain, or TLS over it.
pub(crate) struct Stream {
    tcp: TcpStream,
    tls: Option<Box<ServerConnection>>,
}

impl Stream {
    /// `tcp`, encrypted with `tls` if given.
    pub(crate) fn new(tcp: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) -> io::Result<Self> {
        let tls = match tls {
            None => None,
            Some(config) => Some(Box::new(
                ServerConnection::new(config.clone()).map_err(io::Error::other)?,
            )),
        };
        Ok(Stream { tcp, tls })
    }

    /// True if it is encrypted.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The socket, to register with the poll.
    pub(crate) fn tcp(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// True if encrypted bytes wait for the socket to take them.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Reads plaintext: `Ok(0)` once the peer closed, `WouldBlock` when nothing more
    /// is there now. A TLS error (a bad handshake, a plaintext client) is an error,
    /// after the alert that says why is sent.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.tcp.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Closed without close_notify: a close all the same (a truncation
                // attack cannot cut a request, as each is framed).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let got = tls.read_tls(&mut self.tcp)?;
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(&mut self.tcp); // the alert, if it fits
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            if got == 0 {
                // The socket ended: what is buffered, then the end.
                return Ok(tls.reader().read(buf).unwrap_or(0));
            }
        }
    }

    /// Writes plaintext: how much was taken, or `WouldBlock` while earlier bytes
    /// still wait for the socket.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.tcp.write(data);
        };
        flush_tls(tls, &mut self.tcp)?;
        let take = data.len().min(MAX_PLAINTEXT_PER_WRITE_BYTES);
        let n = tls.writer().write(&data[..take])?;
        match flush_tls(tls, &mut self.tcp) {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(n), // taken; what the socket did not take goes next time
        }
    }

    /// Writes the encrypted bytes waiting (handshake records included), as far as
    /// the socket takes them.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => match flush_tls(tls, &mut self.tcp) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }
}

fn flush_tls(tls: &mut ServerConnection, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
