//! Mutual TLS for replication links: rustls configs from PEM (files or
//! memory), TLS 1.3 only, ring provider, and the peer-identity check.
//!
//! Identity model: every node's certificate carries its node name as a DNS
//! SubjectAltName. The dialer passes the peer's node name as the TLS server
//! name, so rustls' standard hostname check proves who answered. The
//! acceptor learns who dialed from the peer's `Hello` and confirms the claim
//! with [`verify_peer_node`] against the verified client certificate.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::error::{Error, Result};

/// ALPN protocol id; a TLS service that is not tidelog fails the handshake
/// instead of receiving frames it cannot parse.
pub const ALPN: &[u8] = b"tidelog/1";

/// Handshake timeout callers use unless configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a PEM document comes from.
#[derive(Clone)]
pub enum PemSource {
    File(PathBuf),
    Pem(Vec<u8>),
}

// Manual Debug: in-memory PEM may hold a private key, which must not end up
// in logs.
impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(p) => write!(f, "File({})", p.display()),
            PemSource::Pem(b) => write!(f, "Pem(<{} bytes>)", b.len()),
        }
    }
}

impl PemSource {
    fn label(&self, what: &str) -> String {
        match self {
            PemSource::File(p) => format!("{what} file {}", p.display()),
            PemSource::Pem(_) => format!("in-memory {what}"),
        }
    }

    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            PemSource::Pem(b) => Ok(b.clone()),
            PemSource::File(p) => std::fs::read(p).map_err(|e| {
                Error::Tls(match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "{what} file {} does not exist: check the path in the TLS settings",
                        p.display()
                    ),
                    _ => format!("cannot read {what} file {}: {e}", p.display()),
                })
            }),
        }
    }
}

/// This node's certificate chain and key, and the CA bundle it trusts for
/// peers.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// PEM certificates, this node's first, then any intermediates.
    pub cert_chain: PemSource,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PemSource,
    /// PEM CA certificates that issue peers' certificates.
    pub ca: PemSource,
}

impl TlsIdentity {
    pub fn from_files(
        cert_chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        TlsIdentity {
            cert_chain: PemSource::File(cert_chain.into()),
            key: PemSource::File(key.into()),
            ca: PemSource::File(ca.into()),
        }
    }

    pub fn from_pem(
        cert_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        ca: impl Into<Vec<u8>>,
    ) -> Self {
        TlsIdentity {
            cert_chain: PemSource::Pem(cert_chain.into()),
            key: PemSource::Pem(key.into()),
            ca: PemSource::Pem(ca.into()),
        }
    }

    /// Acceptor side: presents our certificate and requires a client
    /// certificate issued by the CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let (chain, key, roots) = self.load()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Error::Tls(format!("cannot build client verifier from the CA: {e}")))?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(format!("TLS 1.3 unavailable: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| self.key_error(e))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Dialer side: verifies the server against the CA and the dialed node
    /// name, and presents our certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let (chain, key, roots) = self.load()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(format!("TLS 1.3 unavailable: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| self.key_error(e))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    fn key_error(&self, e: rustls::Error) -> Error {
        Error::Tls(format!(
            "{} and {} do not form a usable pair ({e}): the key must be the one the certificate was issued for",
            self.cert_chain.label("certificate"),
            self.key.label("private key"),
        ))
    }

    #[allow(clippy::type_complexity)]
    fn load(
        &self,
    ) -> Result<(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Arc<RootCertStore>,
    )> {
        let chain = load_certs(&self.cert_chain, "certificate")?;
        let key = load_key(&self.key)?;
        let mut roots = RootCertStore::empty();
        for (i, ca) in load_certs(&self.ca, "CA bundle")?.into_iter().enumerate() {
            roots.add(ca).map_err(|e| {
                Error::Tls(format!(
                    "certificate #{} in {} is not a usable CA certificate: {e}",
                    i + 1,
                    self.ca.label("CA bundle")
                ))
            })?;
        }
        Ok((chain, key, Arc::new(roots)))
    }
}

fn load_certs(src: &PemSource, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = src.read(what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{} is not valid PEM: {e}", src.label(what))))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no certificate: expected a -----BEGIN CERTIFICATE----- block",
            src.label(what)
        )));
    }
    Ok(certs)
}

fn load_key(src: &PemSource) -> Result<PrivateKeyDer<'static>> {
    let what = "private key";
    let bytes = src.read(what)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        Error::Tls(match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "{} holds no private key: expected a -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY) block",
                src.label(what)
            ),
            e => format!("{} is not valid PEM: {e}", src.label(what)),
        })
    })
}

/// Dials `addr`, completes the TLS handshake within `timeout`, and checks
/// that the server's certificate names `peer_node_name`.
///
/// With TLS 1.3 the server checks our certificate after the dialer's
/// handshake finishes, so a rejection of *our* certificate shows up as an
/// error on the first read (mapped by `From<WireError>` or [`io_error`]).
pub async fn connect(
    addr: &str,
    peer_node_name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(peer_node_name.to_string()).map_err(|e| {
        Error::invalid(
            "peer node name",
            format!("`{peer_node_name}` is not a valid DNS name: {e}"),
        )
    })?;
    let dial = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            Error::Peer(format!(
                "cannot connect to `{peer_node_name}` at {addr}: {e}"
            ))
        })?;
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                io_error(
                    e,
                    &format!("TLS handshake with `{peer_node_name}` at {addr}"),
                )
            })
    };
    tokio::time::timeout(timeout, dial).await.map_err(|_| {
        Error::Peer(format!(
            "connecting to `{peer_node_name}` at {addr} timed out after {timeout:?}: check the address and that the peer is running"
        ))
    })?
}

/// Completes the server side of the handshake within `timeout`. The client
/// certificate is verified against the CA; who the client is gets checked
/// with [`verify_peer_node`] once it names itself.
pub async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> Result<server::TlsStream<TcpStream>> {
    let from = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown address".into());
    let _ = tcp.set_nodelay(true);
    let handshake = TlsAcceptor::from(config).accept(tcp);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r.map_err(|e| io_error(e, &format!("TLS handshake with {from}"))),
        Err(_) => Err(Error::Peer(format!(
            "TLS handshake with {from} timed out after {timeout:?}: the client is too slow or not speaking TLS"
        ))),
    }
}

/// The verified end-entity certificate the peer presented, if any.
pub fn peer_certificate(conn: &rustls::CommonState) -> Option<&CertificateDer<'static>> {
    conn.peer_certificates().and_then(|c| c.first())
}

/// Whether `der` is valid for DNS name `node_name` under the standard
/// webpki rules (SubjectAltName only, no CN fallback, wildcards allowed).
pub fn cert_names_node(der: &CertificateDer<'_>, node_name: &str) -> bool {
    let Ok(name) = ServerName::try_from(node_name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(der)
        .map(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
        .unwrap_or(false)
}

/// Confirms that the peer on `conn` (e.g. `stream.get_ref().1`) holds a
/// certificate naming `node_name`, the name it claimed in its `Hello`.
pub fn verify_peer_node(conn: &rustls::CommonState, node_name: &str) -> Result<()> {
    let cert = peer_certificate(conn).ok_or_else(|| {
        Error::Tls(format!(
            "peer claiming to be `{node_name}` presented no certificate: mutual TLS requires one"
        ))
    })?;
    if cert_names_node(cert, node_name) {
        Ok(())
    } else {
        Err(Error::Tls(format!(
            "peer claims to be `{node_name}` but its certificate does not name `{node_name}` (SubjectAltName DNS): \
             it is another node, or its certificate was issued for a different name"
        )))
    }
}

/// Turns an I/O error from a TLS stream into a typed error that says what
/// went wrong in TLS terms; non-TLS failures become `Error::Peer`.
pub fn io_error(e: std::io::Error, context: &str) -> Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => Error::Tls(format!("{context}: {}", explain(tls))),
        None => Error::Peer(format!("{context}: {e}")),
    }
}

fn explain(e: &rustls::Error) -> String {
    use rustls::Error as E;
    use CertificateError as C;
    match e {
        E::NoCertificatesPresented => {
            "the peer presented no client certificate; mutual TLS requires every node to present \
             one: configure its certificate and key"
                .into()
        }
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the peer's certificate was not issued by a CA in our CA bundle: issue it from the \
             cluster CA or add its CA to the bundle"
                .into()
        }
        E::InvalidCertificate(C::NotValidForNameContext { expected, presented }) => format!(
            "the peer's certificate does not name the node we dialed: expected {expected:?}, it \
             names {presented:?}; check the peer's node name and address"
        ),
        E::InvalidCertificate(C::NotValidForName) => {
            "the peer's certificate does not name the node we dialed: check the peer's node name \
             and address"
                .into()
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!("the peer's certificate is outside its validity period ({e}): renew it or fix the clock"),
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => format!(
            "the peer's certificate is not allowed for this use ({e}): node certificates need \
             extended key usages serverAuth and clientAuth"
        ),
        E::InvalidCertificate(other) => format!("the peer's certificate was rejected: {other:?}"),
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the peer requires a client certificate and we sent none: configure this node's \
             certificate and key"
                .into()
        }
        E::AlertReceived(
            a @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => format!(
            "the peer rejected our certificate ({a:?}): it must be issued by a CA the peer \
             trusts, be valid now, and name this node"
        ),
        E::NoApplicationProtocol | E::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            "the peer does not speak the tidelog protocol (no common ALPN `tidelog/1`)".into()
        }
        E::AlertReceived(AlertDescription::ProtocolVersion) | E::PeerIncompatible(_) => {
            format!("the peer cannot speak TLS 1.3 as tidelog requires ({e})")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(p, key),
        }
    }

    /// A node identity: certificate naming `node`, issued by `by`, trusting
    /// `trust`.
    fn node(by: &Ca, node: &str, trust: &Ca) -> TlsIdentity {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![node.to_string()]).unwrap();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &by.issuer).unwrap();
        TlsIdentity::from_pem(cert.pem(), key.serialize_pem(), trust.pem.clone())
    }

    /// Accepts one connection with `server`, dials it with `client` expecting
    /// node `dial_as`; returns both ends' results.
    async fn link(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        dial_as: &str,
    ) -> (
        Result<server::TlsStream<TcpStream>>,
        Result<client::TlsStream<TcpStream>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, server, T).await
        });
        let cli = connect(&addr, dial_as, client, T).await;
        (srv.await.unwrap(), cli)
    }

    fn tls_msg<S>(r: Result<S>) -> String {
        match r {
            Err(Error::Tls(m)) => m,
            Err(e) => panic!("expected a TLS error, got {e:?}"),
            Ok(_) => panic!("expected a TLS error, got success"),
        }
    }

    #[tokio::test]
    async fn mutual_handshake_and_server_learns_client_node() {
        let ca = ca("cluster CA");
        let cloud = node(&ca, "cloud", &ca);
        let edge = node(&ca, "edge-1", &ca);
        let (srv, cli) = link(
            cloud.server_config().unwrap(),
            edge.client_config().unwrap(),
            "cloud",
        )
        .await;
        let (mut srv, mut cli) = (srv.unwrap(), cli.unwrap());
        let conn = srv.get_ref().1;
        assert_eq!(conn.alpn_protocol(), Some(ALPN));
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        verify_peer_node(conn, "edge-1").unwrap();
        let e = verify_peer_node(conn, "edge-2").unwrap_err();
        assert!(e.to_string().contains("does not name `edge-2`"), "{e}");
        assert!(cert_names_node(peer_certificate(conn).unwrap(), "edge-1"));
        assert!(!cert_names_node(
            peer_certificate(conn).unwrap(),
            "not a name!"
        ));

        cli.write_all(b"ping").await.unwrap();
        cli.flush().await.unwrap();
        let mut buf = [0; 4];
        srv.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let ca = ca("cluster CA");
        let cloud = node(&ca, "cloud", &ca);
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut anon =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        anon.alpn_protocols = vec![ALPN.to_vec()];
        let (srv, cli) = link(cloud.server_config().unwrap(), Arc::new(anon), "cloud").await;
        let m = tls_msg(srv);
        assert!(m.contains("presented no client certificate"), "{m}");
        // TLS 1.3: the dialer only hears of it when it reads.
        let mut cli = cli.unwrap();
        let e = cli.read_u8().await.unwrap_err();
        let m = tls_msg::<()>(Err(io_error(e, "reading")));
        assert!(m.contains("requires a client certificate"), "{m}");
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_refused() {
        let (ca, rogue) = (ca("cluster CA"), ca("rogue CA"));
        let cloud = node(&ca, "cloud", &ca);
        let intruder = node(&rogue, "edge-1", &ca);
        let (srv, cli) = link(
            cloud.server_config().unwrap(),
            intruder.client_config().unwrap(),
            "cloud",
        )
        .await;
        let m = tls_msg(srv);
        assert!(m.contains("not issued by a CA in our CA bundle"), "{m}");
        let e = cli.unwrap().read_u8().await.unwrap_err();
        let m = tls_msg::<()>(Err(io_error(e, "reading")));
        assert!(m.contains("rejected our certificate"), "{m}");
    }

    #[tokio::test]
    async fn server_naming_another_node_is_refused() {
        let ca = ca("cluster CA");
        let imposter = node(&ca, "imposter", &ca);
        let edge = node(&ca, "edge-1", &ca);
        let (srv, cli) = link(
            imposter.server_config().unwrap(),
            edge.client_config().unwrap(),
            "cloud",
        )
        .await;
        let m = tls_msg(cli);
        assert!(m.contains("does not name the node we dialed"), "{m}");
        assert!(m.contains("imposter") && m.contains("cloud"), "{m}");
        let m = tls_msg(srv);
        assert!(m.contains("rejected our certificate"), "{m}");
    }

    #[tokio::test]
    async fn unreachable_peer_and_bad_name_are_typed() {
        let ca = ca("cluster CA");
        let cfg = node(&ca, "edge-1", &ca).client_config().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = connect(&format!("127.0.0.1:{port}"), "cloud", cfg.clone(), T)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Peer(m) if m.contains("cannot connect to `cloud`")),
            "{e}"
        );
        let e = connect("127.0.0.1:1", "bad name!", cfg, T)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);
    }

    #[test]
    fn configuration_errors_say_what_is_wrong() {
        let ca = ca("cluster CA");
        let good = node(&ca, "n1", &ca);
        let (PemSource::Pem(cert), PemSource::Pem(key)) = (&good.cert_chain, &good.key) else {
            unreachable!()
        };
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let id = TlsIdentity::from_files(&missing, &missing, &missing);
        let m = tls_msg(id.server_config());
        assert!(
            m.contains("does not exist") && m.contains("nope.pem"),
            "{m}"
        );

        let id = TlsIdentity::from_pem(key.clone(), key.clone(), ca.pem.clone());
        let m = tls_msg(id.client_config());
        assert!(m.contains("holds no certificate"), "{m}");

        let id = TlsIdentity::from_pem(cert.clone(), cert.clone(), ca.pem.clone());
        let m = tls_msg(id.server_config());
        assert!(m.contains("holds no private key"), "{m}");

        let id = TlsIdentity::from_pem(
            cert.clone(),
            &b"-----BEGIN PRIVATE KEY-----\n!!"[..],
            ca.pem.clone(),
        );
        let m = tls_msg(id.server_config());
        assert!(m.contains("not valid PEM"), "{m}");

        let id = TlsIdentity::from_pem(cert.clone(), key.clone(), Vec::new());
        let m = tls_msg(id.client_config());
        assert!(m.contains("CA bundle holds no certificate"), "{m}");

        let other = node(&ca, "n2", &ca);
        let PemSource::Pem(other_key) = &other.key else {
            unreachable!()
        };
        let id = TlsIdentity::from_pem(cert.clone(), other_key.clone(), ca.pem.clone());
        let m = tls_msg(id.server_config());
        assert!(m.contains("do not form a usable pair"), "{m}");
        // Keys never leak through Debug.
        assert!(!format!("{good:?}").contains("PRIVATE"));
    }
}
