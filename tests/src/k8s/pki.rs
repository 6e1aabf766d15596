//! The cluster's certificates, as kubeadm would lay them out: one CA that signs the API server's
//! serving certificate and every client identity, and the service-account signing key.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA and the service-account key of a test cluster.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    /// The service-account signing key (ECDSA P-256, PKCS#8): the API server verifies and
    /// signs tokens with it, the controller manager signs legacy tokens with it.
    pub sa_key: PathBuf,
    /// Its public half, which the API server verifies tokens with.
    pub sa_pub: PathBuf,
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir).expect("pki dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "trustmap-test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_cert = dir.join("ca.crt");
        write(&ca_cert, &cert.pem());
        let sa = KeyPair::generate().expect("service-account key");
        let sa_key = dir.join("sa.key");
        write(&sa_key, &sa.serialize_pem());
        let sa_pub = dir.join("sa.pub");
        write(&sa_pub, &sa.public_key_pem());
        Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_cert,
            ca_pem: cert.pem(),
            sa_key,
            sa_pub,
        }
    }

    fn issue(&self, name: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }

    /// The API server's serving certificate: loopback, and the names and ClusterIP of the
    /// `kubernetes` Service.
    pub fn serving(&self, service_ip: Ipv4Addr) -> CertFiles {
        let names = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let mut params =
            CertificateParams::new(names.map(String::from).to_vec()).expect("serving params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(service_ip)] {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue("apiserver", params)
    }

    /// A client certificate: the user is the common name, the group the organization.
    pub fn client(&self, file: &str, user: &str, group: Option<&str>) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }
}
