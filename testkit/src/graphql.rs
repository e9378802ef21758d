//! The GraphQL multipart request (the spec uploads follow), built in one place for every test and benchmark.

use anyhow::bail;
use serde_json::{Value, json};

/// The form of a GraphQL multipart request that sends `bytes` as variable `file` of `query` (its other variables in
/// `variables`).
pub fn upload_form(
    query: &str,
    variables: Value,
    bytes: Vec<u8>,
    filename: &str,
) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(filename.to_owned())
        .mime_str("application/zip")
        .expect("a valid media type");
    files_form(query, variables, vec![("file".into(), part)])
}

/// The form of a GraphQL multipart request that sends each part as the variable it is named with (set to null in
/// the operations, as the spec asks), in that order: the parts may be streams.
pub fn files_form(
    query: &str,
    variables: Value,
    files: Vec<(String, reqwest::multipart::Part)>,
) -> reqwest::multipart::Form {
    let mut variables = if variables.is_null() {
        json!({})
    } else {
        variables
    };
    let mut map = serde_json::Map::new();
    for (n, (variable, _)) in files.iter().enumerate() {
        variables[variable.as_str()] = Value::Null;
        map.insert(n.to_string(), json!([format!("variables.{variable}")]));
    }
    let operations = json!({ "query": query, "variables": variables });
    let mut form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", Value::Object(map).to_string());
    for (n, (_, part)) in files.into_iter().enumerate() {
        form = form.part(n.to_string(), part);
    }
    form
}

/// A POST of `form` to `<base>/graphql` with the preflight-forcing header the GraphQL multipart request spec asks of
/// clients (CSRF prevention).
pub fn post_upload(
    client: &reqwest::Client,
    base: &str,
    form: reqwest::multipart::Form,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/graphql"))
        .header("apollo-require-preflight", "true")
        .multipart(form)
}

/// Uploads `data` as the file of service `id` and checks that the server stored `expected` (its sha256, which the
/// caller computes before any clock starts).
pub async fn upload_service_file(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    data: Vec<u8>,
    expected: &str,
) -> anyhow::Result<()> {
    let query = format!(
        "mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ file {{ sha256 }} }} }}"
    );
    let form = upload_form(&query, json!({}), data, "f.zip");
    let response: Value = post_upload(client, base, form)
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

/// Runs a GraphQL operation at `<base>/graphql` and returns its `data`; an answer with errors is an error.
pub async fn query(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let body: Value = client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if body.get("errors").is_some() {
        bail!("{query}: {body}");
    }
    Ok(body["data"].clone())
}

/// Creates service `id` with nothing but its id.
pub async fn create_service(client: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<()> {
    query(
        client,
        base,
        "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
        json!({ "id": id }),
    )
    .await?;
    Ok(())
}
