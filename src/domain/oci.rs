//! Components as OCI artifacts: repository names and tags for keys (with a reversible mapping for what OCI's
//! grammar cannot carry), and the manifests, image indexes and config blobs generated from metadata. Everything
//! here is pure: the same component always gives the same bytes, so the same manifest digest.
//!
//! - Repositories: `models/<name>`, `transformations/<id>`, `services/<id>`, `inferencers/<id>`. A name or id that
//!   is not an OCI path component (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`), or that starts with `x--`, is written
//!   `x--` followed by the lower-case hex of its UTF-8 bytes (`Fall Detection` -> `x--46616c6c...`).
//! - Tags: a model's versions and aliases (a version wins over an alias of the same name), `latest` for the other
//!   kinds. A version or alias that is not an OCI tag (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`), or that starts with
//!   `x--`, is written `x--` followed by the unpadded base64url of its bytes; one longer than 93 bytes has no tag
//!   (its manifest is reachable by digest).
//! - Models are CNCF ModelPack artifacts (modelpack/model-spec): the file is a raw weight layer named by
//!   `org.cncf.model.filepath` (and `org.opencontainers.image.title`, which `oras pull` writes files by).
//! - The other kinds are artifacts of type `application/vnd.component-repository.<kind>.v1+json`; their config
//!   (`application/vnd.component-repository.<kind>.config.v1+json`) holds the metadata, needs included.
//! - Per-platform variants make an image index: the platform-neutral file (if any) without `platform`, then one
//!   manifest per variant with its `platform` (accelerators in annotations).

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Component, ComponentKey, DomainError, Kind, Platform, Spec, StoredFile};

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MODEL_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
pub const MODEL_WEIGHT: &str = "application/vnd.cncf.model.weight.v1.raw";
pub const MODEL_FILEPATH: &str = "org.cncf.model.filepath";
pub const TITLE: &str = "org.opencontainers.image.title";
pub const CREATED: &str = "org.opencontainers.image.created";
/// The accelerator a variant's file is built for, with its version requirement.
/// A signature's artifact type and its one layer's media type: the Sigstore bundle, as the OCI referrers of what
/// it signs (the layout cosign and the Sigstore bundle spec use).
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The empty config of artifacts that have no config of their own (OCI image spec 1.1).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const ACCELERATOR: &str = "dev.component-repository.accelerator";
pub const ACCELERATOR_VERSION: &str = "dev.component-repository.accelerator-version";
/// The marker of an escaped repository name component or tag.
const ESCAPE: &str = "x--";
const MAX_TAG: usize = 128;

/// The artifact type of a kind's manifests.
pub fn artifact_type(kind: Kind) -> String {
    match kind {
        Kind::Model => MODEL_ARTIFACT.to_string(),
        other => format!("application/vnd.component-repository.{other}.v1+json"),
    }
}

fn config_type(kind: Kind) -> String {
    match kind {
        Kind::Model => MODEL_CONFIG.to_string(),
        other => format!("application/vnd.component-repository.{other}.config.v1+json"),
    }
}

/// The repository prefix of a kind.
fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Model => "models",
        Kind::Transformation => "transformations",
        Kind::Service => "services",
        Kind::Inferencer => "inferencers",
    }
}

/// An OCI repository: the versions of a model, or one component of another kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Repository {
    pub kind: Kind,
    /// The model's name or the component's id, as stored (unescaped).
    pub name: String,
}

impl Repository {
    pub fn of(key: &ComponentKey) -> Self {
        let name = match key {
            ComponentKey::Model(m) => m.name.clone(),
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => id.clone(),
        };
        Self {
            kind: key.kind(),
            name,
        }
    }

    /// Reads `models/<name>` and the like; `None` for a name no component can have.
    pub fn parse(oci_name: &str) -> Option<Self> {
        let (prefix, rest) = oci_name.split_once('/')?;
        let kind = Kind::ALL.into_iter().find(|k| plural(*k) == prefix)?;
        let name = decode_component(rest)?;
        super::validate_key_part("name", &name).ok()?;
        Some(Self { kind, name })
    }

    /// The OCI name, such as `models/fall-detection`.
    pub fn oci_name(&self) -> String {
        format!("{}/{}", plural(self.kind), encode_component(&self.name))
    }

    /// The key a tag names in this repository: for models, the version it spells (an alias is resolved by the
    /// caller); for the other kinds only `latest`.
    pub fn key_for_tag(&self, tag: &str) -> Result<ComponentKey, DomainError> {
        let bad = || {
            DomainError::new(
                "tag",
                format!("{tag:?} names nothing in {}", self.oci_name()),
            )
        };
        match self.kind {
            Kind::Model => ComponentKey::model(&self.name, decode_tag(tag).ok_or_else(bad)?),
            kind if tag == "latest" => ComponentKey::with_id(kind, &self.name),
            _ => Err(bad()),
        }
    }
}

fn is_path_component(s: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A name or id as an OCI path component.
pub fn encode_component(name: &str) -> String {
    if is_path_component(name) && !name.starts_with(ESCAPE) {
        name.to_string()
    } else {
        format!("{ESCAPE}{}", hex::encode(name.as_bytes()))
    }
}

/// Inverse of [`encode_component`]; `None` for what it never writes.
pub fn decode_component(component: &str) -> Option<String> {
    match component.strip_prefix(ESCAPE) {
        Some(escaped) => {
            let name = String::from_utf8(hex::decode(escaped).ok()?).ok()?;
            (escaped.bytes().all(|b| !b.is_ascii_uppercase())
                && encode_component(&name) == component)
                .then_some(name)
        }
        None => is_path_component(component).then(|| component.to_string()),
    }
}

fn is_tag(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A version or alias as an OCI tag; `None` when even its escaped form is too long for a tag.
pub fn encode_tag(version: &str) -> Option<String> {
    if is_tag(version) && !version.starts_with(ESCAPE) {
        return Some(version.to_string());
    }
    let escaped = format!(
        "{ESCAPE}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(version.as_bytes())
    );
    (escaped.len() <= MAX_TAG).then_some(escaped)
}

/// Inverse of [`encode_tag`]; `None` for what it never writes.
pub fn decode_tag(tag: &str) -> Option<String> {
    match tag.strip_prefix(ESCAPE) {
        Some(escaped) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(escaped)
                .ok()?;
            let version = String::from_utf8(bytes).ok()?;
            (encode_tag(&version).as_deref() == Some(tag)).then_some(version)
        }
        None => is_tag(tag).then(|| tag.to_string()),
    }
}

/// One generated document (manifest, index or config) with its media type and digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Document {
    fn new(media_type: &str, value: &Value) -> Self {
        Self::raw(media_type, canonical(value))
    }

    /// Bytes served exactly as they are (a signature bundle as it was attached).
    fn raw(media_type: &str, bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Self {
            media_type: media_type.to_string(),
            bytes,
            digest,
        }
    }

    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// A component as an OCI artifact: what its tag points at (a manifest, or an image index of per-platform
/// manifests), then every other manifest and config it references.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub top: Document,
    pub manifests: Vec<Document>,
    /// Generated blobs: configs, and the signature bundles with their empty config.
    pub configs: Vec<Document>,
    /// The signatures, each a manifest whose `subject` is the manifest of the file it signs.
    pub referrers: Vec<Referrer>,
}

/// A signature as an OCI referrer of the manifest of the file it signs.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// The digest of the manifest it refers to.
    pub subject: String,
    pub manifest: Document,
    pub created: String,
}

impl Artifact {
    /// The manifest or index with this digest (a signature's manifest included).
    pub fn manifest(&self, digest: &str) -> Option<&Document> {
        std::iter::once(&self.top)
            .chain(&self.manifests)
            .chain(self.referrers.iter().map(|r| &r.manifest))
            .find(|d| d.digest == digest)
    }

    /// The referrers index of the manifest `subject`: `None` when no manifest of this artifact has that digest.
    /// `artifact_type` filters, as the distribution spec's `?artifactType=` does.
    pub fn referrers_of(&self, subject: &str, artifact_type: Option<&str>) -> Option<Document> {
        self.manifest(subject)?;
        let manifests: Vec<Value> = self
            .referrers
            .iter()
            .filter(|r| r.subject == subject)
            .filter(|_| artifact_type.is_none_or(|t| t == SIGSTORE_BUNDLE))
            .map(|r| {
                let mut entry = r.manifest.descriptor();
                entry["artifactType"] = json!(SIGSTORE_BUNDLE);
                entry["annotations"] = json!({ CREATED: r.created });
                entry
            })
            .collect();
        Some(Document::new(
            INDEX,
            &json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": manifests }),
        ))
    }

    pub fn config(&self, digest: &str) -> Option<&Document> {
        self.configs.iter().find(|d| d.digest == digest)
    }
}

/// The artifact of a component; `None` while it has no file with a known digest.
pub fn artifact(component: &Component) -> Option<Artifact> {
    let hashed = |f: &&StoredFile| !f.sha256.is_empty();
    let variants: Vec<_> = component
        .variants
        .iter()
        .filter(|v| hashed(&&v.file))
        .collect();
    let default = component.file.as_ref().filter(hashed);
    if variants.is_empty() {
        let file = default?;
        let (manifest, config) = single(component, file);
        let mut configs = vec![config];
        let mut referrers = Vec::new();
        signatures_of(file, &manifest, &mut configs, &mut referrers);
        return Some(Artifact {
            top: manifest,
            manifests: Vec::new(),
            configs,
            referrers,
        });
    }
    let mut manifests = Vec::new();
    let mut configs = Vec::new();
    let mut referrers = Vec::new();
    let mut entries = Vec::new();
    let files = default
        .map(|f| (f, None))
        .into_iter()
        .chain(variants.iter().map(|v| (&v.file, Some(&v.platform))));
    for (file, platform) in files {
        let (manifest, config) = single(component, file);
        signatures_of(file, &manifest, &mut configs, &mut referrers);
        let mut entry = manifest.descriptor();
        entry["artifactType"] = json!(artifact_type(component.kind()));
        if let Some(platform) = platform {
            entry["platform"] = oci_platform(platform);
            if let Some(accelerator) = &platform.accelerator {
                entry["annotations"][ACCELERATOR] = json!(accelerator);
                if let Some(version) = &platform.accelerator_version {
                    entry["annotations"][ACCELERATOR_VERSION] = json!(version);
                }
            }
        }
        entries.push(entry);
        manifests.push(manifest);
        configs.push(config);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "artifactType": artifact_type(component.kind()),
        "manifests": entries,
    });
    Some(Artifact {
        top: Document::new(INDEX, &index),
        manifests,
        configs,
        referrers,
    })
}

/// The signatures of `file` as referrers of its `manifest`: a manifest each, with the bundle (exactly as attached)
/// as its one layer and the empty config.
fn signatures_of(
    file: &StoredFile,
    manifest: &Document,
    blobs: &mut Vec<Document>,
    referrers: &mut Vec<Referrer>,
) {
    if file.signatures.is_empty() {
        return;
    }
    let empty = Document::new(EMPTY, &json!({}));
    for signature in &file.signatures {
        let bundle = Document::raw(SIGSTORE_BUNDLE, signature.bundle.as_bytes().to_vec());
        let created = signature
            .added_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let signature_manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": SIGSTORE_BUNDLE,
            "config": empty.descriptor(),
            "layers": [bundle.descriptor()],
            "subject": manifest.descriptor(),
            "annotations": { CREATED: created },
        });
        referrers.push(Referrer {
            subject: manifest.digest.clone(),
            manifest: Document::new(MANIFEST, &signature_manifest),
            created,
        });
        blobs.push(bundle);
    }
    if !blobs.iter().any(|b| b.digest == empty.digest) {
        blobs.push(empty);
    }
}

/// A platform as OCI writes it: containerd's canonical form leaves out the variants every device of the
/// architecture has (`arm64` v8, `amd64` v1).
fn oci_platform(platform: &Platform) -> Value {
    let mut value = json!({ "os": platform.os, "architecture": platform.arch });
    match (platform.arch.as_str(), platform.variant.as_deref()) {
        (_, None) | ("arm64", Some("v8")) | ("amd64", Some("v1")) => {}
        (_, Some(variant)) => value["variant"] = json!(variant),
    }
    value
}

/// The manifest of one file of a component, and its config.
fn single(component: &Component, file: &StoredFile) -> (Document, Document) {
    let kind = component.kind();
    let layer_digest = format!("sha256:{}", file.sha256);
    let created = file
        .uploaded_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let config = match (&component.key, &component.spec) {
        (ComponentKey::Model(key), Spec::Model(spec)) => json!({
            "descriptor": {
                "name": key.name,
                "version": key.version,
                "description": spec.description,
                "createdAt": component.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
            "config": { "format": spec.library },
            "modelfs": { "type": "layers", "diff_ids": [layer_digest] },
        }),
        (key, spec) => json!({
            "key": key,
            "spec": spec,
            "createdAt": component.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    };
    let config = Document::new(&config_type(kind), &config);
    let layer_type = match kind {
        Kind::Model => MODEL_WEIGHT.to_string(),
        _ if is_media_type(&file.content_type) => file.content_type.clone(),
        _ => "application/octet-stream".to_string(),
    };
    let mut annotations = json!({ TITLE: file.filename });
    if kind == Kind::Model {
        annotations[MODEL_FILEPATH] = json!(file.filename);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": artifact_type(kind),
        "config": config.descriptor(),
        "layers": [{
            "mediaType": layer_type,
            "digest": layer_digest,
            "size": file.size,
            "annotations": annotations,
        }],
        "annotations": { CREATED: created },
    });
    (Document::new(MANIFEST, &manifest), config)
}

/// RFC 6838 `type/subtype` without parameters, as OCI descriptors take it.
fn is_media_type(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 127
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    s.split_once('/')
        .is_some_and(|(t, sub)| part(t) && part(sub))
}

/// JSON with object keys sorted and no insignificant whitespace, so the bytes depend only on the value.
pub fn canonical(value: &Value) -> Vec<u8> {
    fn write(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(key).unwrap_or_default());
                    out.push(b':');
                    write(&map[key], out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

/// An empty image index: the referrers of a manifest until signatures are stored.
pub fn empty_index() -> Document {
    Document::new(
        INDEX,
        &json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": [] }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ModelSpec, ServiceSpec, Variant};
    use chrono::TimeZone;

    fn file(sha: &str, name: &str) -> StoredFile {
        StoredFile {
            blob_id: sha.into(),
            size: 42,
            sha256: sha.into(),
            content_type: "application/zip".into(),
            filename: name.into(),
            uploaded_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            signatures: Vec::new(),
        }
    }

    fn model(version: &str) -> Component {
        let mut c = Component::new(
            ComponentKey::model("fall-detection", version).unwrap(),
            Spec::Model(ModelSpec {
                library: "onnx".into(),
                description: "falls".into(),
            }),
            chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        )
        .unwrap();
        c.file = Some(file(&"a".repeat(64), "model.onnx"));
        c
    }

    #[test]
    fn names_map_reversibly() {
        for name in [
            "fall-detection",
            "inference_application.code.services.extended_inference_svc",
            "Fall Detection",
            "x--tricky",
            "a___b",
            "-a",
            "model v1 (final)",
            "é",
        ] {
            let encoded = encode_component(name);
            assert!(is_path_component(&encoded), "{name:?} -> {encoded}");
            assert_eq!(
                decode_component(&encoded).as_deref(),
                Some(name),
                "{encoded}"
            );
        }
        assert_eq!(encode_component("fall-detection"), "fall-detection");
        assert_eq!(encode_component("A"), "x--41");
        // Only what encode writes decodes: one spelling per name.
        assert_eq!(
            decode_component("x--616263"),
            None,
            "abc is written as itself"
        );
        assert_eq!(decode_component("x--4"), None);
        assert_eq!(decode_component("UPPER"), None);
        let repo = Repository::parse("models/x--46616c6c").unwrap();
        assert_eq!((repo.kind, repo.name.as_str()), (Kind::Model, "Fall"));
        assert_eq!(repo.oci_name(), "models/x--46616c6c");
        assert_eq!(Repository::parse("widgets/a"), None);
        assert_eq!(Repository::parse("services/a/b"), None);
    }

    #[test]
    fn tags_map_reversibly() {
        for version in [
            "1.0",
            "pilot-2-1",
            "v1+build",
            "1 final",
            "x--1",
            "_a",
            ".hidden",
            "é",
        ] {
            let tag = encode_tag(version).unwrap();
            assert!(is_tag(&tag), "{version:?} -> {tag}");
            assert_eq!(decode_tag(&tag).as_deref(), Some(version), "{tag}");
        }
        assert_eq!(encode_tag("1.0").as_deref(), Some("1.0"));
        assert_eq!(encode_tag(&"é".repeat(60)), None, "too long for a tag");
        assert_eq!(decode_tag("x--MS4w"), None, "1.0 is written as itself");
        assert_eq!(decode_tag("bad tag"), None);
        let repo = Repository::parse("services/svc").unwrap();
        assert!(repo.key_for_tag("latest").is_ok());
        assert!(repo.key_for_tag("1.0").is_err());
    }

    #[test]
    fn manifests_are_byte_stable_and_change_with_the_component() {
        let a = artifact(&model("1")).unwrap();
        assert_eq!(
            artifact(&model("1")).unwrap(),
            a,
            "same component, same bytes"
        );
        let parsed: Value = serde_json::from_slice(&a.top.bytes).unwrap();
        assert_eq!(canonical(&parsed), a.top.bytes, "already canonical");
        assert_eq!(parsed["artifactType"], MODEL_ARTIFACT);
        assert_eq!(parsed["config"]["mediaType"], MODEL_CONFIG);
        assert_eq!(parsed["config"]["digest"], a.configs[0].digest.as_str());
        let layer = &parsed["layers"][0];
        assert_eq!(layer["mediaType"], MODEL_WEIGHT);
        assert_eq!(layer["digest"], format!("sha256:{}", "a".repeat(64)));
        assert_eq!(layer["annotations"][MODEL_FILEPATH], "model.onnx");
        let config: Value = serde_json::from_slice(&a.configs[0].bytes).unwrap();
        assert_eq!(config["modelfs"]["diff_ids"][0], layer["digest"]);
        assert_eq!(config["descriptor"]["version"], "1");

        assert_ne!(artifact(&model("2")).unwrap().top.digest, a.top.digest);
        let mut described = model("1");
        described.spec = Spec::Model(ModelSpec {
            library: "onnx".into(),
            description: "other".into(),
        });
        assert_ne!(artifact(&described).unwrap().top.digest, a.top.digest);
        let mut aliased = model("1");
        aliased.aliases.insert("production".into());
        assert_eq!(
            artifact(&aliased).unwrap().top.digest,
            a.top.digest,
            "aliases move; the version's manifest stays"
        );
        let mut unhashed = model("1");
        unhashed.file.as_mut().unwrap().sha256.clear();
        assert_eq!(artifact(&unhashed), None);
    }

    #[test]
    fn variants_make_an_index_with_platforms() {
        let mut c = Component::new(
            ComponentKey::with_id(Kind::Service, "svc").unwrap(),
            Spec::Service(ServiceSpec::default()),
            chrono::Utc::now(),
        )
        .unwrap();
        c.variants = vec![
            Variant {
                needs: None,
                platform: Platform::new("linux", "aarch64", None, None, None).unwrap(),
                file: file(&"b".repeat(64), "arm.zip"),
            },
            Variant {
                needs: None,
                platform: Platform::new("linux", "armhf", None, Some("npu"), None).unwrap(),
                file: file(&"c".repeat(64), "armv7.zip"),
            },
        ];
        let a = artifact(&c).unwrap();
        let index: Value = serde_json::from_slice(&a.top.bytes).unwrap();
        assert_eq!(a.top.media_type, INDEX);
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0]["platform"],
            json!({"os": "linux", "architecture": "arm64"})
        );
        assert_eq!(
            entries[1]["platform"],
            json!({"os": "linux", "architecture": "arm", "variant": "v7"})
        );
        assert_eq!(entries[1]["annotations"][ACCELERATOR], "npu");
        for (entry, manifest) in entries.iter().zip(&a.manifests) {
            assert_eq!(entry["digest"], manifest.digest.as_str());
            assert!(a.manifest(&manifest.digest).is_some());
        }
        let arm: Value = serde_json::from_slice(&a.manifests[0].bytes).unwrap();
        assert_eq!(arm["layers"][0]["mediaType"], "application/zip");
        assert_eq!(arm["artifactType"], artifact_type(Kind::Service));
    }
}
