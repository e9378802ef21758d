//! OCI clients nobody here wrote: oras-py (PyPI `oras`, in target/tools/oras, or `$ORAS_PYTHON`) and skopeo
//! (Debian). scripts/test.sh installs both; a test without them says SKIPPED.

use std::path::{Path, PathBuf};

use super::TestApp;

/// The Python that has oras-py, or why there is none.
pub fn oras_python() -> Result<PathBuf, String> {
    let python = std::env::var_os("ORAS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/oras/bin/python")
        });
    if python.exists() {
        Ok(python)
    } else {
        Err(format!(
            "no oras-py at {} (scripts/test.sh installs it)",
            python.display()
        ))
    }
}

/// skopeo, or why it is missing.
pub fn skopeo() -> Result<(), String> {
    match std::process::Command::new("skopeo")
        .arg("--version")
        .output()
    {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err("no skopeo on the PATH (scripts/test.sh installs it with apt-get)".into()),
    }
}

/// Both clients, or why a test cannot run.
pub fn clients() -> Result<PathBuf, String> {
    skopeo()?;
    oras_python()
}

/// The registry's host:port, as OCI references name it.
pub fn registry(app: &TestApp) -> String {
    app.addr.to_string()
}

/// `oras pull` of `reference` (after the registry, such as `models/m:1`) into `out`; with a token, after a login.
/// The pulled files on success, oras' error output otherwise.
pub async fn oras_pull(
    app: &TestApp,
    reference: &str,
    out: &Path,
    token: Option<&str>,
) -> Result<Vec<PathBuf>, String> {
    let python = oras_python()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oci/oras_pull.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .arg(registry(app))
        .arg(format!("{}/{reference}", registry(app)))
        .arg(out);
    if let Some(token) = token {
        command.arg(token);
    }
    let output = command.output().await.map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect())
}

/// Runs skopeo against the test server (plain HTTP); its stdout on success, its stderr otherwise.
pub async fn skopeo_run(args: &[&str]) -> Result<Vec<u8>, String> {
    let output = tokio::process::Command::new("skopeo")
        .args(args)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `oras push` of one file to `reference` (after the registry); with a token, after a login; with a chunk size, in
/// chunks of that many bytes.
pub async fn oras_push(
    app: &TestApp,
    reference: &str,
    file: &Path,
    token: Option<&str>,
    chunk_size: Option<usize>,
) -> Result<(), String> {
    let python = oras_python()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oci/oras_push.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .arg(registry(app))
        .arg(format!("{}/{reference}", registry(app)))
        .arg(file);
    if let Some(token) = token {
        command.arg(token);
    }
    if let Some(chunk_size) = chunk_size {
        command.env("ORAS_CHUNK_SIZE", chunk_size.to_string());
    }
    let output = command.output().await.map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
