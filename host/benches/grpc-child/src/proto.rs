//! The `backworks.Plugin` service's messages, written by hand with prost's
//! derives (no `protoc`, no build script). The fields are those of the
//! SDK's `HttpRequest`, `HttpResponse` and `RequestAction`
//! (`sdk/abi/src/http.rs`); as a `.proto` file:
//!
//! ```proto
//! syntax = "proto3";
//! package backworks;
//!
//! service Plugin {
//!   rpc BeforeRequest(HttpRequest) returns (RequestAction);
//! }
//! message HttpRequest {
//!   string method = 1;
//!   string path = 2;
//!   optional string query = 3;        // the raw query string, as the SDK's
//!   map<string, string> headers = 4;
//!   optional string body = 5;
//! }
//! message HttpResponse {
//!   uint32 status = 1;
//!   map<string, string> headers = 2;
//!   string body = 3;
//! }
//! message Continue {}
//! message RequestAction {
//!   oneof action {
//!     Continue continue = 1;
//!     HttpRequest rewrite = 2;
//!     HttpResponse respond = 3;
//!   }
//! }
//! ```

use std::collections::BTreeMap;

/// The service's name, as `NamedService` and the method path spell it.
pub(crate) const SERVICE: &str = "backworks.Plugin";

/// The one method's name.
pub(crate) const BEFORE_REQUEST: &str = "BeforeRequest";

/// The one method's HTTP/2 path: `/{SERVICE}/{BEFORE_REQUEST}`.
pub(crate) const BEFORE_REQUEST_PATH: &str = "/backworks.Plugin/BeforeRequest";

/// A request as `before_request` sees it (the SDK's `HttpRequest`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HttpRequest {
    /// Upper-case method, e.g. `GET`.
    #[prost(string, tag = "1")]
    pub(crate) method: String,
    /// The path without the query string.
    #[prost(string, tag = "2")]
    pub(crate) path: String,
    /// The raw query string without `?`, when there is one.
    #[prost(string, optional, tag = "3")]
    pub(crate) query: Option<String>,
    /// Header names in lower case.
    #[prost(btree_map = "string, string", tag = "4")]
    pub(crate) headers: BTreeMap<String, String>,
    /// The body as UTF-8 text, when there is one.
    #[prost(string, optional, tag = "5")]
    pub(crate) body: Option<String>,
}

/// A response returned early by `before_request` (the SDK's `HttpResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HttpResponse {
    /// HTTP status code.
    #[prost(uint32, tag = "1")]
    pub(crate) status: u32,
    /// Header names in lower case.
    #[prost(btree_map = "string, string", tag = "2")]
    pub(crate) headers: BTreeMap<String, String>,
    /// The body as UTF-8 text.
    #[prost(string, tag = "3")]
    pub(crate) body: String,
}

/// `continue`: pass the request on unchanged.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Continue {}

/// What `before_request` decides (the SDK's `RequestAction`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RequestAction {
    /// `None` only from a peer that sent none of the three.
    #[prost(oneof = "Action", tags = "1, 2, 3")]
    pub(crate) action: Option<Action>,
}

/// The oneof of [`RequestAction`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Action {
    /// Pass the request on unchanged.
    #[prost(message, tag = "1")]
    Continue(Continue),
    /// Pass this request on instead of the original.
    #[prost(message, tag = "2")]
    Rewrite(HttpRequest),
    /// Answer now with this response.
    #[prost(message, tag = "3")]
    Respond(HttpResponse),
}
