//! The HTTP API in process: `app(state)` driven request by request (`tower::ServiceExt::oneshot`)
//! over an in-memory SQLite store and a generated software key, with the state built as the
//! server's start-up builds it. Routing, the role matrix, validation and error bodies; no
//! PostgreSQL, HSM, JDK or binary needed (`cargo test -p auditseal-server`). What needs real
//! processes and services is in the end-to-end crate (tests/).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use auditseal_core::config::{DeviceKind, KeyMode, Overrides, Settings, load_keys};
use auditseal_core::device::{LogDevice, SequentialDevice};
use auditseal_core::store;
use auditseal_server::auth::{Auth, ConnectionInfo};
use auditseal_server::{ServerConfig, startup};

struct Api {
    app: Router,
    admin: String,
    _dir: tempfile::TempDir,
}

/// A server's state on an in-memory database, with its first admin token; `config` is a
/// configuration file's text.
async fn api(config: &str) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auditseal.toml");
    std::fs::write(&file, config).unwrap();
    let settings = Settings::resolve_with_env(
        Overrides {
            config: Some(file),
            data_dir: Some(dir.path().to_path_buf()),
            database_url: Some("sqlite::memory:".into()),
            node_id: Some("api-test".into()),
            ..Default::default()
        },
        Vec::new(),
    )
    .unwrap();
    let cfg = ServerConfig::from_section(&settings.file.server);
    assert_eq!(cfg.device, DeviceKind::Sequential);
    let (keys, _) = load_keys(&settings.protection, &settings.data_dir, KeyMode::Server).unwrap();
    let store = store::open(&settings.database_url).await.unwrap();
    store.migrate().await.unwrap();
    let device: Arc<dyn LogDevice> = Arc::new(
        SequentialDevice::start(
            store.clone(),
            settings.node_id.clone(),
            keys.current.clone(),
        )
        .await
        .unwrap(),
    );
    let (_, token_file) = auditseal_server::auth::bootstrap_admin_token(
        &store,
        device.as_ref(),
        &settings.data_dir,
        false,
    )
    .await
    .unwrap()
    .expect("a first admin token");
    let admin = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    let subjects = settings
        .file
        .auth
        .clients
        .iter()
        .map(|c| (c.subject.clone(), c.role));
    let certs = auditseal_core::access::certificate_roles(subjects).unwrap();
    let auth = Auth::start(store.clone(), certs).await.unwrap();
    let state = startup::build_state(&cfg, &settings, store, device, keys, auth);
    Api {
        app: auditseal_server::app(state),
        admin,
        _dir: dir,
    }
}

impl Api {
    /// One request: method, path, bearer token (None: no credentials), JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or_default().to_string()))
            .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    /// A new API token of `role`, created by the admin through the API.
    async fn token(&self, name: &str, role: &str) -> String {
        let body = json!({ "name": name, "role": role }).to_string();
        let (st, v) = self
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(&self.admin),
                Some(&body),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

fn event(event_type: &str) -> String {
    json!({
        "eventType": event_type,
        "eventStatus": "SUCCESS",
        "authToken": "CN=signer",
        "service": "SIGNSERVER",
        "module": "WORKER",
        "additionalDetails": { "worker": "PDFSigner" }
    })
    .to_string()
}

/// An error body names its code and says why.
fn assert_error(v: &Value, code: &str, needle: &str) {
    assert_eq!(v["error"], code, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{v}");
}

#[tokio::test]
async fn routes_answer_and_everything_but_health_needs_credentials() {
    let api = api("").await;
    let (st, v) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for path in [
        "/api/v1/events",
        "/api/v1/keys",
        "/api/v1/tokens",
        "/api/v1/nothing-here",
    ] {
        let (st, v) = api.call(Method::GET, path, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (st, v) = api
        .call(Method::GET, "/api/v1/events", Some("ast_not-a-token"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let admin = Some(api.admin.as_str());
    let (st, v) = api
        .call(Method::GET, "/api/v1/nothing-here", admin, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found", "docs/API.md");
    let (st, v) = api
        .call(
            Method::POST,
            "/api/v1/events",
            admin,
            Some(&event("PROCESS")),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let pk = v["pk"].as_str().unwrap().to_string();
    let (st, v) = api
        .call(Method::GET, &format!("/api/v1/events/{pk}"), admin, None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["eventType"], "PROCESS", "{v}");
    let (st, v) = api.call(Method::GET, "/api/v1/keys", admin, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["keys"][0]["keyid"], 1, "{v}");
}

/// Who may do what (docs/API.md "Roles"): ingest adds events, auditor reads, verifies and
/// exports, admin does everything.
#[tokio::test]
async fn the_role_matrix() {
    let api = api("").await;
    let ingest = api.token("signer-1", "ingest").await;
    let auditor = api.token("auditor-1", "auditor").await;
    let admin = api.admin.clone();
    let post = |t: String| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/api/v1/events",
                Some(&t),
                Some(&event("PROCESS")),
            )
            .await
            .0
        }
    };
    let get = |t: String, path: &'static str| {
        let api = &api;
        async move { api.call(Method::GET, path, Some(&t), None).await.0 }
    };
    assert_eq!(post(ingest.clone()).await, StatusCode::CREATED);
    assert_eq!(post(auditor.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(post(admin.clone()).await, StatusCode::CREATED);
    for path in ["/api/v1/events", "/api/v1/events:count", "/api/v1/keys"] {
        assert_eq!(
            get(ingest.clone(), path).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(get(auditor.clone(), path).await, StatusCode::OK, "{path}");
        assert_eq!(get(admin.clone(), path).await, StatusCode::OK, "{path}");
    }
    assert_eq!(
        get(auditor.clone(), "/api/v1/tokens").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(admin.clone(), "/api/v1/tokens").await, StatusCode::OK);
    let (st, v) = api
        .call(Method::POST, "/api/v1/verify", Some(&ingest), Some("{}"))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = api
        .call(Method::POST, "/api/v1/verify", Some(&auditor), Some("{}"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "SUCCESS", "{v}");
    // Only an admin revokes; a revoked token is refused from then on.
    let (st, _) = api
        .call(
            Method::DELETE,
            "/api/v1/tokens/signer-1",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api
        .call(
            Method::DELETE,
            "/api/v1/tokens/signer-1",
            Some(&admin),
            None,
        )
        .await;
    assert!(st.is_success(), "{st}");
    assert_eq!(post(ingest).await, StatusCode::UNAUTHORIZED);
}

/// A client certificate's subject, as the TLS layer hands it on, maps to its role.
#[tokio::test]
async fn a_mapped_certificate_subject_has_its_role() {
    let api = api(
        "[[auth.clients]]\nsubject = 'CN=Auditor One,O=Example'\nrole = 'auditor'\n\
         [server.tls]\ncert_file = 'x.pem'\nkey_file = 'x.key'\nclient_ca_file = 'ca.pem'\n",
    )
    .await;
    let with_subject = |subject: &str, method: Method, body: Option<String>| {
        let mut req = Request::builder()
            .method(method)
            .uri("/api/v1/events")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.unwrap_or_default()))
            .unwrap();
        req.extensions_mut().insert(ConnectionInfo {
            peer: "127.0.0.1:40000".parse().unwrap(),
            client_subject: Some(auditseal_core::access::normalize_dn(subject)),
        });
        req
    };
    let (st, v) = api
        .send(with_subject("CN=Auditor One, O=Example", Method::GET, None))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = api
        .send(with_subject(
            "CN=Auditor One,O=Example",
            Method::POST,
            Some(event("PROCESS")),
        ))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = api
        .send(with_subject("CN=Somebody Else", Method::GET, None))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
}

/// Bad input gets a 400 that says what is wrong, and stores nothing.
#[tokio::test]
async fn validation_errors_are_clear_and_change_nothing() {
    let api = api("").await;
    let admin = Some(api.admin.as_str());
    let count = || async {
        let (st, v) = api
            .call(Method::GET, "/api/v1/events:count", admin, None)
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["count"].as_i64().unwrap()
    };
    let before = count().await;
    let cases: [(&str, &str); 6] = [
        ("{", "JSON"),
        (&format!("{}xyz", event("PROCESS")), "after"),
        (r#"{"eventStatus":"SUCCESS"}"#, "eventType"),
        (
            r#"{"eventType":"X","eventStatus":"MAYBE","authToken":"a","service":"S","module":"M"}"#,
            "eventStatus",
        ),
        (
            r#"{"eventType":"LOG_VERIFY","eventStatus":"SUCCESS","authToken":"a","service":"AUDITSEAL","module":"M"}"#,
            "reserved",
        ),
        (
            r#"{"eventType":"X","eventStatus":"SUCCESS","authToken":"a","service":"S","module":"M","additionalDetails":{"auditseal.submitter":"token:admin"}}"#,
            "reserved",
        ),
    ];
    for (body, needle) in cases {
        let (st, v) = api
            .call(Method::POST, "/api/v1/events", admin, Some(body))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"], "bad_request", "{body}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{body}: {v}"
        );
    }
    let (st, v) = api
        .call(Method::POST, "/api/v1/events:batch", admin, Some("[]"))
        .await;
    assert!(st.is_client_error(), "{v}");
    let (st, v) = api
        .call(
            Method::GET,
            "/api/v1/events?limit=not-a-number",
            admin,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(count().await, before);
}
