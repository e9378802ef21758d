//! Signatures as the server uses them: the trust policy in force (re-read on SIGHUP), the mode, and the verdict on
//! each signature of a file, cached per policy. Verification reads only the bundle and the stored sha256: never
//! the file's bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::domain::signing::{Bundle, PolicyError, Signature, Subject, TrustPolicy, Verdict};
use crate::domain::{ComponentKey, Sha256, StoredFile};

/// What the server does with signatures (`--signatures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureMode {
    /// Signatures are kept and shown, never checked.
    #[default]
    Off,
    /// Checked and shown; unverified files are served and counted.
    Audit,
    /// Files without a verified signature are not served, and aliases do not move to such versions.
    Enforce,
}

impl SignatureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Off => "off",
            SignatureMode::Audit => "audit",
            SignatureMode::Enforce => "enforce",
        }
    }
}

/// One signature with the verdict of the policy in force.
#[derive(Debug, Clone)]
pub struct CheckedSignature {
    pub signature: Signature,
    pub verdict: Verdict,
}

/// Most verdicts kept; the cache starts over when full (a verdict costs one ECDSA check to make again).
const MAX_CACHED_VERDICTS: usize = 16 * 1024;

/// The signature, the component (kind and key parts: text such as `model a version b` could name two models) and
/// the bytes.
#[derive(Default)]
struct InForce {
    policy: Option<TrustPolicy>,
    verdicts: Mutex<HashMap<VerdictKey, Verdict>>,
}

type VerdictKey = (String, crate::domain::Kind, Vec<String>, String);

pub struct Signing {
    mode: SignatureMode,
    policy_path: Option<PathBuf>,
    /// The policy in force with the verdicts made under it: swapped whole on reload, so a verdict of the old
    /// policy can never land in the new one's cache.
    policy: ArcSwap<InForce>,
    unverified_downloads: AtomicU64,
    refused_downloads: AtomicU64,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("mode", &self.mode)
            .field("policy_path", &self.policy_path)
            .finish_non_exhaustive()
    }
}

impl Default for Signing {
    fn default() -> Self {
        Self {
            mode: SignatureMode::Off,
            policy_path: None,
            policy: ArcSwap::from_pointee(InForce::default()),
            unverified_downloads: AtomicU64::new(0),
            refused_downloads: AtomicU64::new(0),
        }
    }
}

/// Reads a policy file and the key and certificate files it names (relative to the policy file's directory).
pub fn load_policy(path: &Path) -> Result<TrustPolicy, PolicyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    TrustPolicy::from_toml(&text, &mut |name| {
        std::fs::read(base.join(name)).map_err(|e| format!("{}: {e}", base.join(name).display()))
    })
    .map_err(|e| PolicyError(format!("{}: {e}", path.display())))
}

impl Signing {
    /// The signing setup of a server: `policy_path` is read now (an unusable policy stops the start).
    pub fn new(mode: SignatureMode, policy_path: Option<PathBuf>) -> Result<Self, PolicyError> {
        let policy = policy_path.as_deref().map(load_policy).transpose()?;
        if mode != SignatureMode::Off && policy.is_none() {
            return Err(PolicyError(format!(
                "--signatures {} needs a --trust-policy file",
                mode.as_str()
            )));
        }
        Ok(Self {
            mode,
            policy_path,
            policy: ArcSwap::from_pointee(InForce {
                policy,
                verdicts: Mutex::default(),
            }),
            ..Self::default()
        })
    }

    pub fn mode(&self) -> SignatureMode {
        self.mode
    }

    /// Reads the policy file again (SIGHUP); a policy that does not load leaves the one in force.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.policy_path else {
            return Ok(());
        };
        let policy = load_policy(path)?;
        // Every stored signature is judged anew by the new policy: it starts with no verdicts.
        self.policy.store(Arc::new(InForce {
            policy: Some(policy),
            verdicts: Mutex::default(),
        }));
        Ok(())
    }

    /// The signatures of `file` of the component `key`, each with its verdict.
    pub fn check(&self, key: &ComponentKey, file: &StoredFile) -> Vec<CheckedSignature> {
        file.signatures
            .iter()
            .map(|signature| CheckedSignature {
                verdict: self.verdict(key, file, signature),
                signature: signature.clone(),
            })
            .collect()
    }

    /// Whether one signature of the file verifies under the policy in force.
    pub fn verified(&self, key: &ComponentKey, file: &StoredFile) -> bool {
        file.signatures
            .iter()
            .any(|signature| self.verdict(key, file, signature).verified)
    }

    /// Whether one signature of `file` verifies under the policy in force.
    pub fn verifies(&self, key: &ComponentKey, file: &StoredFile, signature: &Signature) -> bool {
        self.verdict(key, file, signature).verified
    }

    fn verdict(&self, key: &ComponentKey, file: &StoredFile, signature: &Signature) -> Verdict {
        let in_force = self.policy.load();
        let Some(policy) = in_force.policy.as_ref() else {
            return match Bundle::parse(&signature.bundle) {
                Ok(bundle) => Verdict::unverified(
                    None,
                    format!(
                        "this server has no trust policy (--trust-policy): signatures are kept, not checked{}",
                        claimed_signer(&bundle)
                            .map(|claim| format!(" (the bundle names {claim})"))
                            .unwrap_or_default()
                    ),
                ),
                Err(e) => Verdict::unverified(None, e.to_string()),
            };
        };
        let cache_key = (
            signature.id.clone(),
            key.kind(),
            key.path_segments().into_iter().map(str::to_owned).collect(),
            file.sha256.clone(),
        );
        if let Some(verdict) = in_force
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return verdict.clone();
        }
        let verdict = match (
            Bundle::parse(&signature.bundle),
            Sha256::parse(&file.sha256),
        ) {
            (Ok(bundle), Ok(sha256)) => policy.verify(
                Subject {
                    kind: key.kind(),
                    name: key.subject_name(),
                    sha256: &sha256,
                },
                &bundle,
            ),
            (Err(e), _) => Verdict::unverified(None, e.to_string()),
            (_, Err(e)) => Verdict::unverified(None, e.to_string()),
        };
        // Who signed is known only once verified: a bundle's hint or certificate is its own claim.
        let verdict = if verdict.verified {
            verdict
        } else {
            Verdict {
                signer: None,
                ..verdict
            }
        };
        let mut verdicts = in_force.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= MAX_CACHED_VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(cache_key, verdict.clone());
        verdict
    }

    /// Counts a download of `file` and refuses it in enforce mode when no signature of it verifies.
    pub fn admit_download(&self, key: &ComponentKey, file: &StoredFile) -> Result<(), String> {
        if self.mode == SignatureMode::Off || self.verified(key, file) {
            return Ok(());
        }
        if self.mode == SignatureMode::Enforce {
            self.refused_downloads.fetch_add(1, Ordering::Relaxed);
            return Err(unsigned_message(key, file));
        }
        self.unverified_downloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Downloads served without a verified signature (audit mode), and refused for want of one (enforce mode).
    pub fn download_counts(&self) -> (u64, u64) {
        (
            self.unverified_downloads.load(Ordering::Relaxed),
            self.refused_downloads.load(Ordering::Relaxed),
        )
    }
}

pub fn unsigned_message(key: &ComponentKey, file: &StoredFile) -> String {
    format!(
        "{key}'s file (sha256 {}) has no signature that this server's trust policy verifies",
        file.sha256
    )
}

/// Who a bundle says signed it, before any check: the certificate's identity is only known once verified, a
/// key's hint is shown as it is.
fn claimed_signer(bundle: &Bundle) -> Option<String> {
    match bundle.material() {
        crate::domain::signing::Material::PublicKey { hint } if !hint.is_empty() => {
            Some(format!("key hint {hint}"))
        }
        _ => None,
    }
}
