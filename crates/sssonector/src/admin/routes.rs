//! The admin endpoint's routes: one function from a request to a response.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::oneshot;

use super::AdminState;

type Reply = Response<Full<Bytes>>;

/// Headers every response carries: nothing is sniffed, cached, framed or referred.
fn harden(mut response: Reply) -> Reply {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            reply(status, "application/json", body)
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode the answer: {e}\n"),
        ),
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    error: &'a str,
}

fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &Problem { error: message })
}

/// Answers one request. `peer` is the connecting address, for the log.
pub(super) async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: &AdminState,
) -> Reply {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let authorized = state.token.as_ref().is_none_or(|token| {
        token.verify(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    });
    let response = route(&method, &path, authorized, state).await;
    let status = response.status().as_u16();
    let label = match path.as_str() {
        "/healthz" | "/readyz" | "/metrics" | "/status" | "/reload" => path.clone(),
        _ => "other".to_owned(),
    };
    metrics::counter!("sssonector_admin_requests_total", "path" => label.clone(), "status" => status.to_string())
        .increment(1);
    tracing::debug!(%peer, %method, path, status, "admin request");
    // Scrapes and probes would drown the log: refusals, reloads and status reads are what
    // an auditor asks about.
    if status >= 400 || method == Method::POST || label == "/status" {
        state
            .audit
            .event("admin.access")
            .remote(peer)
            .field("method", method.as_str())
            .field("path", label.as_str())
            .field("status", status)
            .field("authorized", authorized)
            .emit();
    }
    harden(response)
}

async fn route(method: &Method, path: &str, authorized: bool, state: &AdminState) -> Reply {
    let unauthorized = || {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs the admin token: send Authorization: Bearer <token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            #[derive(Serialize)]
            struct Alive {
                status: &'static str,
            }
            json(StatusCode::OK, &Alive { status: "alive" })
        }
        (&Method::GET | &Method::HEAD, "/readyz") => {
            #[derive(Serialize)]
            struct Ready {
                ready: bool,
                problems: Vec<String>,
            }
            let status = (state.status)();
            let code = if status.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(
                code,
                &Ready {
                    ready: status.ready,
                    problems: status.problems,
                },
            )
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            if !authorized {
                return unauthorized();
            }
            // Gauges read from live state are refreshed by computing the status first.
            let _ = (state.status)();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics.render(),
            )
        }
        (&Method::GET | &Method::HEAD, "/status") => {
            if !authorized {
                return unauthorized();
            }
            json(StatusCode::OK, &(state.status)())
        }
        (&Method::POST, "/reload") => {
            if state.token.is_none() {
                return error(
                    StatusCode::FORBIDDEN,
                    "POST /reload is off: set admin.token_file (or SSSONECTOR_ADMIN_TOKEN) to allow it",
                );
            }
            if !authorized {
                return unauthorized();
            }
            let (tx, rx) = oneshot::channel();
            if state.reload.send(tx).await.is_err() {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the program is shutting down",
                );
            }
            match rx.await {
                Ok(outcome) => {
                    let code = if outcome.ok {
                        StatusCode::OK
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    };
                    json(code, &outcome)
                }
                Err(_) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the program is shutting down",
                ),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/status" | "/reload") => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if path == "/reload" {
                "POST"
            } else {
                "GET, HEAD"
            };
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint: /healthz, /readyz, /metrics, /status, POST /reload",
        ),
    }
}
