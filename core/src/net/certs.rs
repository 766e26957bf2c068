//! Development certificates: a private CA and node certificates whose DNS
//! SubjectAltName is the node name, usable as both TLS server and client.
//! Meant for trying tidelog out and for tests; production clusters should
//! issue certificates from their own PKI.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::error::{Error, Result};

const DAY: Duration = Duration::from_secs(86_400);
/// Long enough that a dev CA never surprises anyone.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Matches the common 825-day ceiling for leaf certificates.
const NODE_VALIDITY: Duration = Duration::from_secs(825 * 86_400);

/// Files written for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
}

/// Paths of the CA files in `out_dir`.
pub fn ca_paths(out_dir: &Path) -> (PathBuf, PathBuf) {
    (out_dir.join("ca.pem"), out_dir.join("ca.key"))
}

/// Paths of a node's files in `out_dir`.
pub fn node_paths(out_dir: &Path, node_name: &str) -> NodeFiles {
    NodeFiles {
        cert_chain: out_dir.join(format!("{node_name}.pem")),
        key: out_dir.join(format!("{node_name}.key")),
    }
}

/// Creates a CA (`ca.pem`, `ca.key`) and one certificate and key per node in
/// `out_dir`. Refuses to overwrite anything, so an existing CA (and the nodes
/// it signed) is never orphaned by accident; use [`add_node`] to extend one.
pub fn generate_dev_pki(
    out_dir: &Path,
    ca_name: &str,
    node_names: &[String],
) -> Result<Vec<NodeFiles>> {
    if ca_name.trim().is_empty() {
        return Err(Error::invalid("CA name", "must not be empty"));
    }
    let mut seen = std::collections::HashSet::new();
    for n in node_names {
        check_node_name(n)?;
        if !seen.insert(n.as_str()) {
            return Err(Error::invalid(
                "node name",
                format!("`{n}` is listed twice"),
            ));
        }
    }
    let (ca_pem, ca_key) = ca_paths(out_dir);
    let mut outputs = vec![ca_pem.clone(), ca_key.clone()];
    for n in node_names {
        let f = node_paths(out_dir, n);
        outputs.extend([f.cert_chain, f.key]);
    }
    // Check everything first so a refusal leaves no half-written PKI.
    for p in &outputs {
        if p.exists() {
            return Err(Error::invalid(
                "output directory",
                format!(
                    "{} already exists: use add_node to sign more nodes with an existing CA, or pick an empty directory",
                    p.display()
                ),
            ));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let key = KeyPair::generate().map_err(rc("generate CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA parameters"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(rc("self-sign CA"))?;
    write_new(&ca_pem, cert.pem().as_bytes(), false)?;
    write_new(&ca_key, key.serialize_pem().as_bytes(), true)?;

    let issuer = Issuer::new(params, key);
    node_names
        .iter()
        .map(|n| issue(out_dir, &issuer, cert.der(), n))
        .collect()
}

/// Signs a certificate for `node_name` with the CA in `out_dir` (`ca.pem`,
/// `ca.key`), writing `<node>.pem` and `<node>.key`.
pub fn add_node(out_dir: &Path, node_name: &str) -> Result<NodeFiles> {
    check_node_name(node_name)?;
    let (ca_pem, ca_key) = ca_paths(out_dir);
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            Error::Tls(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "{} does not exist: create the CA first with generate_dev_pki",
                    p.display()
                ),
                _ => format!("cannot read {}: {e}", p.display()),
            })
        })
    };
    let cert_pem = read(&ca_pem)?;
    let key = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| {
        Error::Tls(format!(
            "{} is not a usable private key ({e})",
            ca_key.display()
        ))
    })?;
    let ca_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
        Error::Tls(format!(
            "{} holds no readable certificate ({e})",
            ca_pem.display()
        ))
    })?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| {
        Error::Tls(format!(
            "{} is not a usable CA certificate ({e})",
            ca_pem.display()
        ))
    })?;
    let f = node_paths(out_dir, node_name);
    for p in [&f.cert_chain, &f.key] {
        if p.exists() {
            return Err(Error::invalid(
                "node name",
                format!(
                    "{} already exists: node `{node_name}` already has a certificate; delete its files to reissue",
                    p.display()
                ),
            ));
        }
    }
    issue(out_dir, &issuer, &ca_der, node_name)
}

/// Node names become file names and DNS SANs, so both rules apply.
fn check_node_name(name: &str) -> Result<()> {
    let dns_ok = matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_)));
    if !dns_ok || name.starts_with('.') {
        return Err(Error::invalid(
            "node name",
            format!("`{name}` is not a DNS name (letters, digits, `-` and `.`): the node name goes into the certificate"),
        ));
    }
    if name == "ca" {
        return Err(Error::invalid(
            "node name",
            "`ca` would clash with the CA's files; pick another name",
        ));
    }
    Ok(())
}

fn issue(
    out_dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    ca_der: &CertificateDer<'_>,
    node_name: &str,
) -> Result<NodeFiles> {
    let key = KeyPair::generate().map_err(rc("generate node key"))?;
    let mut params =
        CertificateParams::new(vec![node_name.to_string()]).map_err(rc("node parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, node_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALIDITY);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(rc("sign node certificate"))?;
    verify_issued(ca_der, cert.der(), node_name)?;
    let f = node_paths(out_dir, node_name);
    // Only the leaf: every peer already trusts the CA through its bundle.
    write_new(&f.cert_chain, cert.pem().as_bytes(), false)?;
    write_new(&f.key, key.serialize_pem().as_bytes(), true)?;
    Ok(f)
}

/// Checks the new certificate chains to the CA certificate on disk, which
/// catches a `ca.key` that does not belong to `ca.pem` before any peer does.
fn verify_issued(ca: &CertificateDer<'_>, leaf: &CertificateDer<'_>, node: &str) -> Result<()> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned()).map_err(|e| {
        Error::Tls(format!(
            "CA certificate is not usable as a trust anchor: {e}"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Tls(format!("cannot build verifier: {e}")))?;
    verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .map_err(|e| {
            Error::Tls(format!(
                "the certificate issued for `{node}` does not verify against ca.pem ({e}): ca.key probably does not belong to ca.pem"
            ))
        })?;
    Ok(())
}

/// Backdated a day so a peer with a slightly slow clock accepts it at once.
fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - DAY;
    params.not_after = now + validity;
}

fn rc(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |e| Error::Tls(format!("certificate generation failed ({what}): {e}"))
}

/// Writes a file that must not exist yet; keys get mode 0600 from creation,
/// so they are never readable by others even briefly.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::{accept, connect, verify_peer_node, TlsIdentity};

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn identity(dir: &Path, node: &str) -> TlsIdentity {
        let f = node_paths(dir, node);
        TlsIdentity::from_files(f.cert_chain, f.key, ca_paths(dir).0)
    }

    /// Full mutual handshake on 127.0.0.1 between two nodes' files.
    async fn handshake(dir: &Path, server: &str, client: &str) {
        let t = Duration::from_secs(5);
        let scfg = identity(dir, server).server_config().unwrap();
        let ccfg = identity(dir, client).client_config().unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let srv = tokio::spawn(async move { accept(l.accept().await.unwrap().0, scfg, t).await });
        let cli = connect(&addr, server, ccfg, t).await.unwrap();
        let srv = srv.await.unwrap().unwrap();
        verify_peer_node(srv.get_ref().1, client).unwrap();
        drop(cli);
    }

    #[tokio::test]
    async fn generated_pki_loads_and_handshakes_and_grows() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("pki");
        let files = generate_dev_pki(&d, "tidelog dev CA", &names(&["cloud", "edge-1"])).unwrap();
        assert_eq!(files[1], node_paths(&d, "edge-1"));
        handshake(&d, "cloud", "edge-1").await;

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [d.join("ca.key"), d.join("cloud.key"), d.join("edge-1.key")] {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
            }
        }

        // A node added later with the stored CA talks to the original ones.
        add_node(&d, "edge-2").unwrap();
        handshake(&d, "cloud", "edge-2").await;
        handshake(&d, "edge-2", "edge-1").await;

        let e = add_node(&d, "edge-2").unwrap_err();
        assert!(e.to_string().contains("already has a certificate"), "{e}");
        let e = generate_dev_pki(&d, "again", &names(&["x"])).unwrap_err();
        assert!(e.to_string().contains("use add_node"), "{e}");
    }

    #[test]
    fn bad_inputs_are_refused_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for bad in ["", "has space", "../up", "ca", "a/b"] {
            assert!(
                generate_dev_pki(d, "CA", &names(&[bad])).is_err(),
                "{bad:?}"
            );
        }
        let e = generate_dev_pki(d, "CA", &names(&["n", "n"])).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        assert!(!d.join("ca.pem").exists(), "refusal writes nothing");

        let e = add_node(d, "n1").unwrap_err();
        assert!(e.to_string().contains("create the CA first"), "{e}");

        // A CA key that does not belong to ca.pem is caught at signing time.
        let a = d.join("a");
        let b = d.join("b");
        generate_dev_pki(&a, "A", &[]).unwrap();
        generate_dev_pki(&b, "B", &[]).unwrap();
        std::fs::remove_file(a.join("ca.key")).unwrap();
        std::fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
        let e = add_node(&a, "n1").unwrap_err();
        assert!(e.to_string().contains("does not belong to ca.pem"), "{e}");
    }
}
