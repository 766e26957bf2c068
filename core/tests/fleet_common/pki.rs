//! The fleet's certificates, made at run time: one CA, the hub's and the
//! operator's certificates as files (the `tidelog serve` config and
//! `ReplicationOptions::mutual_tls` take paths), and one certificate per
//! edge kept in memory (10,000 pairs of files would only cost disk time).
//! ECDSA P-256 throughout (rcgen's default): a key and a signature cost
//! tens of microseconds, so 10,000 edges take about a second.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tidelog::net::tls::TlsIdentity;

/// A certificate and its key, PEM.
pub struct NodePem {
    pub cert: String,
    pub key: String,
}

/// Paths of a node's files written by [`FleetPki::write_node`].
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct FleetPki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl FleetPki {
    /// A new CA, with the same extensions as `tidelog certs` makes.
    pub fn new(name: &str) -> FleetPki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        FleetPki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate naming `node` (DNS SubjectAltName, as the library's
    /// identity check requires), usable as TLS client and server.
    pub fn node(&self, node: &str) -> NodePem {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(vec![node.to_string()]).expect("node params");
        params.distinguished_name.push(DnType::CommonName, node);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("sign node");
        NodePem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// The CA certificate as `dir/ca.pem`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let p = dir.join("ca.pem");
        std::fs::write(&p, &self.ca_pem).expect("write ca.pem");
        p
    }

    /// A node's certificate and key as `dir/NODE.pem` and `dir/NODE.key`.
    pub fn write_node(&self, dir: &Path, node: &str) -> NodeFiles {
        let pem = self.node(node);
        let files = NodeFiles {
            cert: dir.join(format!("{node}.pem")),
            key: dir.join(format!("{node}.key")),
        };
        std::fs::write(&files.cert, pem.cert).expect("write cert");
        std::fs::write(&files.key, pem.key).expect("write key");
        files
    }

    /// An edge's TLS client config, built by the library's own
    /// `TlsIdentity` (TLS 1.3, ring, ALPN `tidelog/1`), as a `Database`
    /// dialing the hub would build it.
    pub fn edge_client(&self, node: &str) -> Arc<rustls::ClientConfig> {
        let pem = self.node(node);
        TlsIdentity::from_pem(pem.cert, pem.key, self.ca_pem.clone())
            .client_config()
            .expect("edge client config")
    }
}
