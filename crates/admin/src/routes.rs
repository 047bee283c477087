//! Routing of an admitted request to the backend, and the JSON wire form of every answer
//! (errors too: `{"ok": false, "error": "..."}`, so the page and the CLI read one shape).

use crate::backend::{ActionError, ActionResult, AdminBackend, ServerAction};
use crate::page::render_overview;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use tandem_status::AdminEndpoint;

pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    respond(status, "application/json", body)
}

/// An error answer: `{"ok": false, "error": message}`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "ok": false, "error": message }),
    )
}

fn action_response(result: ActionResult) -> Response<Full<Bytes>> {
    match result {
        Ok(message) => json(
            StatusCode::OK,
            &serde_json::json!({ "ok": true, "message": message }),
        ),
        Err(error) => error_response(
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error.message,
        ),
    }
}

pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = segment
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) async fn route<B: AdminBackend>(
    parts: &Parts,
    backend: &B,
    endpoint: &AdminEndpoint,
    peer: &str,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    let method = &parts.method;
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, []) => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            render_overview(&backend.status()),
        ),
        (&Method::GET, ["api", "status"]) => json(StatusCode::OK, &backend.status()),
        (&Method::GET, ["api", "admin"]) => json(StatusCode::OK, endpoint),
        (&Method::GET, ["metrics"]) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            backend.metrics(),
        ),
        (&Method::POST, ["api", "servers", service, server, action]) => {
            let close_existing = query
                .split('&')
                .any(|pair| pair == "close=1" || pair == "close=true");
            let action = match *action {
                "online" => ServerAction::Online,
                "drain" => ServerAction::Drain,
                "halt" => ServerAction::Halt { close_existing },
                other => {
                    return action_response(Err(ActionError::invalid(format!(
                        "unknown server action {other:?}: use online, drain or halt"
                    ))));
                }
            };
            tracing::info!(%peer, service, server, ?action, "admin server action");
            action_response(backend.server_action(service, server, action))
        }
        (&Method::POST, ["api", "takeover"]) => {
            tracing::info!(%peer, "admin takeover");
            action_response(backend.takeover().await)
        }
        (&Method::POST, ["api", "release"]) => {
            tracing::info!(%peer, "admin release");
            action_response(backend.release().await)
        }
        (&Method::POST, ["api", "reload"]) => {
            tracing::info!(%peer, "admin reload");
            action_response(backend.reload().await)
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {method} {path}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_labels_and_garbage() {
        assert_eq!(
            percent_decode("Overcloud-controller-1"),
            "Overcloud-controller-1"
        );
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
        assert_eq!(percent_decode("%"), "%");
    }
}
