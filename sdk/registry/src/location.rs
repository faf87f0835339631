//! Where a registry is: the one parser of a registry location, shared by
//! `backworks.yaml`'s `marketplace.registry` (the host) and
//! `cargo backworks publish --registry`.
//!
//! The rules: an `http://` or `https://` URL is an HTTP registry (a host is
//! required, no query or fragment; the base URL always ends with `/`, so
//! tree paths and API paths join under it); a `file:///absolute/path` URL
//! is a directory; anything without `://` is a directory path (resolved by
//! the caller's rule: the host against the configuration file's
//! directory, `publish` against the current directory); every other
//! scheme, an empty or blank text, a `file://` URL with a host and a URL
//! that does not parse are refused, each with its own [`LocationError`].

use std::fmt;
use std::path::PathBuf;

pub use url::Url;

use crate::api;

/// A registry: a directory on this machine, or an HTTP(S) base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory (given as a path, or a `file://` URL).
    Dir(PathBuf),
    /// An `http://` or `https://` base URL, always ending with `/`.
    Http(Url),
}

/// Why a registry location was refused. `Display` is the whole message
/// (naming the text); [`LocationError::reason`] is the part after the text,
/// for callers that name the text themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Empty or blank.
    #[error("the registry is empty; give a directory, a `file:///` URL or an `http(s)://` URL")]
    Empty,
    /// A URL that does not parse.
    #[error("`{text}` is not a valid URL ({reason})")]
    InvalidUrl {
        /// The text given.
        text: String,
        /// The URL parser's message.
        reason: String,
    },
    /// An HTTP(S) URL without a host.
    #[error("`{text}` has no host")]
    NoHost {
        /// The text given.
        text: String,
    },
    /// An HTTP(S) URL with a query or a fragment.
    #[error(
        "`{text}` has a query or fragment; give the registry's base URL, e.g. `https://plugins.example.com/`"
    )]
    QueryOrFragment {
        /// The text given.
        text: String,
    },
    /// A `file://` URL that is not a local absolute path (it has a host).
    #[error(
        "`{text}` is not a local file URL; write `file:///absolute/path` (three slashes), or a plain path"
    )]
    NotLocalFile {
        /// The text given.
        text: String,
    },
    /// A scheme other than `http`, `https` and `file`.
    #[error(
        "`{text}`: the scheme `{scheme}` is not supported; give a directory, a `file:///` URL or an `http(s)://` URL"
    )]
    UnsupportedScheme {
        /// The text given.
        text: String,
        /// Its scheme, lower-case.
        scheme: String,
    },
}

impl LocationError {
    /// What is wrong, without the text itself (`it is empty`, `the scheme
    /// `ftp` is not supported`, the URL parser's `empty host`).
    pub fn reason(&self) -> String {
        match self {
            Self::Empty => String::from("it is empty"),
            Self::InvalidUrl { reason, .. } => reason.clone(),
            Self::NoHost { .. } => String::from("it has no host"),
            Self::QueryOrFragment { .. } => String::from(
                "it has a query or fragment; give the registry's base URL, e.g. `https://plugins.example.com/`",
            ),
            Self::NotLocalFile { .. } => String::from(
                "it is not a local file URL; write `file:///absolute/path` (three slashes), or a plain path",
            ),
            Self::UnsupportedScheme { scheme, .. } => {
                format!("the scheme `{scheme}` is not supported")
            }
        }
    }
}

impl Location {
    /// Reads a registry location (see the module docs); a plain path is
    /// turned into the directory by `resolve` (e.g. joined to a base
    /// directory; `PathBuf::from` keeps it as written).
    pub fn parse(text: &str, resolve: impl FnOnce(&str) -> PathBuf) -> Result<Self, LocationError> {
        if text.trim().is_empty() {
            return Err(LocationError::Empty);
        }
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Self::Dir(resolve(text)));
        };
        let url = Url::parse(text).map_err(|error| LocationError::InvalidUrl {
            text: text.to_owned(),
            reason: error.to_string(),
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(LocationError::NoHost {
                        text: text.to_owned(),
                    });
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(LocationError::QueryOrFragment {
                        text: text.to_owned(),
                    });
                }
                let mut url = url;
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Ok(Self::Http(url))
            }
            "file" => url
                .to_file_path()
                .map(Self::Dir)
                .map_err(|()| LocationError::NotLocalFile {
                    text: text.to_owned(),
                }),
            other => Err(LocationError::UnsupportedScheme {
                text: text.to_owned(),
                scheme: other.to_owned(),
            }),
        }
    }

    /// Where `tree_path` (a path of the tree, `/`-separated, e.g.
    /// [`crate::INDEX_PATH`]) is, for messages and requests: a URL under
    /// the base, or the path under the directory.
    pub fn file(&self, tree_path: &str) -> String {
        match self {
            Self::Dir(root) => root.join(tree_path).display().to_string(),
            Self::Http(base) => base
                .join(tree_path)
                .map_or_else(|_| format!("{base}{tree_path}"), |url| url.to_string()),
        }
    }
}

/// The URL of the API endpoint `path` (one of [`api`]'s `*_PATH`, relative)
/// under the HTTP registry `base`, whether `base` ends with `/` or not.
pub fn endpoint(base: &Url, path: &str) -> Result<Url, url::ParseError> {
    if base.path().ends_with('/') {
        base.join(path)
    } else {
        let mut base = base.clone();
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
        base.join(path)
    }
}

/// The search URL of the HTTP registry `base`: [`api::SEARCH_PATH`] with
/// the query `q` and `per_page`.
pub fn search_url(base: &Url, query: &str, per_page: usize) -> Result<Url, url::ParseError> {
    let mut url = endpoint(base, api::SEARCH_PATH)?;
    url.query_pairs_mut()
        .append_pair(api::SEARCH_QUERY, query)
        .append_pair(api::SEARCH_PER_PAGE, &per_page.to_string());
    Ok(url)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(path) => write!(f, "{}", path.display()),
            Self::Http(url) => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Location, LocationError> {
        Location::parse(text, |path| PathBuf::from(path))
    }

    fn http(url: &str) -> Location {
        Location::Http(Url::parse(url).unwrap())
    }

    #[test]
    fn the_three_forms_and_their_normal_form() {
        for (text, expected) in [
            ("./registry", Location::Dir(PathBuf::from("./registry"))),
            ("registry/", Location::Dir(PathBuf::from("registry/"))),
            (
                "/abs/registry",
                Location::Dir(PathBuf::from("/abs/registry")),
            ),
            (
                "file:///srv/registry",
                Location::Dir(PathBuf::from("/srv/registry")),
            ),
            (
                "FILE:///srv/registry/",
                Location::Dir(PathBuf::from("/srv/registry/")),
            ),
            ("http://127.0.0.1:8080", http("http://127.0.0.1:8080/")),
            ("http://127.0.0.1:8080/", http("http://127.0.0.1:8080/")),
            (
                "HTTPS://Example.COM/plugins",
                http("https://example.com/plugins/"),
            ),
            ("https://example.com/a/b/", http("https://example.com/a/b/")),
        ] {
            assert_eq!(parse(text).unwrap(), expected, "{text}");
        }
        // A plain path goes through the caller's rule; URLs never do.
        assert_eq!(
            Location::parse("registry", |p| PathBuf::from("/base").join(p)).unwrap(),
            Location::Dir(PathBuf::from("/base/registry"))
        );
        assert_eq!(
            Location::parse("file:///srv/r", |_| unreachable!()).unwrap(),
            Location::Dir(PathBuf::from("/srv/r"))
        );
    }

    #[test]
    fn every_refusal_names_the_text_and_the_reason() {
        for (text, message, reason) in [
            (
                "",
                "the registry is empty; give a directory, a `file:///` URL or an `http(s)://` URL",
                "it is empty",
            ),
            (
                "  ",
                "the registry is empty; give a directory, a `file:///` URL or an `http(s)://` URL",
                "it is empty",
            ),
            (
                "http://",
                "`http://` is not a valid URL (empty host)",
                "empty host",
            ),
            (
                "http://exa mple.com/",
                "`http://exa mple.com/` is not a valid URL (invalid international domain name)",
                "invalid international domain name",
            ),
            (
                "ftp://example.com/registry",
                "`ftp://example.com/registry`: the scheme `ftp` is not supported; give a directory, a `file:///` URL or an `http(s)://` URL",
                "the scheme `ftp` is not supported",
            ),
            (
                "https://example.com/registry?token=1",
                "`https://example.com/registry?token=1` has a query or fragment; give the registry's base URL, e.g. `https://plugins.example.com/`",
                "it has a query or fragment; give the registry's base URL, e.g. `https://plugins.example.com/`",
            ),
            (
                "https://example.com/#top",
                "`https://example.com/#top` has a query or fragment; give the registry's base URL, e.g. `https://plugins.example.com/`",
                "it has a query or fragment; give the registry's base URL, e.g. `https://plugins.example.com/`",
            ),
            (
                "file://server/registry",
                "`file://server/registry` is not a local file URL; write `file:///absolute/path` (three slashes), or a plain path",
                "it is not a local file URL; write `file:///absolute/path` (three slashes), or a plain path",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.to_string(), message, "{text:?}");
            assert_eq!(error.reason(), reason, "{text:?}");
        }
    }

    #[test]
    fn endpoints_and_files_join_under_the_base() {
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let base = Url::parse(base).unwrap();
            assert_eq!(
                endpoint(&base, api::PUBLISH_PATH).unwrap().as_str(),
                "http://127.0.0.1:8080/api/v1/publish"
            );
        }
        // Without the trailing `/`, a plain join would drop `registry`.
        let base = Url::parse("https://example.invalid/registry").unwrap();
        assert_eq!(
            endpoint(&base, api::PUBLISH_PATH).unwrap().as_str(),
            "https://example.invalid/registry/api/v1/publish"
        );
        let Location::Http(base) = parse("https://example.invalid/registry").unwrap() else {
            unreachable!()
        };
        assert_eq!(
            search_url(&base, "weather api", 50).unwrap().as_str(),
            "https://example.invalid/registry/api/v1/search?q=weather+api&per_page=50"
        );
        assert_eq!(
            parse("https://example.invalid/registry")
                .unwrap()
                .file(crate::INDEX_PATH),
            "https://example.invalid/registry/index.json"
        );
        assert_eq!(
            parse("/srv/registry").unwrap().file(crate::INDEX_PATH),
            "/srv/registry/index.json"
        );
    }
}
