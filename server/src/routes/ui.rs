//! `GET /ui/`: the auditors' web console (docs/UI.md). Three static files built into the binary,
//! served without credentials (they hold no data: the page asks the API for everything, with
//! the token the user signs in with). Every answer carries a strict Content-Security-Policy: no
//! inline script or style, nothing from another origin, no framing.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// The console's files: (name, content type, body).
const FILES: [(&str, &str, &str); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
    // Else the browser asks for /favicon.ico, which needs credentials: a 401 logged per visit.
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../ui/favicon.svg"),
    ),
];

/// Only this origin's script, style and API; no plugins, no base or form tricks, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `GET /ui`: to the console's page, so relative asset paths resolve under `/ui/`.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/{file}`: the script, style sheet and icon; 404 for any other name.
pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return crate::error::ApiError::not_found("no such file in the web console")
            .into_response();
    };
    let mut resp = (StatusCode::OK, *body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small files, changed with the binary: always revalidated, never stale after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_policy_and_nothing_else_is() {
        for (name, ct, body) in FILES {
            let r = serve(name);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert!(!body.is_empty());
        }
        for name in ["", "../Cargo.toml", "index.htm", "app.js.map"] {
            assert_eq!(serve(name).status(), StatusCode::NOT_FOUND, "{name}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = FILES[0].2;
        // Every <script> loads a file; no style element or attribute, no event handler.
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: {tag}");
        }
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "an inline event handler (on...=)");
        assert!(!CSP.contains("unsafe"));
    }
}
