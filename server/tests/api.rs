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
    state: auditseal_server::AppState,
    admin: String,
    _dir: tempfile::TempDir,
}

/// A server's state on an in-memory database, with its first admin token; `config` is a
/// configuration file's text.
async fn api(config: &str) -> Api {
    api_with(config, |d| d).await
}

/// `api` with the log device as `wrap` makes it from the server's own.
async fn api_with(
    config: &str,
    wrap: impl FnOnce(Arc<dyn LogDevice>) -> Arc<dyn LogDevice>,
) -> Api {
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
    let state = auditseal_server::AppState::from(startup::build_state(
        &cfg,
        &settings,
        store,
        wrap(device),
        keys,
        auth,
    ));
    Api {
        app: auditseal_server::app(state.clone()),
        state,
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

    /// A GET on `app` whose answer is text: status, content type and body.
    async fn text(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String, String) {
        let mut req = Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
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

/// The value of the sample `series` (name and labels exactly as written) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` on the main listener is for auditors and admins; a posted event moves its
/// counter; the second listener's router serves it without credentials, and nothing else.
#[tokio::test]
async fn metrics_need_the_auditor_role_and_count_ingested_events() {
    let api = api("").await;
    let ingest = api.token("signer-1", "ingest").await;
    let auditor = api.token("auditor-1", "auditor").await;
    let (st, _, body) = Api::text(&api.app, "/metrics", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let (st, _, body) = Api::text(&api.app, "/metrics", Some(&ingest)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let stored = r#"auditseal_events_ingested_total{device="sequential",result="stored"}"#;
    let (st, content_type, before) = Api::text(&api.app, "/metrics", Some(&auditor)).await;
    assert_eq!(st, StatusCode::OK, "{before}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    // The first admin token's TOKEN_CREATE and the two tokens' were logged by the server
    // itself, not ingested.
    assert_eq!(sample(&before, stored), None, "{before}");
    for _ in 0..2 {
        let (st, v) = api
            .call(
                Method::POST,
                "/api/v1/events",
                Some(&ingest),
                Some(&event("PROCESS")),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = api
        .call(Method::POST, "/api/v1/events", Some(&ingest), Some("{"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (_, _, after) = Api::text(&api.app, "/metrics", Some(&api.admin)).await;
    assert_eq!(sample(&after, stored), Some(2.0), "{after}");
    let refused = format!(
        r#"auditseal_ingest_refused_total{{device="sequential",reason="{}"}}"#,
        v["error"].as_str().unwrap()
    );
    assert_eq!(sample(&after, &refused), Some(1.0), "{after}");
    assert_eq!(
        sample(
            &after,
            r#"auditseal_ingest_duration_seconds_count{device="sequential"}"#
        ),
        Some(2.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"auditseal_auth_failures_total{reason="no_credentials"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "auditseal_auth_forbidden_total"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "auditseal_node_lock_held"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "auditseal_database_up"),
        Some(1.0),
        "{after}"
    );
    assert!(after.contains("auditseal_build_info{version="), "{after}");
    // A verification is counted with the rows it read.
    let (st, v) = api
        .call(Method::POST, "/api/v1/verify", Some(&auditor), Some("{}"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, _, after) = Api::text(&api.app, "/metrics", Some(&auditor)).await;
    assert_eq!(
        sample(
            &after,
            r#"auditseal_verify_runs_total{outcome="success",trigger="api"}"#
        ),
        Some(1.0),
        "{after}"
    );
    let rows = v["report"]["rows"].as_f64().unwrap();
    assert!(rows >= 2.0, "{v}");
    assert_eq!(
        sample(&after, "auditseal_verify_rows_total"),
        Some(rows),
        "{after}"
    );
    assert_eq!(
        sample(&after, "auditseal_verify_errors_total"),
        Some(0.0),
        "{after}"
    );
    // Asked for OpenMetrics, the answer is OpenMetrics.
    let req = Request::builder()
        .uri("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {auditor}"))
        .header(header::ACCEPT, "application/openmetrics-text;version=1.0.0")
        .body(Body::empty())
        .unwrap();
    let res = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let om = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&om).ends_with("# EOF\n"));
    // server.metrics_bind's router: no credentials, and only the metrics and the probes.
    let open = auditseal_server::metrics_app(api.state.clone());
    let (st, _, body) = Api::text(&open, "/metrics", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(sample(&body, stored), Some(2.0), "{body}");
    for (path, want) in [
        ("/livez", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/healthz", StatusCode::NOT_FOUND),
        ("/api/v1/events", StatusCode::NOT_FOUND),
    ] {
        let (st, _, body) = Api::text(&open, path, None).await;
        assert_eq!(st, want, "{path}: {body}");
    }
}

/// A log device that has lost its node's lock and found its log inconsistent.
struct Broken(Arc<dyn LogDevice>);

#[async_trait::async_trait]
impl LogDevice for Broken {
    fn node_id(&self) -> &str {
        self.0.node_id()
    }
    fn inconsistent(&self) -> Option<String> {
        Some("rows 3 to 5 are missing".into())
    }
    fn lock_held(&self) -> bool {
        false
    }
    async fn append(
        &self,
        event: auditseal_core::device::NewEvent,
    ) -> Result<auditseal_core::device::Appended, auditseal_core::device::DeviceError> {
        self.0.append(event).await
    }
    async fn append_all(
        &self,
        events: Vec<auditseal_core::device::NewEvent>,
    ) -> Result<Vec<auditseal_core::device::Appended>, auditseal_core::device::DeviceError> {
        self.0.append_all(events).await
    }
}

/// `/livez` answers while the process runs; `/readyz` is 200 when every check passes and 503
/// naming each failed check otherwise; neither needs credentials.
#[tokio::test]
async fn livez_and_readyz() {
    let api = api("").await;
    let (st, v) = api.call(Method::GET, "/livez", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "status": "live" }));
    let (st, v) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready", "{v}");

    let broken = api_with("", |d| Arc::new(Broken(d))).await;
    let (st, v) = broken.call(Method::GET, "/livez", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = broken.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "not_ready", "{v}");
    let failed: Vec<&str> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["node_lock", "log_consistent"], "{v}");
    assert!(
        v["failed"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("inconsistent"),
        "{v}"
    );
    let (_, _, text) = Api::text(&broken.app, "/metrics", Some(&broken.admin)).await;
    assert_eq!(
        sample(&text, "auditseal_node_lock_held"),
        Some(0.0),
        "{text}"
    );
}

/// `GET /api/v1/whoami` names the caller and its role, for every role; nobody without credentials.
#[tokio::test]
async fn whoami_tells_each_caller_its_role() {
    let api = api("").await;
    let ingest = api.token("signer-1", "ingest").await;
    let auditor = api.token("auditor-1", "auditor").await;
    for (token, want) in [
        (
            ingest.as_str(),
            json!({"name": "token:signer-1", "role": "ingest",
            "canIngest": true, "canAudit": false, "canAdmin": false}),
        ),
        (
            auditor.as_str(),
            json!({"name": "token:auditor-1", "role": "auditor",
            "canIngest": false, "canAudit": true, "canAdmin": false}),
        ),
        (
            api.admin.as_str(),
            json!({"name": "token:admin", "role": "admin",
            "canIngest": true, "canAudit": true, "canAdmin": true}),
        ),
    ] {
        let (st, v) = api
            .call(Method::GET, "/api/v1/whoami", Some(token), None)
            .await;
        assert_eq!((st, v), (StatusCode::OK, want));
    }
    let (st, _) = api.call(Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// The web console's files load without credentials (they hold no data), with the policy;
/// `/ui` leads to `/ui/`; nothing else under `/ui/` is served.
#[tokio::test]
async fn the_console_is_served_without_credentials() {
    let api = api("").await;
    for (path, ct) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let (st, content_type, body) = Api::text(&api.app, path, None).await;
        assert_eq!((st, content_type.as_str()), (StatusCode::OK, ct), "{path}");
        assert!(!body.is_empty());
    }
    let res = api
        .app
        .clone()
        .oneshot(Request::builder().uri("/ui/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let (st, _, _) = Api::text(&api.app, "/ui", None).await;
    assert_eq!(st, StatusCode::PERMANENT_REDIRECT);
    for path in ["/ui/secret.toml", "/ui/..%2Fadmin.token"] {
        let (st, _, _) = Api::text(&api.app, path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
    // A path beside the console is not opened up by it.
    let (st, _, _) = Api::text(&api.app, "/uix", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// `GET /api/v1/events/{pk}/proof`: auditors and admins only; a row of the sequential device is
/// protected on its own, with no batch statement or inclusion proof; an unknown pk is 404.
#[tokio::test]
async fn a_rows_proof_needs_the_auditor_role_and_a_sequential_row_has_none() {
    let api = api("").await;
    let ingest = api.token("signer-1", "ingest").await;
    let auditor = api.token("auditor-1", "auditor").await;
    let (st, v) = api
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&ingest),
            Some(&event("PROCESS")),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let path = format!("/api/v1/events/{}/proof", v["pk"].as_str().unwrap());
    let (st, v) = api.call(Method::GET, &path, Some(&ingest), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(v.get("statement").is_none(), "{v}");
    let (st, v) = api.call(Method::GET, &path, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = api.call(Method::GET, &path, Some(&auditor), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["protectionVersion"], &v["keyid"], &v["batched"]),
        (&json!(2), &json!(1), &json!(false)),
        "{v}"
    );
    assert!(v["statement"].is_null() && v["inclusion"].is_null(), "{v}");
    assert_eq!(v["verification"], json!({"valid": true}), "{v}");
    let (st, v) = api
        .call(
            Method::GET,
            "/api/v1/events/nope/proof",
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

/// `GET /api/v1/verify`: auditors and admins see where each node's log stands.
#[tokio::test]
async fn the_verify_status_needs_the_auditor_role_and_names_each_nodes_last_sequence() {
    let api = api("").await;
    let ingest = api.token("signer-1", "ingest").await;
    let auditor = api.token("auditor-1", "auditor").await;
    let (st, v) = api
        .call(Method::GET, "/api/v1/verify", Some(&ingest), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = api
        .call(Method::GET, "/api/v1/verify", Some(&auditor), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let node = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == "api-test")
        .unwrap_or_else(|| panic!("{v}"));
    // The first admin token's TOKEN_CREATE (0) and the two tokens' (1, 2).
    assert_eq!(node["lastSequenceNumber"], 2, "{v}");
    assert!(v["now"].is_i64() && v["running"].is_boolean(), "{v}");
}

/// The authToken of an HSM finding is the client's to set: past 100 sources, findings are counted
/// under one `(other sources)` series instead of a series each.
#[tokio::test]
async fn hsm_finding_sources_are_capped() {
    let api = api("").await;
    let ingest = api.token("hsm-shipper", "ingest").await;
    let body: String = (0..105)
        .map(|i| {
            json!({
                "eventType": "HSM_COUNTER_GAP",
                "eventStatus": "FAILURE",
                "authToken": format!("dinamo-{i}@host"),
                "service": "HSM",
                "module": "DINAMO",
            })
            .to_string()
                + "\n"
        })
        .collect();
    let (st, v) = api
        .call(
            Method::POST,
            "/api/v1/events:batch",
            Some(&ingest),
            Some(&body),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, _, text) = Api::text(&api.app, "/metrics", Some(&api.admin)).await;
    let series = |source: &str| {
        format!("auditseal_hsm_findings_total{{source=\"{source}\",kind=\"HSM_COUNTER_GAP\"}}")
    };
    assert_eq!(sample(&text, &series("dinamo-0@host")), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &series("dinamo-99@host")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, &series("dinamo-100@host")), None, "{text}");
    assert_eq!(
        sample(&text, &series("(other sources)")),
        Some(5.0),
        "{text}"
    );
    let own = text
        .lines()
        .filter(|l| l.starts_with("auditseal_hsm_findings_total{"))
        .count();
    assert_eq!(own, 101, "{text}");
}

/// `GET /api/v1/verify` reports at most 1,000 nodes, the first by node id, and says it left the
/// others out.
#[tokio::test]
async fn the_verify_status_reports_at_most_a_thousand_nodes() {
    let api = api("").await;
    let (_, v) = api
        .call(Method::GET, "/api/v1/verify", Some(&api.admin), None)
        .await;
    assert_eq!(v["truncated"], false, "{v}");
    // Nodes that occur only in checkpoints count as nodes of the log (the verifier reads them).
    for i in 0..1_000 {
        let c = auditseal_core::checkpoint::Checkpoint {
            node_id: format!("many-{i:04}"),
            sequence_number: 0,
            time_stamp: 1,
            head_hash: "00".repeat(32),
            kind: "checkpoint".into(),
            key_id: 1,
            statement_protection: "x".into(),
        };
        api.state.store.insert_checkpoint(&c).await.unwrap();
    }
    let (st, v) = api
        .call(Method::GET, "/api/v1/verify", Some(&api.admin), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1_000);
    assert_eq!(v["truncated"], true);
    // The first 1,000 by node id: the server's own node, api-test, then many-0000 to many-0998.
    assert_eq!(nodes[0]["nodeId"], "api-test");
    assert_eq!(nodes[1]["nodeId"], "many-0000");
    assert_eq!(nodes[999]["nodeId"], "many-0998");
    // A node with only a checkpoint stands where its checkpoint says.
    assert_eq!(nodes[999]["lastSequenceNumber"], 0);
    assert_eq!(nodes[999]["newestCheckpoint"]["sequenceNumber"], 0);
    // Its statement is not a signature: shown, but said not to verify.
    assert_eq!(nodes[999]["newestCheckpoint"]["verifies"], false);
    assert!(
        nodes[999]["newestCheckpoint"]["problem"].is_string(),
        "{}",
        nodes[999]
    );
}

/// The progress of `POST /api/v1/verify` belongs to the server that runs it: another server in
/// the same process shows no run, and can run its own meanwhile.
#[tokio::test]
async fn each_server_keeps_its_own_verify_progress() {
    let a = api("").await;
    let b = api("").await;
    let (st, v) = a
        .call(Method::POST, "/api/v1/verify", Some(&a.admin), Some("{}"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "SUCCESS", "{v}");
    let (st, v) = a
        .call(Method::GET, "/api/v1/verify", Some(&a.admin), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["running"], false, "{v}");
    let run = &v["run"];
    assert_eq!(run["outcome"], "SUCCESS", "{v}");
    assert!(run["by"].as_str().unwrap().starts_with("token:"), "{v}");
    assert!(run["finishedAt"].is_i64(), "{v}");
    let node = &run["nodes"][0];
    // The first admin token's TOKEN_CREATE (row 0), verified whole.
    assert_eq!(node["nodeId"], "api-test", "{v}");
    assert_eq!(node["done"], true, "{v}");
    assert_eq!(node["verifiedRows"], 1, "{v}");
    assert_eq!(node["expectedRows"], 1, "{v}");
    let (_, v) = b
        .call(Method::GET, "/api/v1/verify", Some(&b.admin), None)
        .await;
    assert!(v["run"].is_null() && v["running"] == false, "{v}");
}
