//! The HTTP API of a registry server, defined once for the server
//! (`backworks marketplace serve`), the marketplace client (`backworks
//! plugins search`) and `cargo backworks publish` (`docs/registry.md`, "The
//! marketplace server's HTTP API"): the endpoint paths, the search
//! parameters, the multipart parts of an upload and their content types,
//! the authorization scheme, the status of a publish and the JSON bodies.
//!
//! Paths are relative to the registry's base URL (which ends with `/`;
//! [`crate::location::endpoint`] joins them); [`route`] gives the server's
//! absolute route. The tree's own files ([`crate::INDEX_PATH`], release
//! files, libraries and their signatures) are plain `GET`s of their tree
//! paths under the same base.

use serde::{Deserialize, Serialize};

/// `GET`: one page of search results ([`crate::SearchPage`]).
pub const SEARCH_PATH: &str = "api/v1/search";

/// `POST`: publish one version of one plugin (multipart, [`PART_METADATA`],
/// [`PART_ARTIFACT`], [`PART_SIGNATURE`]); answered [`PUBLISHED`] with the
/// [`crate::Release`] recorded.
pub const PUBLISH_PATH: &str = "api/v1/publish";

/// The search parameter holding the query text.
pub const SEARCH_QUERY: &str = "q";
/// The search parameter holding the 1-based page number.
pub const SEARCH_PAGE: &str = "page";
/// The search parameter holding the hits per page.
pub const SEARCH_PER_PAGE: &str = "per_page";

/// The optional upload part holding [`UploadMetadata`] as JSON.
pub const PART_METADATA: &str = "metadata";
/// An upload part holding a plugin library; its file name is the dist file
/// name.
pub const PART_ARTIFACT: &str = "artifact";
/// An upload part holding a library's signature; its file name is the
/// library's with [`SIGNATURE_SUFFIX`].
pub const PART_SIGNATURE: &str = "signature";

/// What a signature's file name adds to its library's.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The content type of JSON: [`PART_METADATA`], the tree's `.json` files,
/// every answer of the API.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// The content type of a signature: [`PART_SIGNATURE`], the tree's
/// `.minisig` files.
pub const CONTENT_TYPE_SIGNATURE: &str = "text/plain; charset=utf-8";
/// The content type of a library: [`PART_ARTIFACT`], the tree's libraries.
pub const CONTENT_TYPE_BINARY: &str = "application/octet-stream";

/// The authorization scheme of a publish (`Authorization: Bearer <token>`).
pub const AUTH_SCHEME: &str = "Bearer";

/// The environment variable holding the publish token, for the server and
/// for `cargo backworks publish`.
pub const TOKEN_ENV: &str = "BACKWORKS_REGISTRY_TOKEN";

/// The status of a successful publish (201 Created).
pub const PUBLISHED: u16 = 201;

/// The server's absolute route of the API path `path` (`/api/v1/search`).
pub fn route(path: &str) -> String {
    format!("/{path}")
}

/// The content type the server sends a tree file with, by its extension.
pub fn content_type_of(tree_path: &str) -> &'static str {
    if tree_path.ends_with(".json") {
        CONTENT_TYPE_JSON
    } else if tree_path.ends_with(SIGNATURE_SUFFIX) {
        CONTENT_TYPE_SIGNATURE
    } else {
        CONTENT_TYPE_BINARY
    }
}

/// The parameters of [`SEARCH_PATH`], as the server reads them (names:
/// [`SEARCH_QUERY`], [`SEARCH_PAGE`], [`SEARCH_PER_PAGE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchParams {
    /// The query text (default: empty, every plugin).
    #[serde(default)]
    pub q: String,
    /// The page (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<usize>,
    /// Hits per page (default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<usize>,
}

/// The [`PART_METADATA`] part of an upload. A server ignores fields it does
/// not know (a newer `cargo backworks publish` may send more; nothing in
/// it is a matter of trust, which the signed artifacts carry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMetadata {
    /// The release's description; absent or empty: the metadata record's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Search keywords.
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// Every error answer of the API: `{"error": "<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What was refused and how to fix it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_parameters_have_the_names_the_client_sends() {
        let url = format!("{SEARCH_QUERY}=weather&{SEARCH_PAGE}=2&{SEARCH_PER_PAGE}=5&unknown=1");
        let params: SearchParams = serde_json::from_value(serde_json::Value::Object(
            url.split('&')
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap();
                    let value = match value.parse::<usize>() {
                        Ok(number) if key != SEARCH_QUERY => serde_json::json!(number),
                        _ => serde_json::json!(value),
                    };
                    (key.to_owned(), value)
                })
                .collect(),
        ))
        .unwrap();
        assert_eq!(
            params,
            SearchParams {
                q: "weather".into(),
                page: Some(2),
                per_page: Some(5),
            }
        );
        assert_eq!(route(SEARCH_PATH), "/api/v1/search");
        assert_eq!(route(PUBLISH_PATH), "/api/v1/publish");
    }

    #[test]
    fn upload_metadata_ignores_what_a_newer_publisher_adds() {
        let metadata: UploadMetadata = serde_json::from_str(
            r#"{"description": "d", "keywords": ["k"], "homepage": "https://x"}"#,
        )
        .unwrap();
        assert_eq!(metadata.description.as_deref(), Some("d"));
        assert_eq!(metadata.keywords, ["k"]);
        assert_eq!(
            serde_json::to_value(UploadMetadata::default()).unwrap(),
            serde_json::json!({"keywords": []})
        );
    }

    #[test]
    fn tree_files_are_typed_by_extension() {
        assert_eq!(content_type_of("index.json"), CONTENT_TYPE_JSON);
        assert_eq!(content_type_of("a/b.so.minisig"), CONTENT_TYPE_SIGNATURE);
        assert_eq!(content_type_of("a/b.so"), CONTENT_TYPE_BINARY);
    }
}
