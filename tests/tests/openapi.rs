//! The OpenAPI document (server/openapi.json, served at `/api/v1/openapi.json`) against the real
//! router, both ways: every documented operation is routed on a running server, and every
//! `.route(...)` in server/src/lib.rs is documented. Plus the document's own consistency.

use std::collections::BTreeSet;
use std::time::Duration;

use auditseal_e2e::{Server, workspace_root};
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// (path, lower-case method) pairs.
type Operations = BTreeSet<(String, String)>;

fn documented(doc: &Value) -> Operations {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut ops = Operations::new();
    for (path, item) in paths {
        let item = item.as_object().expect("path item is an object");
        for m in METHODS {
            if item.contains_key(m) {
                ops.insert((path.clone(), m.to_string()));
            }
        }
    }
    ops
}

#[derive(Debug, PartialEq)]
enum Tok {
    Str(String),
    Ident(String),
    Punct(char),
}

/// Rust source as string literals, identifiers and punctuation; comments dropped. Enough for
/// router code (no raw strings or char literals containing quotes or parens are expected).
fn tokens(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    s.push(ch);
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            if !c.is_whitespace() {
                out.push(Tok::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// Every `.route("PATH", <method router>)` in the source, with each method the method router
/// names at its top level: `get(h)`, `axum::routing::post(h)`, and chained `.post(h)` /
/// `.get(h)` (a route with two methods gives both). Layers and handler paths are nested deeper
/// and ignored.
fn routed_in_source(src: &str) -> Operations {
    let t = tokens(src);
    let mut ops = Operations::new();
    let mut i = 0;
    while i + 3 < t.len() {
        let is_route = t[i] == Tok::Punct('.')
            && t[i + 1] == Tok::Ident("route".into())
            && t[i + 2] == Tok::Punct('(');
        if !is_route {
            i += 1;
            continue;
        }
        let Tok::Str(path) = &t[i + 3] else {
            panic!("a .route( whose path is not a string literal: teach this extractor");
        };
        let mut depth = 1;
        let mut j = i + 4;
        let mut found = 0;
        while depth > 0 {
            match t.get(j) {
                None => panic!("unbalanced .route({path:?} ..."),
                Some(Tok::Punct('(')) => depth += 1,
                Some(Tok::Punct(')')) => depth -= 1,
                Some(Tok::Ident(name))
                    if depth == 1
                        && METHODS.contains(&name.as_str())
                        && t.get(j + 1) == Some(&Tok::Punct('(')) =>
                {
                    ops.insert((path.clone(), name.clone()));
                    found += 1;
                }
                _ => {}
            }
            j += 1;
        }
        assert!(found > 0, "no method found for the route {path:?}");
        i = j;
    }
    ops
}

#[test]
fn extractor_reads_chained_and_layered_routes() {
    let src = r#"
        // .route("/commented", get(x))
        Router::new()
            .route("/a", get(routes::a::get).post(routes::a::create))
            .route(
                "/b:batch", /* post( */
                axum::routing::post(routes::b::post_it)
                    .layer(DefaultBodyLimit::max(limit * 16)),
            )
            .route("/c/{pk}", get(h)).fallback(|| async { get(1) })
    "#;
    let got = routed_in_source(src);
    let want: Operations = [
        ("/a", "get"),
        ("/a", "post"),
        ("/b:batch", "post"),
        ("/c/{pk}", "get"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    assert_eq!(got, want);
}

/// Resolves a local JSON pointer (`#/a/b~1c`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn check_document(doc: &Value) {
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi is {}",
        doc["openapi"]
    );
    let mut ids = BTreeSet::new();
    for (path, m) in documented(doc) {
        let op = &doc["paths"][&path][&m];
        let responses = op["responses"].as_object();
        assert!(
            responses.is_some_and(|r| !r.is_empty()),
            "{m} {path} has no responses"
        );
        if let Some(id) = op["operationId"].as_str() {
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
        }
        // Each {param} of the path is declared.
        for name in path.split('{').skip(1).filter_map(|s| s.split_once('}')) {
            let declared = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    let p = p["$ref"]
                        .as_str()
                        .and_then(|r| resolve(doc, r))
                        .unwrap_or(p);
                    p["in"] == "path" && p["name"] == name.0
                })
            });
            assert!(
                declared,
                "{m} {path}: path parameter {} not declared",
                name.0
            );
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        assert!(resolve(doc, r).is_some(), "$ref {r} does not resolve");
    }
}

/// Whether the router sent the request to a route: not the fallback (404 `no such endpoint`)
/// and not 405 (a routed path without that method).
async fn routed(
    client: &reqwest::Client,
    s: &Server,
    method: &str,
    path: &str,
) -> (bool, u16, String) {
    let url = format!(
        "{}{}",
        s.url,
        path.replace("{pk}", "no-such-pk")
            .replace("{name}", "no-such-token")
    );
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = client.request(method.clone(), &url);
    if method == reqwest::Method::POST {
        // Minimal bodies: the event routes refuse them (400, nothing written); verify runs.
        req = req
            .header("content-type", "application/json")
            .body(if path.ends_with(":batch") { "[]" } else { "{}" });
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    // The stream never ends: its status line is all we need.
    let body = if path.ends_with("/stream") {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    let fallback = status == 404 && body.contains("no such endpoint");
    (!fallback && status != 405, status, body)
}

#[tokio::test]
async fn document_matches_the_router_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "node1"]).unwrap();
    let client = auditseal_e2e::client_builder(&s.token)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let resp = client
        .get(format!("{}/api/v1/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let doc: Value = serde_json::from_str(&resp.text().await.unwrap()).expect("valid JSON");
    check_document(&doc);
    let in_doc = documented(&doc);

    // Documented -> routed, on the running server.
    for (path, m) in &in_doc {
        let (ok, status, body) = routed(&client, &s, m, path).await;
        assert!(
            ok,
            "{m} {path} is documented but not routed: {status} {body}"
        );
    }

    // Routed -> documented, from the router's source.
    let src = std::fs::read_to_string(workspace_root().join("server/src/lib.rs")).unwrap();
    assert!(
        !src.contains(".nest(") && !src.contains(".route_service("),
        "lib.rs nests routers or services: teach routed_in_source about them"
    );
    let in_router = routed_in_source(&src);
    let undocumented: Vec<_> = in_router.difference(&in_doc).collect();
    let unrouted: Vec<_> = in_doc.difference(&in_router).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed in server/src/lib.rs but not in server/openapi.json: {undocumented:?}; \
         documented but not in lib.rs: {unrouted:?}"
    );

    // And what is neither is not answered.
    for (m, path) in [
        ("get", "/api/v1/nope"),
        ("get", "/api/v1/events:nope"),
        ("post", "/api/v1/keys"),
        ("delete", "/api/v1/events"),
        ("put", "/api/v1/openapi.json"),
        ("put", "/api/v1/verify"),
    ] {
        assert!(!in_doc.contains(&(path.to_string(), m.to_string())));
        let (ok, status, body) = routed(&client, &s, m, path).await;
        assert!(
            !ok,
            "{m} {path} is answered ({status} {body}) but not documented"
        );
    }
    s.stop();
}
