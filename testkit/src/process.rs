//! Runs the real binary, as an operator would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    /// Everything the server has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The server binary, built beside what runs this code: an integration test (`<target>/<profile>/deps/`) or an
/// example (`<target>/<profile>/examples/`). Cargo builds the binary before either. `SERVER_BINARY` names another
/// (a benchmark run against the build before, with the same client).
pub fn binary() -> PathBuf {
    if let Some(other) = std::env::var_os("SERVER_BINARY") {
        return PathBuf::from(other);
    }
    let exe = std::env::current_exe().expect("the running executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests and examples live in <target>/<profile>/<deps|examples>");
    profile_dir.join(format!(
        "component-repository{}",
        std::env::consts::EXE_SUFFIX
    ))
}

impl ServerProcess {
    /// Starts `component-repository serve` on a free port with `data_dir`, and waits until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let binary = binary();
        assert!(
            binary.exists(),
            "{} is missing: build it first (cargo build --release --bins)",
            binary.display()
        );
        let mut child = Command::new(&binary)
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .env("REPOSITORY_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log_writer = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut log) = log_writer.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                if !sent && line.contains("listening") {
                    let address = line
                        .split("address=")
                        .nth(1)
                        .map(|a| a.split_whitespace().next().unwrap().to_owned());
                    let _ = tx.send(address);
                    sent = true;
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address")
            .expect("the log line names the address");
        ServerProcess {
            child,
            base: format!("http://{address}"),
            log,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code (None when killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a one-shot subcommand of the binary (dump, restore, import, gc) as a script would: no terminal.
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}
