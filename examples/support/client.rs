//! Client calls the load examples share: a verified GraphQL multipart upload.

use anyhow::bail;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Uploads `data` as the file of service `id` and checks that the server stored `expected` (its sha256, which the
/// caller computes before any clock starts).
pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    data: Vec<u8>,
    expected: &str,
) -> anyhow::Result<()> {
    let operations = json!({
        "query": format!("mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ file {{ sha256 }} }} }}"),
        "variables": { "file": null }
    });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(data).file_name("f.zip"),
        );
    let response: Value = client
        .post(format!("{base}/graphql"))
        .header("apollo-require-preflight", "true")
        .multipart(form)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if response["data"]["uploadServiceFile"]["file"]["sha256"] != expected {
        bail!("upload of {id}: {response}");
    }
    Ok(())
}
