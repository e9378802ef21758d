//! Security headers on every response. Pages (the catalogue, `/docs`, the playground) and the files they load get
//! [`page_policy`]: only this server's scripts, styles, images and fonts (everything is vendored, no CDN), the one
//! inline script (the catalogue's import map) allowed by its hash. Everything else (JSON, downloads, errors) gets
//! [`API_POLICY`], which lets nothing run: a file uploaded as HTML or SVG and opened from its download URL cannot
//! act as this origin (downloads are also `attachment`s, and `nosniff` stops browsers guessing a type).

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// What a response that is not a page may do in a browser: nothing.
pub const API_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox";

/// Inline `<script>` elements of our pages, allowed by hash rather than `'unsafe-inline'`.
const INLINE_SCRIPTS: &[&[u8]] = &[include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/ui/index.html"
))];

/// The policy of our pages and their files, computed once from the pages' inline scripts.
pub fn page_policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hashes: String = INLINE_SCRIPTS
            .iter()
            .flat_map(|page| inline_scripts(page))
            .map(|script| format!(" 'sha256-{}'", STANDARD.encode(Sha256::digest(script))))
            .collect();
        // `data:` images and fonts: the vendored stylesheets embed theirs. `worker-src`: the catalogue's download
        // worker.
        let policy = format!(
            "default-src 'self'; script-src 'self'{hashes}; style-src 'self'; img-src 'self' data:; \
             font-src 'self' data:; connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'"
        );
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(API_POLICY))
    })
}

/// The contents of the `<script>` elements of a page that have no `src`.
fn inline_scripts(page: &[u8]) -> Vec<&[u8]> {
    let mut scripts = Vec::new();
    let mut rest = page;
    while let Some(start) = find(rest, b"<script") {
        rest = &rest[start..];
        let Some(open_end) = find(rest, b">") else {
            break;
        };
        let tag = &rest[..open_end];
        let body = &rest[open_end + 1..];
        let Some(close) = find(body, b"</script>") else {
            break;
        };
        if find(tag, b" src=").is_none() {
            scripts.push(&body[..close]);
        }
        rest = &body[close..];
    }
    scripts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Marks a response as a page (or a file of one): it gets [`page_policy`] instead of [`API_POLICY`].
pub fn as_page(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, page_policy().clone());
}

/// The headers every response carries; a page's own policy is kept.
pub async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_POLICY),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_and_hashed() {
        let page = b"<script src=\"/a.js\"></script><script type=\"importmap\">{\"imports\":{}}</script>\n<script>x()</script>";
        assert_eq!(
            inline_scripts(page),
            vec![&b"{\"imports\":{}}"[..], &b"x()"[..]]
        );
        // The catalogue's import map is the one inline script of our pages, and the policy allows exactly it.
        let policy = page_policy().to_str().unwrap();
        assert_eq!(policy.matches("'sha256-").count(), 1, "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }
}
