//! The real server on a random port, in this process, and a client that talks to it over HTTP: [`TestApp`].
//! Handlers run as in production (the same `server::app`, the same accept loop); the caller opens the store, so
//! a test can look into it or share it between servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use component_repository::config::Config;
use component_repository::server;
use component_repository::store::Store;
use component_repository::store::embedded::EmbeddedStore;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The configuration a test starts from: `serve`'s defaults (never the environment's), with uploads up to 64 MiB
/// so that refusals are quick to provoke. [`TestApp::start`] sets the address and the data directory.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.uploads.max_size = 64 * 1024 * 1024;
    config
}

/// [`test_config`] as `change` leaves it: `config_with(|c| c.immutable_files = true)`.
pub fn config_with(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    change(&mut config);
    config
}

/// Bearer tokens as the flags give them (no tokens file).
pub fn tokens(
    read: &[&str],
    write: &[&str],
    public_reads: bool,
) -> component_repository::api::auth::Tokens {
    let owned = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    component_repository::api::auth::Tokens::new(&owned(read), &owned(write), None, public_reads)
        .unwrap()
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Where the embedded store keeps its files (for tests that look at the disk).
    pub data_dir: Option<PathBuf>,
    _dir: TempDir,
    /// Whatever must live as long as the server and be cleaned up after it (a test database, say).
    pub guard: Option<Box<dyn Send + Sync>>,
    /// What the backend has stored, for tests that check nothing is left behind.
    pub probe: Option<Arc<dyn StorageProbe>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What a backend keeps, as a test can see it from outside the server.
pub trait StorageProbe: Send + Sync {
    /// Stored files that are not staged uploads and not yet left for collection: the files components use.
    fn live_files(&self) -> futures_util::future::BoxFuture<'_, usize>;
    /// Uploads staged but not part of any component.
    fn staged_uploads(&self) -> futures_util::future::BoxFuture<'_, usize>;
}

/// The embedded store's directories: `blobs/` holds the files in use, `tmp/` the uploads being staged.
pub struct EmbeddedProbe(pub PathBuf);

/// Every file under `dir`, recursively.
pub fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_in(&p) } else { 1 })
            .sum()
    })
}

impl StorageProbe for EmbeddedProbe {
    fn live_files(&self) -> futures_util::future::BoxFuture<'_, usize> {
        Box::pin(async { files_in(&self.0.join("blobs")) })
    }

    fn staged_uploads(&self) -> futures_util::future::BoxFuture<'_, usize> {
        Box::pin(async { files_in(&self.0.join("tmp")) })
    }
}

/// The embedded store in a fresh temporary directory.
pub async fn embedded(config: Config) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = Arc::new(EmbeddedStore::open(&data_dir).await.unwrap());
    let mut app = TestApp::start(store, dir, Some(data_dir.clone()), config).await;
    app.probe = Some(Arc::new(EmbeddedProbe(data_dir)));
    app
}

/// A server on the embedded store that an earlier run (or a restore) left in `dir/data`.
pub async fn embedded_in(dir: &std::path::Path) -> TestApp {
    embedded_in_with(dir, test_config()).await
}

/// [`embedded_in`] with settings.
pub async fn embedded_in_with(dir: &std::path::Path, config: Config) -> TestApp {
    TestApp::start(
        Arc::new(reopen(&dir.join("data")).await),
        tempfile::tempdir().unwrap(),
        None,
        config,
    )
    .await
}

/// Opens an embedded store that a server stopped a moment ago: the service's background tasks (webhooks,
/// retention) may hold the previous one for a moment after the server ended, and redb opens a file only once.
pub async fn reopen(data: &std::path::Path) -> EmbeddedStore {
    crate::wait_for(
        Duration::from_secs(10),
        async || match EmbeddedStore::open(data).await {
            Ok(store) => Ok(store),
            Err(e) if e.to_string().contains("already open") => Err(e),
            Err(e) => panic!("opening the embedded store at {}: {e}", data.display()),
        },
    )
    .await
}

/// The gauge of change-feed subscribers over `transport` (`sse`, `graphql_ws`) in a `/metrics` text; 0 when absent.
pub fn event_subscribers_in(metrics: &str, transport: &str) -> f64 {
    let series = format!("repository_event_subscribers{{transport=\"{transport}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

impl TestApp {
    pub async fn start(
        store: Arc<dyn Store>,
        dir: TempDir,
        data_dir: Option<PathBuf>,
        mut config: Config,
    ) -> TestApp {
        // Server logs (warnings and errors) go to the test's captured output: shown when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        // The store is opened by the caller; the data directory matters to a mirror (its partial files).
        config.store.data_dir = data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("unused"));
        config.bind = "127.0.0.1:0".parse().unwrap();
        let app = server::app(store, &config).unwrap();
        let listener = tokio::net::TcpListener::bind(config.bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut serve_options = server::ServeOptions::new(&config.connections);
        serve_options.grace = Duration::from_secs(1);
        let server = tokio::spawn(server::serve(
            listener,
            app,
            async {
                let _ = rx.await;
            },
            serve_options,
        ));
        TestApp {
            addr,
            client: reqwest::Client::new(),
            data_dir,
            _dir: dir,
            guard: None,
            probe: None,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server and waits until it has released the store.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// Stops the server and hands over its directory (with the embedded store's data), which would otherwise be
    /// deleted with the app.
    pub async fn stop_keeping_data(mut self) -> TempDir {
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        self.stop().await;
        dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Runs a GraphQL operation and returns the whole response body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GraphQL over HTTP answers 200");
        response.json().await.unwrap()
    }

    /// Runs an operation that must succeed and returns its `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// Runs an operation that must fail and returns the `extensions.code` of its first error.
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let body = self.gql(query, variables).await;
        let code = &body["errors"][0]["extensions"]["code"];
        assert!(code.is_string(), "expected an error with a code: {body:#}");
        code.as_str().unwrap().to_owned()
    }

    /// Sends a multipart upload request (GraphQL multipart request spec) with one file in variable `file`.
    pub async fn upload(
        &self,
        mutation: &str,
        variables: Value,
        bytes: Vec<u8>,
        filename: &str,
    ) -> reqwest::Response {
        let form = crate::graphql::upload_form(mutation, variables, bytes, filename);
        crate::graphql::post_upload(&self.client, &self.url(""), form)
            .send()
            .await
            .unwrap()
    }

    /// Creates a component of `kind` from the GraphQL `input` (`{id: ...}`, or `{name, version, library}` for a
    /// model), which must succeed; returns what the mutation answered (its `__typename`).
    pub async fn create(&self, kind: Kind, input: Value) -> Value {
        let (mutation, input_type) = kind.create_mutation();
        let query = format!(
            "mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ __typename }} }}"
        );
        self.ok(&query, json!({ "input": input })).await[mutation].clone()
    }

    /// Creates service `id`.
    pub async fn create_service(&self, id: &str) {
        self.create(Kind::Service, json!({ "id": id })).await;
    }

    /// Creates model `name` `version` of `library`.
    pub async fn create_model(&self, name: &str, version: &str, library: &str) {
        let input = json!({ "name": name, "version": version, "library": library });
        self.create(Kind::Model, input).await;
    }

    /// Uploads `bytes` as the file of service `id`, which must succeed and store exactly them; returns the sha256.
    pub async fn upload_service_file(&self, id: &str, bytes: Vec<u8>) -> String {
        let expected = crate::sha256_hex(&bytes);
        let response = self
            .upload(
                "mutation($id: ID!, $file: Upload!) { uploadServiceFile(id: $id, file: $file) { file { sha256 } } }",
                json!({ "id": id }),
                bytes,
                "f.zip",
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["data"]["uploadServiceFile"]["file"]["sha256"], expected,
            "{body:#}"
        );
        expected
    }

    /// Downloads `path` (`/service/<id>`, say): the status and the body.
    pub async fn download(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// `POST {component}/signatures` with a signature bundle as `model_signing` wrote it; `component` is the
    /// component's REST route (`/model/<name>/<version>`, `/service/<id>`).
    pub async fn attach_signature(&self, component: &str, bundle: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("{component}/signatures")))
            .header("content-type", "application/json")
            .body(bundle.to_string())
            .send()
            .await
            .unwrap()
    }

    /// The server's gauge of change-feed subscribers over `transport` (`sse`, `graphql_ws`), from `/metrics`.
    pub async fn event_subscribers(&self, transport: &str) -> f64 {
        event_subscribers_in(&self.get("/metrics").await.text().await.unwrap(), transport)
    }

    /// Waits (10 s at most) until `count` subscribers over `transport` follow the feed.
    pub async fn until_event_subscribers(&self, transport: &str, count: f64) -> bool {
        crate::eventually(std::time::Duration::from_secs(10), async || {
            self.event_subscribers(transport).await == count
        })
        .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with(path, &[]).await
    }

    /// A GET with request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// A GraphQL operation over HTTP with a bearer token (or none): the status and the body, whatever they are.
    pub async fn gql_as(&self, token: Option<&str>, query: &str) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// The kinds of component, as the GraphQL API creates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Service,
    Transformation,
    Inferencer,
}

impl Kind {
    /// The create mutation and its input type.
    pub fn create_mutation(self) -> (&'static str, &'static str) {
        match self {
            Kind::Model => ("createModel", "CreateModelInput"),
            Kind::Service => ("createService", "CreateServiceInput"),
            Kind::Transformation => ("createTransformation", "CreateTransformationInput"),
            Kind::Inferencer => ("createInferencer", "CreateInferencerInput"),
        }
    }
}

/// Says loudly that a test could not run, and why. It writes to the process's stderr directly, past the test
/// harness's output capture, so the line shows in every run; `.ci/run` counts these lines as skipped tests.
pub fn report_skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
