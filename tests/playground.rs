//! The GraphiQL playground: served offline from the binary, and working in a real browser.

mod common;

use common::{browser, test_config};
use serde_json::json;

#[tokio::test]
async fn playground_and_its_assets_come_from_the_binary() {
    let app = common::embedded(test_config()).await;
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
            body.len() > 1000 || src.ends_with("playground.js") || src.ends_with("playground.css"),
            "{src} is too small"
        );
        referenced += 1;
    }
    assert_eq!(
        referenced, 6,
        "three scripts of GraphiQL and React, its stylesheet, and our set-up and style"
    );
    let missing = app.get("/playground/assets/nothing.js").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["code"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn the_playground_runs_a_query_in_a_real_browser() {
    let test = "the_playground_runs_a_query_in_a_real_browser";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let app = common::embedded(test_config()).await;
    // Something for the first example (a filtered listing) to find.
    app.ok(
        "mutation { createService(input: {id: \"edge.camera-svc\", needs: {ram: 2, \
         preinstalledLibraries: [{name: \"tensorflow\", version: \">=2.12,<3\"}]}}) { id } }",
        json!({}),
    )
    .await;
    let screenshot = browser::screenshots().join("playground.png");
    browser::run_script(
        &chromium,
        "browser.mjs",
        &[
            format!("http://{}", app.addr),
            screenshot.display().to_string(),
            "edge.camera-svc".into(),
        ],
    )
    .await;
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot was kept"
    );
}

/// With tokens: a refused subscription is a message, not a page error; the schema follows the Headers tab.
#[tokio::test]
async fn the_playground_with_tokens_refetches_the_schema_and_explains_refusals() {
    let test = "the_playground_with_tokens_refetches_the_schema_and_explains_refusals";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let read = "read-token-for-graphiql";
    let app = common::embedded(common::config_with(|c| {
        c.auth = common::tokens(&[read], &["write-token-for-graphiql"], false);
    }))
    .await;
    browser::run_script(
        &chromium,
        "refused.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
            read.into(),
        ],
    )
    .await;
}
