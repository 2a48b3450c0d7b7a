//! Embedded browser client.
//!
//! The files of `web/` (plain ES modules, no build step) are compiled into the binary with `include_dir!` and
//! served by [`router`]:
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the landing page (`web/index.html`) |
//! | `/r/{room}` | the room page (`web/room.html`); `room` must be a valid room name (protocol rules) |
//! | `/<file>` | every other file of `web/`, by its path |
//! | `/sw.js` | the service worker, with this build's hash and the list of files it keeps for offline use |
//!
//! Anything else is left to the caller's router (axum answers 404). The router has no fallback of its own, so it
//! merges with the signaling router and the binary's `/healthz` and `/metrics`.
//!
//! Caching: file names carry no content hash (no build step), so every response says `Cache-Control: no-cache`
//! and carries a strong `ETag`; browsers revalidate and get `304 Not Modified` when nothing changed. HTML pages
//! carry a strict Content-Security-Policy (same-origin scripts, styles and WebSocket only).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use include_dir::{Dir, File, include_dir};

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web");

/// The landing page, served at `/`.
const LANDING: &str = "index.html";
/// The room page, served at `/r/{room}`.
const ROOM: &str = "room.html";
/// The service worker. Served rendered: see [`service_worker`].
const SERVICE_WORKER: &str = "sw.js";
/// Longest room name the protocol accepts (docs/protocol.md).
const MAX_ROOM_LEN: usize = 64;

/// Content-Security-Policy of the HTML pages: everything from this origin only, media from the page itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Which powerful features the pages may use: camera, microphone, screen capture (own origin only).
const PERMISSIONS: &str =
    "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=(), usb=()";

/// One embedded file, ready to serve (cheap to clone: the body is static, the tag a shared header value).
#[derive(Clone)]
struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
    html: bool,
}

impl Asset {
    fn new(file: &'static File<'static>) -> Asset {
        Asset::with_body(
            &file.path().to_string_lossy(),
            Bytes::from_static(file.contents()),
        )
    }

    fn with_body(path: &str, body: Bytes) -> Asset {
        let content_type = content_type(path);
        // Computed once per file when the router is built.
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(&body)))
            .expect("a quoted hex string is a valid header value");
        Asset {
            body,
            content_type,
            etag,
            html: content_type.starts_with("text/html"),
        }
    }
}

/// The router serving the embedded client. Merge it into the application router.
pub fn router() -> Router {
    let landing = Asset::new(
        WEB.get_file(LANDING)
            .expect("web/index.html is part of the embedded client"),
    );
    let room = Asset::new(
        WEB.get_file(ROOM)
            .expect("web/room.html is part of the embedded client"),
    );

    let mut app = Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| async move { respond(&landing, &headers) }),
        )
        .route(
            "/r/{room}",
            get(
                move |Path(name): Path<String>, headers: HeaderMap| async move {
                    if valid_room(&name) {
                        respond(&room, &headers)
                    } else {
                        not_found()
                    }
                },
            ),
        );
    for (path, file) in served_files() {
        let asset = if path == SERVICE_WORKER {
            Asset::with_body(&path, service_worker(file))
        } else {
            Asset::new(file)
        };
        app = app.route(
            &format!("/{path}"),
            get(move |headers: HeaderMap| async move { respond(&asset, &headers) }),
        );
    }
    app
}

/// The files served by their path (relative to `web/`, `/`-separated): every file except editor and OS
/// droppings (dot files).
fn served_files() -> Vec<(String, &'static File<'static>)> {
    files(&WEB)
        .into_iter()
        .map(|file| (file.path().to_string_lossy().replace('\\', "/"), file))
        .filter(|(path, _)| !path.starts_with('.') && !path.contains("/."))
        .collect()
}

/// `web/sw.js` with this build filled in: `BUILD` becomes a hash over every embedded file (a new binary is a new
/// worker, and a new worker drops the old cache) and `SHELL` the paths the worker keeps for offline use, the
/// landing page at `/` included. Generated here so the list can never miss a file.
fn service_worker(template: &'static File<'static>) -> Bytes {
    let source = template.contents_utf8().expect("web/sw.js is UTF-8 text");
    let mut build: u64 = 0;
    for file in files(&WEB) {
        build = build.rotate_left(5) ^ fnv1a(file.contents());
    }
    let mut shell = vec!["/".to_owned()];
    shell.extend(
        served_files()
            .into_iter()
            .filter(|(path, _)| path != SERVICE_WORKER)
            .map(|(path, _)| format!("/{path}")),
    );
    let list = serde_json::to_string(&shell).expect("a list of strings serializes");
    let rendered = source
        .replacen(
            "const BUILD = 'dev';",
            &format!("const BUILD = '{build:016x}';"),
            1,
        )
        .replacen("const SHELL = [];", &format!("const SHELL = {list};"), 1);
    assert!(
        !rendered.contains("const BUILD = 'dev';") && !rendered.contains("const SHELL = [];"),
        "web/sw.js declares `const BUILD = 'dev';` and `const SHELL = [];` for the server to fill in"
    );
    Bytes::from(rendered)
}

/// Every file below `dir`, depth first.
fn files(dir: &'static Dir<'static>) -> Vec<&'static File<'static>> {
    let mut out: Vec<&'static File<'static>> = dir.files().collect();
    for sub in dir.dirs() {
        out.extend(files(sub));
    }
    out
}

/// Room names follow the protocol: 1–64 characters of `[A-Za-z0-9_-]`.
fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn respond(asset: &Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, asset.etag.as_bytes()));
    let mut response = if fresh {
        Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
    } else {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, asset.content_type)
            .body(Body::from(asset.body.clone()))
    }
    .expect("static status and header values form a valid response");
    let headers = response.headers_mut();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers, asset.html);
    response
}

fn not_found() -> Response {
    let mut response = Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(
            "Not found. Room names are 1 to 64 letters, digits, '-' or '_'.\n",
        ))
        .expect("static status and header values form a valid response");
    security_headers(response.headers_mut(), false);
    response
}

fn security_headers(headers: &mut HeaderMap, html: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert("permissions-policy", HeaderValue::from_static(PERMISSIONS));
        headers.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
}

/// `If-None-Match` holds `*` or a list of (possibly weak) entity tags.
fn etag_matches(if_none_match: &str, etag: &[u8]) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

/// Content types by extension. JavaScript modules must be `text/javascript` (browsers refuse module scripts
/// served with a non-JavaScript type).
fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => match mime_guess::from_ext(&ext).first_raw() {
            Some(mime) => mime,
            None => "application/octet-stream",
        },
    }
}

/// FNV-1a, 64 bits: a stable content hash for entity tags (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn serves_the_landing_page_at_root() {
        let response = get("/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&response, "cache-control"), "no-cache");
        assert!(header(&response, "content-security-policy").contains("script-src 'self'"));
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let html = body(response).await;
        assert!(
            html.contains("/js/landing.js"),
            "the landing page loads its module"
        );
    }

    #[tokio::test]
    async fn serves_the_room_page_for_valid_room_names() {
        for path in ["/r/x", "/r/brave-otter-42", "/r/A_b-9"] {
            let response = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&response, "content-type"),
                "text/html; charset=utf-8"
            );
            let html = body(response).await;
            assert!(html.contains("/js/room.js"), "{path} serves the room page");
        }
    }

    #[tokio::test]
    async fn refuses_invalid_room_names() {
        let long = format!("/r/{}", "a".repeat(MAX_ROOM_LEN + 1));
        for path in ["/r/a.b", "/r/%20", "/r/caf%C3%A9", long.as_str()] {
            let response = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let longest = format!("/r/{}", "a".repeat(MAX_ROOM_LEN));
        assert_eq!(get(&longest, &[]).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_modules_as_javascript() {
        let response = get("/js/room.js", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            "text/javascript; charset=utf-8"
        );
        assert!(!body(response).await.is_empty());
        let css = get("/app.css", &[]).await;
        assert_eq!(css.status(), StatusCode::OK);
        assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    }

    #[tokio::test]
    async fn every_embedded_module_is_javascript() {
        let mut modules = 0;
        for file in files(&WEB) {
            let path = file.path().to_string_lossy().replace('\\', "/");
            if path.ends_with(".js") {
                modules += 1;
                let response = get(&format!("/{path}"), &[]).await;
                assert_eq!(response.status(), StatusCode::OK, "{path}");
                assert_eq!(
                    header(&response, "content-type"),
                    "text/javascript; charset=utf-8",
                    "{path}"
                );
            }
        }
        assert!(
            modules >= 3,
            "the client is made of several modules, found {modules}"
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        for path in [
            "/nope",
            "/js/nope.js",
            "/r",
            "/r/",
            "/r/x/y",
            "/../Cargo.toml",
        ] {
            assert_eq!(
                get(path, &[]).await.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn revalidation_answers_304() {
        let first = get("/js/room.js", &[]).await;
        let etag = header(&first, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong etag: {etag}"
        );
        let again = get("/js/room.js", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body(again).await.is_empty());
        let weak = get(
            "/js/room.js",
            &[("if-none-match", &format!("\"other\", W/{etag}"))],
        )
        .await;
        assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
        let stale = get("/js/room.js", &[("if-none-match", "\"0000\"")]).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn head_requests_work() {
        let request = Request::builder()
            .method("HEAD")
            .uri("/")
            .body(Body::empty())
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/b.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("icon.svg"), "image/svg+xml");
        assert_eq!(content_type("p.png"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[tokio::test]
    async fn the_service_worker_keeps_every_served_file_of_this_build() {
        let response = get("/sw.js", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            "text/javascript; charset=utf-8"
        );
        let script = body(response).await;
        let build = script
            .split("const BUILD = '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("sw.js declares BUILD");
        assert_eq!(build.len(), 16, "BUILD is this build's hash, not {build:?}");
        assert!(build.bytes().all(|b| b.is_ascii_hexdigit()));
        let list = script
            .split("const SHELL = ")
            .nth(1)
            .and_then(|rest| rest.split(";\n").next())
            .expect("sw.js declares SHELL");
        let shell: Vec<String> = serde_json::from_str(list).expect("SHELL is a JSON list");
        for path in [
            "/",
            "/room.html",
            "/app.css",
            "/js/room.js",
            "/js/pwa.js",
            "/manifest.webmanifest",
            "/icons/icon-192.png",
        ] {
            assert!(shell.iter().any(|p| p == path), "{path} is kept offline");
        }
        assert!(
            !shell.iter().any(|p| p == "/sw.js"),
            "the worker does not cache itself"
        );
        // Every path in the list is served (the worker's install fails as a whole on one 404).
        for path in &shell {
            assert_eq!(get(path, &[]).await.status(), StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn the_manifest_is_served_as_a_web_app_manifest() {
        let response = get("/manifest.webmanifest", &[]).await;
        assert_eq!(
            header(&response, "content-type"),
            "application/manifest+json"
        );
        let manifest: serde_json::Value =
            serde_json::from_str(&body(response).await).expect("the manifest is JSON");
        assert_eq!(manifest["start_url"], "/");
        assert_eq!(manifest["display"], "standalone");
        let icons = manifest["icons"].as_array().expect("icons");
        for icon in icons {
            let src = icon["src"].as_str().expect("icon src");
            assert_eq!(get(src, &[]).await.status(), StatusCode::OK, "{src}");
        }
    }
}
