//! TLS on the JSON-lines and Kafka listeners and on peer links (rustls): the
//! configurations from PEM files, and a connection's socket, plain or encrypted (as
//! the server or, on a link to a peer, as the client), behind one non-blocking read
//! and write.
//!
//! rustls is sans-IO like the core: bytes from the socket go in (`read_tls`), are
//! decrypted (`process_new_packets`), and the plaintext is read out; plaintext written
//! in comes out as records (`write_tls`). The handshake runs inside the same calls.

use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConnection, Connection, RootCertStore, ServerConnection};

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
    /// In a cluster: the certificate authority (PEM) that signed every node's
    /// certificate. A node's links to its peers are TLS, checking the peer's
    /// certificate against it and showing its own; a peer's hello is taken only over a
    /// connection whose client certificate it signed.
    pub peer_ca_path: Option<PathBuf>,
}

fn file(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// The certificate authorities in PEM file `path` (named `flag` in errors).
fn roots(flag: &str, path: &std::path::Path) -> Result<RootCertStore, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{flag} {}: {e}", file(path));
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(path).map_err(|e| fail(&e))? {
        roots.add(ca.map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
    }
    if roots.is_empty() {
        return Err(fail(&"no certificate in it"));
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// The listeners' rustls configuration, once the files are read and agree with
    /// each other. With a peer CA, a client may show a certificate it
    /// signed (a peer's) even where client certificates are not required.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let (certs, key) = self.own_certificate()?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        if let Some(path) = &self.client_ca_path {
            roots
                .roots
                .extend(self::roots("--tls-client-ca", path)?.roots);
        }
        if let Some(path) = &self.peer_ca_path {
            roots
                .roots
                .extend(self::roots("--tls-peer-ca", path)?.roots);
        }
        let builder = if roots.is_empty() {
            builder.with_no_client_auth()
        } else {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
            let verifier = match self.client_ca_path {
                Some(_) => verifier,
                None => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("--tls-cert and --tls-key: {e}"))?;
        Ok(Arc::new(config))
    }

    /// The configuration of links to peers: their certificates checked against the
    /// peer CA, this node's own shown (`None` without a peer CA).
    pub fn peer_client_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        let Some(path) = &self.peer_ca_path else {
            return Ok(None);
        };
        let (certs, key) = self.own_certificate()?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots("--tls-peer-ca", path)?)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("--tls-cert and --tls-key: {e}"))?;
        Ok(Some(Arc::new(config)))
    }

    /// What checks that a connection's client certificate is a node's (signed by the
    /// peer CA); `None` without a peer CA.
    pub fn peer_verifier(&self) -> Result<Option<PeerVerifier>, String> {
        let Some(path) = &self.peer_ca_path else {
            return Ok(None);
        };
        let roots = roots("--tls-peer-ca", path)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
            .build()
            .map_err(|e| format!("--tls-peer-ca {}: {e}", file(path)))?;
        Ok(Some(PeerVerifier(verifier)))
    }

    fn own_certificate(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
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
        Ok((certs, key))
    }
}

/// Checks that a connection's client certificate was signed by the peer CA.
pub struct PeerVerifier(Arc<dyn ClientCertVerifier>);

impl PeerVerifier {
    /// Why `stream`'s client certificate is not that of the node at `node_ip`, if it is
    /// not: it must be signed by the peer CA and valid for that address.
    pub(crate) fn check(&self, stream: &Stream, node_ip: std::net::IpAddr) -> Result<(), String> {
        let certs = stream.peer_certificates().unwrap_or(&[]);
        let Some((end_entity, intermediates)) = certs.split_first() else {
            return Err("no client certificate (a peer shows one signed by --tls-peer-ca)".into());
        };
        (self.0)
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| format!("its certificate is not a node's (--tls-peer-ca): {e}"))?;
        let parsed = webpki::EndEntityCert::try_from(end_entity).map_err(|e| e.to_string())?;
        (parsed.verify_is_valid_for_subject_name(&ServerName::IpAddress(node_ip.into())))
            .map_err(|e| format!("its certificate is not for {node_ip}, the node's address: {e}"))
    }
}

/// A connection's socket: plain, or TLS over it.
pub(crate) struct Stream {
    tcp: TcpStream,
    tls: Option<Box<Connection>>,
}

impl Stream {
    /// `tcp`, a connection to a listener, encrypted with `tls` if given.
    pub(crate) fn new(tcp: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) -> io::Result<Self> {
        let tls = match tls {
            None => None,
            Some(config) => Some(Box::new(Connection::Server(
                ServerConnection::new(config.clone()).map_err(io::Error::other)?,
            ))),
        };
        Ok(Stream { tcp, tls })
    }

    /// `tcp`, a link to a peer at `addr`, encrypted with `tls` if given (the peer's
    /// certificate must be valid for its IP address).
    pub(crate) fn client(
        tcp: TcpStream,
        tls: Option<&Arc<rustls::ClientConfig>>,
        addr: std::net::IpAddr,
    ) -> io::Result<Self> {
        let tls = match tls {
            None => None,
            Some(config) => Some(Box::new(Connection::Client(
                ClientConnection::new(config.clone(), ServerName::IpAddress(addr.into()))
                    .map_err(io::Error::other)?,
            ))),
        };
        Ok(Stream { tcp, tls })
    }

    /// The certificates the other end showed, its own first (TLS, once handshaken).
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.as_ref()?.peer_certificates()
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
        if n == 0 && take > 0 {
            // rustls holds as much plaintext as it may (a handshake is not done).
            return Err(ErrorKind::WouldBlock.into());
        }
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

fn flush_tls(tls: &mut Connection, tcp: &mut TcpStream) -> io::Result<()> {
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
