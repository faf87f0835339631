//! The HTTP values the request hooks see, and their JSON form on the ABI.
//!
//! The host passes requests and responses to plugins as JSON (see
//! `docs/abi.md`, "Hook payloads"); these types are that JSON's schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request as the plugin sees it in `before_request` and `after_response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// The path without the query string, e.g. `/weather`.
    pub path: String,
    /// The raw query string without `?`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Header names in lower case; repeated headers are joined with `, `.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body as UTF-8 text, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl HttpRequest {
    /// The value of header `name` (matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response as produced by the endpoint and seen by `after_response`, or
/// returned early by `before_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header names in lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body as UTF-8 text.
    #[serde(default)]
    pub body: String,
}

impl HttpResponse {
    /// A response with `status` and a JSON body (`content-type: application/json`).
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        Self {
            status,
            headers,
            body: body.to_string(),
        }
    }
}

/// What `before_request` decides about a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestAction {
    /// Pass the request on unchanged (on the ABI: a NULL return).
    Continue,
    /// Pass this request on instead of the original.
    Rewrite(HttpRequest),
    /// Answer now with this response; later hooks and endpoints do not run.
    Respond(HttpResponse),
}

/// The input of `after_response` on the ABI: the request and the response
/// produced for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseExchange {
    /// The request as the endpoint saw it (after any rewrites).
    pub request: HttpRequest,
    /// The response so far.
    pub response: HttpResponse,
}
