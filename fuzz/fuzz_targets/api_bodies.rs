//! Request bodies and query strings of the local API, through the real
//! router, auth and handlers onto a real journal. Whatever a handheld or
//! central sends, the answer is an error body or a success, never a 500
//! or a panic.
#![no_main]

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use storegate::api::{self, ApiState, Tokens};
use storegate::config::Durability;
use storegate::db::{self, writer::Writer};
use storegate::domain::Projections;
use storegate::sync::Link;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-staff-token";

struct Api {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

static API: LazyLock<Api> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("storegate.db");
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, format!("{TOKEN}\n")).expect("token file");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conn = db::open_write(&db_path, Durability::Normal).expect("database");
    let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default())).expect("writer");
    std::mem::forget(thread);
    let (link_tx, link) = tokio::sync::watch::channel(Link::Unknown);
    std::mem::forget(link_tx);
    let tokens = Tokens::new(Some(tokens_file.clone()), Some(tokens_file));
    let state = ApiState::new(
        "fuzz".into(),
        db_path,
        writer,
        Default::default(),
        link,
        tokens,
    );
    let router = {
        let _guard = runtime.enter();
        api::router(state)
    };
    Api {
        runtime,
        router,
        _dir: dir,
    }
});

const POSTS: [&str; 4] = [
    "/v1/counts",
    "/v1/counts/rfid",
    "/v1/adjustments",
    "/v1/receipts",
];

fn request(data: &[u8]) -> Option<Request<Body>> {
    let (&which, rest) = data.split_first()?;
    let builder = Request::builder().header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let which = usize::from(which);
    if let Some(path) = POSTS.get(which % 8) {
        return builder
            .method("POST")
            .uri(*path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(rest.to_vec()))
            .ok();
    }
    // GETs: the rest is a path segment or query string.
    let text: String = rest.iter().map(|b| format!("%{b:02X}")).collect();
    let uri = match which % 8 {
        4 => format!("/v1/skus/{text}"),
        5 => format!(
            "/v1/events?since={}",
            String::from_utf8_lossy(rest)
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
        ),
        6 => format!("/v1/alerts?open={text}"),
        _ => format!(
            "/v1/events?since=0&limit={}",
            String::from_utf8_lossy(rest)
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
        ),
    };
    builder.method("GET").uri(uri).body(Body::empty()).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else {
        return;
    };
    let api = &*API;
    let (status, body) = api.runtime.block_on(async {
        let response = api.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, body)
    });
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        String::from_utf8_lossy(&body)
    );
    if !status.is_success() {
        let err: serde_json::Value = serde_json::from_slice(&body).expect("error body is JSON");
        assert!(
            err["error"].is_object() || err["error"].is_string(),
            "{err}"
        );
    }
});
