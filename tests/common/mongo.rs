//! Which MongoDB the tests run against.
//!
//! - `MONGODB_URI` set: that server, and every test runs.
//! - otherwise the MongoDB-wire server `nx-27017` (PyPI; a MongoDB-compatible server on SQLite), which
//!   `scripts/test.sh` installs and names in `NX_27017`. It is started once per test binary on a free loopback
//!   port, and each test works in databases of its own.
//! - neither: each test says loudly that it was skipped, and why; under CI (`CI` set) that is a failure instead,
//!   because CI installs the wire server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use component_repository::store::mongodb::{MongoConfig, MongoStore};

pub enum Target {
    /// A real MongoDB server named by `MONGODB_URI`.
    Real { uri: String },
    /// The nx-27017 wire server started for this test binary.
    Wire { uri: String },
}

impl Target {
    pub fn uri(&self) -> &str {
        match self {
            Target::Real { uri } | Target::Wire { uri } => uri,
        }
    }

    pub fn is_wire(&self) -> bool {
        matches!(self, Target::Wire { .. })
    }
}

/// The server the tests use, or why there is none.
pub fn target() -> Result<&'static Target, String> {
    static TARGET: OnceLock<Result<Target, String>> = OnceLock::new();
    let found = TARGET.get_or_init(|| {
        if let Ok(uri) = std::env::var("MONGODB_URI")
            && !uri.is_empty()
        {
            return Ok(Target::Real { uri });
        }
        let Some(binary) = wire_server_binary() else {
            return Err("no MongoDB to test against: set MONGODB_URI, or run scripts/test.sh, which installs \
                        the nx-27017 wire server"
                .to_string());
        };
        start_wire_server(binary).map(|uri| Target::Wire { uri })
    });
    match found {
        Ok(target) => Ok(target),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI must test the MongoDB backend: {reason}")
        }
        Err(reason) => Err(reason.clone()),
    }
}

/// The nx-27017 executable, when installed.
pub fn wire_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NX_27017") {
        return Some(PathBuf::from(path));
    }
    let installed =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/nx-27017/bin/nx-27017");
    installed.exists().then_some(installed)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts nx-27017 on loopback and waits until it accepts connections. The process is started by a thread that
/// lives as long as the test binary and asks the kernel to kill it when that thread goes, so no server outlives the
/// tests.
fn start_wire_server(binary: PathBuf) -> Result<String, String> {
    start_wire_server_on(binary, free_port())
}

/// Starts nx-27017 on `port` of loopback; returns its URI once it accepts connections.
pub fn start_wire_server_on(binary: PathBuf, port: u16) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut command = Command::new(&binary);
        command
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .arg("--log-file")
            .arg(dir.join("nx.log"))
            .arg("--pid-file")
            .arg(dir.join("nx.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe, and the closure touches nothing else between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let result = command.spawn();
        let _ = tx.send(
            result
                .map(|_| ())
                .map_err(|e| format!("cannot start {}: {e}", binary.display())),
        );
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nx-27017 did not listen on {addr} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!("mongodb://{addr}/?directConnection=true"))
}

/// Database names of their own for one test, so tests run in parallel without seeing each other.
pub fn config(target: &Target) -> MongoConfig {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("crtest_{}_{n}", std::process::id());
    MongoConfig {
        uri: target.uri().to_string(),
        database: format!("{prefix}_meta"),
        grid_database: format!("{prefix}_grid"),
        bucket: "fs".into(),
        timeout: Duration::from_secs(5),
    }
}

/// Drops a test's databases when the test is over (on a real server they would otherwise pile up).
pub struct DropDatabases(pub MongoConfig);

impl Drop for DropDatabases {
    fn drop(&mut self) {
        let config = self.0.clone();
        // The test's runtime is going away: a thread of its own with a small runtime does the clean-up.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(client) = mongodb::Client::with_uri_str(&config.uri).await {
                    let _ = client.database(&config.database).drop().await;
                    let _ = client.database(&config.grid_database).drop().await;
                }
            });
        })
        .join();
    }
}

/// A store on fresh databases of `target`.
pub async fn store(target: &Target) -> (MongoStore, MongoConfig) {
    let config = config(target);
    let store = MongoStore::connect(&config)
        .await
        .expect("connecting to MongoDB");
    (store, config)
}

/// A GridFS bucket as tests see it: live files are those neither staged nor superseded (left for gc).
pub struct MongoProbe {
    files: mongodb::Collection<mongodb::bson::Document>,
    superseded: mongodb::Collection<mongodb::bson::Document>,
}

impl MongoProbe {
    pub async fn new(config: &MongoConfig) -> MongoProbe {
        let client = mongodb::Client::with_uri_str(&config.uri).await.unwrap();
        let grid = client.database(&config.grid_database);
        MongoProbe {
            files: grid.collection(&format!("{}.files", config.bucket)),
            superseded: grid.collection(&format!("{}_superseded", config.bucket)),
        }
    }

    /// Every document of `collection` (read whole: nx-27017 cannot count collections whose names hold a dot).
    async fn all(
        collection: &mongodb::Collection<mongodb::bson::Document>,
    ) -> Vec<mongodb::bson::Document> {
        use futures_util::TryStreamExt;
        collection
            .find(mongodb::bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }
}

fn is_staged(file: &mongodb::bson::Document) -> bool {
    file.get_str("filename") == Ok("staging")
}

impl super::StorageProbe for MongoProbe {
    fn live_files(&self) -> futures_util::future::BoxFuture<'_, usize> {
        Box::pin(async {
            let superseded: Vec<_> = Self::all(&self.superseded)
                .await
                .iter()
                .filter_map(|d| d.get_object_id("_id").ok())
                .collect();
            Self::all(&self.files)
                .await
                .iter()
                .filter(|d| !is_staged(d))
                .filter(|d| {
                    d.get_object_id("_id")
                        .is_ok_and(|id| !superseded.contains(&id))
                })
                .count()
        })
    }

    fn staged_uploads(&self) -> futures_util::future::BoxFuture<'_, usize> {
        Box::pin(async {
            Self::all(&self.files)
                .await
                .iter()
                .filter(|d| is_staged(d))
                .count()
        })
    }
}
