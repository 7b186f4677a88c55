//! Test-time PKI: one CA that signs the TLS listener's server certificate and any number of client
//! certificates. URI SANs are taken as given (only IA5/ASCII is required by X.509), so tests can
//! present invalid SPIFFE IDs such as `spiffe://Bad.Domain/x` or `https://x` to a filter.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::workdir::WorkDir;

/// A CA, a server certificate (SAN DNS `localhost` + IP `127.0.0.1`) and the PEM files Envoy reads.
pub struct Certs {
    dir: WorkDir,
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    ca_pem: PathBuf,
    server_cert_pem: PathBuf,
    server_key_pem: PathBuf,
    next_client: AtomicUsize,
}

/// A client certificate and its key, as files (for other tools) and DER (for the rig's client).
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_der: Vec<u8>,
}

impl Certs {
    /// Generates the CA and the server certificate into a fresh directory under `<repo>/.work/`.
    pub fn generate() -> Result<Self> {
        let dir = WorkDir::new("certs-")?;

        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "meshward test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let ca_pem = dir.write("ca.pem", ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().context("generating the server key")?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .context("signing the server certificate")?;
        let server_cert_pem = dir.write("server.pem", server_cert.pem())?;
        let server_key_pem = dir.write("server.key", server_key.serialize_pem())?;

        Ok(Self {
            dir,
            issuer,
            ca_der: ca_cert.der().to_vec(),
            ca_pem,
            server_cert_pem,
            server_key_pem,
            next_client: AtomicUsize::new(0),
        })
    }

    /// Issues a client certificate with these URI SANs (in this order; Envoy exposes only the
    /// first as `connection.uri_san_peer_certificate`) and subject `CN=<subject_cn>`.
    pub fn client_cert(&self, uri_sans: &[&str], subject_cn: &str) -> Result<ClientCert> {
        let key = KeyPair::generate().context("generating a client key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, subject_cn);
        params.subject_alt_names = uri_sans
            .iter()
            .map(|san| {
                Ia5String::try_from(*san)
                    .map(SanType::URI)
                    .with_context(|| format!("URI SAN {san:?} is not IA5 (ASCII)"))
            })
            .collect::<Result<_>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing a client certificate")?;
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        Ok(ClientCert {
            cert_pem: self.dir.write(&format!("client-{n}.pem"), cert.pem())?,
            key_pem: self
                .dir
                .write(&format!("client-{n}.key"), key.serialize_pem())?,
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// The CA certificate (PEM file): the TLS listener's trusted CA for client certificates.
    pub fn ca_pem(&self) -> &PathBuf {
        &self.ca_pem
    }

    /// The CA certificate, DER: the client's only trust anchor.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The server certificate chain (PEM file).
    pub fn server_cert_pem(&self) -> &PathBuf {
        &self.server_cert_pem
    }

    /// The server private key (PEM file).
    pub fn server_key_pem(&self) -> &PathBuf {
        &self.server_key_pem
    }
}
