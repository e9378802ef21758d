//! The inference server's real configurations and component files (`tests/data/inference-server`, see its
//! README): a use case read from its files, and loaded into a server with [`TestApp::load_inference_server_use_case`].

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::app::{Kind, TestApp};

/// Where the data is.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/inference-server")
}

fn read_json(path: &str) -> Value {
    let path = data_dir().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every component of `components.json`.
pub fn components() -> Vec<Value> {
    read_json("components.json")["components"]
        .as_array()
        .unwrap()
        .clone()
}

/// A component's key as the API prints it: `model fall-detection version pilot-2-2`, `transformation custom.expansion`.
pub fn key_of(component: &Value) -> String {
    match component["kind"].as_str().unwrap() {
        "model" => format!(
            "model {} version {}",
            component["name"].as_str().unwrap(),
            component["version"].as_str().unwrap()
        ),
        kind => format!("{kind} {}", component["id"].as_str().unwrap()),
    }
}

/// The component of `components.json` with this key.
pub fn component(key: &str) -> Value {
    components()
        .into_iter()
        .find(|c| key_of(c) == key)
        .unwrap_or_else(|| panic!("{key} is not in components.json"))
}

/// The bytes of a component's file.
pub fn file_of(component: &Value) -> Vec<u8> {
    std::fs::read(data_dir().join(component["file"].as_str().unwrap())).unwrap()
}

/// One use case (`fall_detection`, `scratch_detection`): its four configuration files, as the inference server
/// reads them.
#[derive(Debug, Clone)]
pub struct UseCase {
    pub name: String,
    pub setup: Value,
    pub model: Value,
    pub preprocessing: Value,
    pub postprocessing: Value,
}

impl UseCase {
    pub fn read(name: &str) -> UseCase {
        UseCase {
            name: name.to_string(),
            setup: read_json(&format!("{name}/setup.json")),
            model: read_json(&format!("{name}/model.json")),
            preprocessing: read_json(&format!("{name}/preprocessing_pipeline.json")),
            postprocessing: read_json(&format!("{name}/postprocessing_pipeline.json")),
        }
    }

    /// The body of `POST /pipelines/resolve`: the files as they are, and the device.
    pub fn request(&self, device: &Value) -> Value {
        json!({
            "setup": self.setup,
            "model": self.model,
            "preprocessing": self.preprocessing,
            "postprocessing": self.postprocessing,
            "device": device,
        })
    }

    fn ids(list: &Value) -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|step| step["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// GraphQL's `PipelineInput` for the same configuration.
    pub fn pipeline_input(&self) -> Value {
        json!({
            "model": { "name": self.model["model_name"], "version": self.model["model_version"] },
            "preprocessing": Self::ids(&self.preprocessing),
            "postprocessing": Self::ids(&self.postprocessing),
            "services": [self.setup["service"]["servicer"]],
            "inferencer": self.setup["inference"]["inferencer"],
        })
    }

    /// What the inference server fetches at start-up, in its order (`inference_application/code/`): the model
    /// by name and version, each transformation by id, the servicer, the inferencer. As keys.
    pub fn fetched(&self) -> Vec<String> {
        let mut keys = vec![format!(
            "model {} version {}",
            self.model["model_name"].as_str().unwrap(),
            self.model["model_version"].as_str().unwrap()
        )];
        for id in Self::ids(&self.preprocessing)
            .into_iter()
            .chain(Self::ids(&self.postprocessing))
        {
            keys.push(format!("transformation {id}"));
        }
        keys.push(format!(
            "service {}",
            self.setup["service"]["servicer"].as_str().unwrap()
        ));
        keys.push(format!(
            "inferencer {}",
            self.setup["inference"]["inferencer"].as_str().unwrap()
        ));
        keys
    }
}

impl TestApp {
    /// Creates every component the use case fetches that the server does not have yet, with the needs of
    /// `components.json`, and uploads its file. Returns the use case.
    pub async fn load_inference_server_use_case(&self, name: &str) -> UseCase {
        let use_case = UseCase::read(name);
        let mut seen = std::collections::BTreeSet::new();
        for key in use_case.fetched() {
            if seen.insert(key.clone()) {
                self.load_inference_server_component(&component(&key)).await;
            }
        }
        use_case
    }

    /// Creates one component of `components.json` (unless the server has it) and uploads its file.
    pub async fn load_inference_server_component(&self, component: &Value) {
        let kind = component["kind"].as_str().unwrap();
        let (kind_of, mut input) = match kind {
            "model" => (
                Kind::Model,
                json!({ "name": component["name"], "version": component["version"],
                        "library": component["library"] }),
            ),
            "transformation" => (Kind::Transformation, json!({ "id": component["id"] })),
            "service" => (Kind::Service, json!({ "id": component["id"] })),
            _ => (
                Kind::Inferencer,
                json!({ "id": component["id"], "library": component["library"],
                        "useCuda": component["useCuda"].as_bool().unwrap_or(false) }),
            ),
        };
        if kind != "model" {
            input["needs"] = component["needs"].clone();
        }
        // Both use cases fetch some components (the servicer, the tensorflow preprocessing): loaded once. Asked
        // first, not left to the create's refusal, which some MongoDB wire servers do not make.
        let lookup = match kind {
            "model" => "query($name: String!, $version: String!) { found: model(name: $name, version: $version) { __typename } }".to_string(),
            _ => format!("query($id: ID!) {{ found: {kind}(id: $id) {{ __typename }} }}"),
        };
        let key = json!({ "id": component["id"], "name": component["name"], "version": component["version"] });
        let variables = match kind {
            "model" => json!({ "name": key["name"], "version": key["version"] }),
            _ => json!({ "id": key["id"] }),
        };
        if !self.ok(&lookup, variables).await["found"].is_null() {
            return;
        }
        let (mutation, input_type) = kind_of.create_mutation();
        self.ok(
            &format!(
                "mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ __typename }} }}"
            ),
            json!({ "input": input }),
        )
        .await;
        let bytes = file_of(component);
        let expected = crate::sha256_hex(&bytes);
        let filename = component["file"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let (query, variables) = match kind {
            "model" => (
                "mutation($name: String!, $version: String!, $file: Upload!) { \
                 uploadModelFile(name: $name, version: $version, file: $file) { file { sha256 } } }"
                    .to_string(),
                json!({ "name": component["name"], "version": component["version"] }),
            ),
            _ => {
                let field = format!("upload{}File", capitalized(kind));
                (
                    format!(
                        "mutation($id: ID!, $file: Upload!) {{ {field}(id: $id, file: $file) {{ file {{ sha256 }} }} }}"
                    ),
                    json!({ "id": component["id"] }),
                )
            }
        };
        let response = self.upload(&query, variables, bytes, &filename).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let data = body["data"]
            .as_object()
            .unwrap_or_else(|| panic!("{body:#}"));
        let uploaded = data.values().next().unwrap();
        assert_eq!(uploaded["file"]["sha256"], expected, "{body:#}");
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
