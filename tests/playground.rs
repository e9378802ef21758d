//! The GraphiQL playground: served offline from the binary, and working in a real browser.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Options, report_skip};
use serde_json::json;

#[tokio::test]
async fn playground_and_its_assets_come_from_the_binary() {
    let app = common::embedded(Options::default()).await;
    let page = app.get("/playground").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside URL: {html}"
    );
    let mut referenced = 0;
    for src in html
        .split('"')
        .filter(|part| part.starts_with("/playground/"))
    {
        let asset = app.get(src).await;
        assert_eq!(asset.status(), 200, "{src}");
        let body = asset.bytes().await.unwrap();
        assert!(
            body.len() > 1000 || src.ends_with("playground.js"),
            "{src} is too small"
        );
        referenced += 1;
    }
    assert_eq!(
        referenced, 5,
        "three scripts of GraphiQL and React, its stylesheet, and our set-up"
    );
    let missing = app.get("/playground/assets/nothing.js").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["code"],
        "NOT_FOUND"
    );

    let browser = app
        .get_with("/", &[("accept", "text/html,application/xhtml+xml")])
        .await;
    assert_eq!(
        browser.url().path(),
        "/playground",
        "a browser at / lands on the playground"
    );
    let program: serde_json::Value = app.get("/").await.json().await.unwrap();
    assert_eq!(program["graphql"], "/graphql");
}

/// What the browser test needs, or why it cannot run here.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let playwright =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("playground/node_modules/playwright-core");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is not installed".into());
    }
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (Debian's chromium; scripts/test.sh installs it)",
            chromium.display()
        ));
    }
    if !playwright.exists() {
        return Err(
            "playground/node_modules is missing (scripts/test.sh runs playground/build.sh --check)"
                .into(),
        );
    }
    Ok((chromium, playwright))
}

#[tokio::test]
async fn the_playground_runs_a_query_in_a_real_browser() {
    let test = "the_playground_runs_a_query_in_a_real_browser";
    let (chromium, _) = match browser_tools() {
        Ok(tools) => tools,
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the browser test: {reason}")
        }
        Err(reason) => return report_skip(test, &reason),
    };
    let app = common::embedded(Options::default()).await;
    // Something for the first example (a filtered listing) to find.
    app.ok(
        "mutation { createService(input: {id: \"edge.camera-svc\", needs: {ram: 2, \
         preinstalledLibraries: [{name: \"tensorflow\", version: \">=2.12,<3\"}]}}) { id } }",
        json!({}),
    )
    .await;
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground.png");
    let output = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/playground/test/browser.mjs"
        ))
        .arg(format!("http://{}", app.addr))
        .arg(&screenshot)
        .arg("edge.camera-svc")
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot was kept"
    );
}
