//! Signing as publishers do it, with the real OpenSSF Model Signing CLI (PyPI `model-signing` 1.1.1, installed by
//! scripts/test.sh into target/tools/model-signing; `$MODEL_SIGNING_BIN` names another `model_signing`): key pairs,
//! a private CA with leaf certificates (made with the `cryptography` package of the same virtualenv), bundles, and
//! trust policy files.
//!
//! Everything here is synchronous and quick (a `model_signing` run is about 0.7 s); a test first asks
//! [`available`] and says SKIPPED when the CLI is missing:
//!
//! ```text
//! let Ok(tool) = testkit::signing::available() else { return report_skip(..) };
//! let key = Key::p256(dir);
//! let bundle = sign_with_key(&file, &key);
//! let policy = Policy::new().rule(&["model"], "fall-*").key(&key).write(dir);
//! ```
//!
//! Independent of the server crate on purpose: the fingerprints the tests expect come from Python, not from the
//! code under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `model_signing` executable and the Python of its virtualenv.
#[derive(Debug, Clone)]
pub struct Tool {
    pub model_signing: PathBuf,
    pub python: PathBuf,
}

/// The CLI, or why a test cannot run (for `report_skip`).
pub fn available() -> Result<&'static Tool, String> {
    static TOOL: OnceLock<Result<Tool, String>> = OnceLock::new();
    TOOL.get_or_init(|| {
        let model_signing = std::env::var_os("MODEL_SIGNING_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/tools/model-signing/bin/model_signing")
            });
        let python = model_signing.with_file_name("python");
        if model_signing.exists() && python.exists() {
            Ok(Tool {
                model_signing,
                python,
            })
        } else {
            Err(format!(
                "no model_signing at {} (scripts/test.sh installs PyPI model-signing==1.1.1 there)",
                model_signing.display()
            ))
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn tool() -> &'static Tool {
    available().unwrap_or_else(|reason| panic!("{reason}"))
}

/// Runs a command to success, returning its stdout; a failure panics with its stderr.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A fresh name in `dir`, so that several keys and certificates share one directory.
fn unique(dir: &Path, stem: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{stem}-{}-{n}.{extension}", std::process::id()))
}

const PKI_SCRIPT: &str = r#"
import datetime, hashlib, sys
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization as s
from cryptography.hazmat.primitives.asymmetric import ec

def new_key(curve, key_path):
    key = ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[curve])
    open(key_path, "wb").write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    return key

def fingerprint(public):
    der = public.public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()

def load(key_path, cert_path):
    key = s.load_pem_private_key(open(key_path, "rb").read(), None)
    return key, x509.load_pem_x509_certificate(open(cert_path, "rb").read())

now = datetime.datetime.now(datetime.timezone.utc)
day = datetime.timedelta(days=1)
mode = sys.argv[1]
if mode == "key":
    _, curve, key_path, pub_path = sys.argv[1:]
    public = new_key(curve, key_path).public_key()
    open(pub_path, "wb").write(public.public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    print(fingerprint(public))
elif mode == "ca":
    # ca NAME KEY CERT [ISSUER_KEY ISSUER_CERT]: a root, or an intermediate signed by the issuer.
    name, key_path, cert_path = sys.argv[2:5]
    key = new_key("p256", key_path)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if len(sys.argv) > 5:
        issuer_key, issuer_cert = load(sys.argv[5], sys.argv[6])
        issuer_name = issuer_cert.subject
    else:
        issuer_key, issuer_name = key, subject
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - 365 * day).not_valid_after(now + 3650 * day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(issuer_key, hashes.SHA256()))
    open(cert_path, "wb").write(cert.public_bytes(s.Encoding.PEM))
elif mode == "leaf":
    # leaf IDENTITY KEY CERT ISSUER_KEY ISSUER_CERT USAGE(sign|none) VALIDITY(current|expired)
    identity, key_path, cert_path, issuer_key_path, issuer_cert_path, usage, validity = sys.argv[2:9]
    key = new_key("p256", key_path)
    issuer_key, issuer_cert = load(issuer_key_path, issuer_cert_path)
    san = x509.RFC822Name(identity) if "@" in identity else x509.UniformResourceIdentifier(identity)
    begin, end = (now - 30 * day, now - day) if validity == "expired" else (now - day, now + 30 * day)
    builder = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(issuer_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(begin).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False))
    if usage == "sign":
        builder = (builder
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False))
    else:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
            key_encipherment=True, data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
    cert = builder.sign(issuer_key, hashes.SHA256())
    open(cert_path, "wb").write(cert.public_bytes(s.Encoding.PEM))
    print(fingerprint(key.public_key()))
"#;

fn pki(args: &[&str]) -> String {
    let mut command = Command::new(&tool().python);
    command.arg("-c").arg(PKI_SCRIPT).args(args);
    run(&mut command).trim().to_string()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// An EC key pair (PEM: PKCS#8 private key, SubjectPublicKeyInfo public key).
#[derive(Debug, Clone)]
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
    /// `sha256:<hex>` of the public key's SubjectPublicKeyInfo DER, as computed by Python's `cryptography`.
    pub fingerprint: String,
}

impl Key {
    pub fn p256(dir: &Path) -> Key {
        Self::new(dir, "p256")
    }

    pub fn p384(dir: &Path) -> Key {
        Self::new(dir, "p384")
    }

    fn new(dir: &Path, curve: &str) -> Key {
        let private = unique(dir, &format!("{curve}-key"), "pem");
        let public = unique(dir, &format!("{curve}-pub"), "pem");
        let fingerprint = pki(&["key", curve, path_str(&private), path_str(&public)]);
        Key {
            private,
            public,
            fingerprint,
        }
    }
}

/// A private certificate authority (P-256): a root, or an intermediate under another CA.
#[derive(Debug, Clone)]
pub struct Ca {
    pub name: String,
    pub key: PathBuf,
    pub cert: PathBuf,
    /// This CA's certificate and those above it up to the root, nearest first: what a leaf's bundle carries
    /// besides the leaf (`model_signing sign certificate` needs at least one `--certificate_chain`).
    pub chain: Vec<PathBuf>,
    dir: PathBuf,
}

/// A signing certificate and its key, with the chain `model_signing sign certificate` puts in the bundle.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub identity: String,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub chain: Vec<PathBuf>,
    /// Fingerprint of the leaf's public key.
    pub fingerprint: String,
}

/// How [`Ca::leaf_with`] departs from a normal signing certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeafOptions {
    /// Key usage keyEncipherment only, no extended key usage: a certificate that may not sign.
    pub no_signing_usage: bool,
    /// Valid from 30 days ago until yesterday.
    pub expired: bool,
}

impl Ca {
    /// A root CA with a fresh name.
    pub fn new(dir: &Path) -> Ca {
        let cert = unique(dir, "ca", "pem");
        let name = format!("Test CA {}", cert.file_stem().unwrap().to_string_lossy());
        Self::named(dir, &name)
    }

    /// A root CA called `name` (two CAs of one name differ only in their keys).
    pub fn named(dir: &Path, name: &str) -> Ca {
        let key = unique(dir, "ca-key", "pem");
        let cert = unique(dir, "ca", "pem");
        pki(&["ca", name, path_str(&key), path_str(&cert)]);
        Ca {
            name: name.to_string(),
            key,
            chain: vec![cert.clone()],
            cert,
            dir: dir.to_path_buf(),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = unique(&self.dir, "intermediate-key", "pem");
        let cert = unique(&self.dir, "intermediate", "pem");
        pki(&[
            "ca",
            name,
            path_str(&key),
            path_str(&cert),
            path_str(&self.key),
            path_str(&self.cert),
        ]);
        let mut chain = vec![cert.clone()];
        chain.extend(self.chain.iter().cloned());
        Ca {
            name: name.to_string(),
            key,
            cert,
            chain,
            dir: self.dir.clone(),
        }
    }

    /// A code-signing leaf certifying `identity` (an rfc822Name when it has an `@`, else a URI).
    pub fn leaf(&self, identity: &str) -> Leaf {
        self.leaf_with(identity, LeafOptions::default())
    }

    pub fn leaf_with(&self, identity: &str, options: LeafOptions) -> Leaf {
        let key = unique(&self.dir, "leaf-key", "pem");
        let cert = unique(&self.dir, "leaf", "pem");
        let fingerprint = pki(&[
            "leaf",
            identity,
            path_str(&key),
            path_str(&cert),
            path_str(&self.key),
            path_str(&self.cert),
            if options.no_signing_usage {
                "none"
            } else {
                "sign"
            },
            if options.expired {
                "expired"
            } else {
                "current"
            },
        ]);
        Leaf {
            identity: identity.to_string(),
            key,
            cert,
            chain: self.chain.clone(),
            fingerprint,
        }
    }
}

/// `model_signing sign key FILE`: the bundle JSON it writes.
pub fn sign_with_key(file: &Path, key: &Key) -> String {
    let signature = unique(file.parent().unwrap_or(Path::new(".")), "bundle", "sig");
    let mut command = Command::new(&tool().model_signing);
    command
        .args(["sign", "key"])
        .arg(file)
        .arg("--private_key")
        .arg(&key.private)
        .arg("--signature")
        .arg(&signature);
    run(&mut command);
    read_and_remove(&signature)
}

/// `model_signing sign certificate FILE`: the bundle JSON it writes (leaf, then the leaf's chain).
pub fn sign_with_certificate(file: &Path, leaf: &Leaf) -> String {
    let signature = unique(file.parent().unwrap_or(Path::new(".")), "bundle", "sig");
    let mut command = Command::new(&tool().model_signing);
    command
        .args(["sign", "certificate"])
        .arg(file)
        .arg("--private_key")
        .arg(&leaf.key)
        .arg("--signing_certificate")
        .arg(&leaf.cert)
        .arg("--signature")
        .arg(&signature);
    for certificate in &leaf.chain {
        command.arg("--certificate_chain").arg(certificate);
    }
    run(&mut command);
    read_and_remove(&signature)
}

/// `model_signing verify key FILE`: whether the CLI accepts `bundle` for `file` under `key`, and its output.
pub fn verify_with_key(file: &Path, bundle: &str, key: &Key) -> (bool, String) {
    cli_verify(file, bundle, &["key", "--public_key"], &key.public)
}

/// `model_signing verify certificate FILE --certificate_chain CA`: whether the CLI accepts `bundle` for `file`
/// with `ca` as its root of trust, and its output. (It checks no identity: that is the trust policy's part.)
pub fn verify_with_certificate(file: &Path, bundle: &str, ca: &Ca) -> (bool, String) {
    cli_verify(
        file,
        bundle,
        &["certificate", "--certificate_chain"],
        &ca.cert,
    )
}

fn cli_verify(file: &Path, bundle: &str, method: &[&str; 2], trusted: &Path) -> (bool, String) {
    let signature = unique(file.parent().unwrap_or(Path::new(".")), "bundle", "sig");
    std::fs::write(&signature, bundle).expect("write the bundle");
    let output = Command::new(&tool().model_signing)
        .args(["verify", method[0]])
        .arg(file)
        .arg("--signature")
        .arg(&signature)
        .arg(method[1])
        .arg(trusted)
        .output()
        .expect("run model_signing verify");
    let _ = std::fs::remove_file(&signature);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn read_and_remove(path: &Path) -> String {
    let bundle = std::fs::read_to_string(path).expect("model_signing wrote the bundle");
    let _ = std::fs::remove_file(path);
    bundle
}

/// A trust policy file, built rule by rule; keys and certificates attach to the last rule.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone)]
struct RuleSpec {
    kinds: Vec<String>,
    glob: String,
    keys: Vec<PathBuf>,
    certificates: Vec<(PathBuf, String)>,
}

impl Policy {
    pub fn new() -> Policy {
        Policy::default()
    }

    /// A rule for `kinds` (empty: every kind, the field left out) whose `match` is `glob`.
    pub fn rule(mut self, kinds: &[&str], glob: &str) -> Policy {
        self.rules.push(RuleSpec {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            glob: glob.to_string(),
            keys: Vec::new(),
            certificates: Vec::new(),
        });
        self
    }

    pub fn key(mut self, key: &Key) -> Policy {
        self.last().keys.push(key.public.clone());
        self
    }

    pub fn certificate(mut self, ca: &Ca, identity: &str) -> Policy {
        self.last()
            .certificates
            .push((ca.cert.clone(), identity.to_string()));
        self
    }

    fn last(&mut self) -> &mut RuleSpec {
        self.rules
            .last_mut()
            .expect("Policy::rule comes before key and certificate")
    }

    /// The policy's TOML; the files it names are relative to `dir` (copied there by [`Policy::write`]).
    pub fn toml(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).expect("a string"); // JSON strings are TOML basic strings
        let name = |p: &PathBuf| quote(&p.file_name().unwrap().to_string_lossy());
        let mut text = String::new();
        for rule in &self.rules {
            text.push_str("[[rule]]\n");
            if !rule.kinds.is_empty() {
                let kinds: Vec<String> = rule.kinds.iter().map(|k| quote(k)).collect();
                text.push_str(&format!("kinds = [{}]\n", kinds.join(", ")));
            }
            text.push_str(&format!("match = {}\n", quote(&rule.glob)));
            if !rule.keys.is_empty() {
                let keys: Vec<String> = rule.keys.iter().map(name).collect();
                text.push_str(&format!("keys = [{}]\n", keys.join(", ")));
            }
            if !rule.certificates.is_empty() {
                let entries: Vec<String> = rule
                    .certificates
                    .iter()
                    .map(|(ca, identity)| {
                        format!("{{ ca = {}, identity = {} }}", name(ca), quote(identity))
                    })
                    .collect();
                text.push_str(&format!("certificates = [{}]\n", entries.join(", ")));
            }
            text.push('\n');
        }
        text
    }

    /// Writes `trust-policy-<n>.toml` into `dir`, copying the keys and CA certificates it names beside it;
    /// returns the policy file's path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        for rule in &self.rules {
            let files = rule
                .keys
                .iter()
                .chain(rule.certificates.iter().map(|(ca, _)| ca));
            for file in files {
                let target = dir.join(file.file_name().unwrap());
                if target != *file {
                    std::fs::copy(file, &target).expect("copy a policy file");
                }
            }
        }
        let path = unique(dir, "trust-policy", "toml");
        std::fs::write(&path, self.toml()).expect("write the policy");
        path
    }
}
