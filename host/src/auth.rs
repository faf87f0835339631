//! The built-in `auth` plugin: checks the JWT bearer token of every request
//! before it reaches an endpoint.
//!
//! Configured in `backworks.yaml` like any plugin:
//!
//! ```yaml
//! plugins:
//!   auth:
//!     type: "builtin"
//!     config:
//!       jwt_secret: "..."                # or public_key / public_key_file
//!       exempt_paths: ["/healthz", "/public/*"]
//!       issuer: "https://id.example"      # optional
//!       audience: "backworks"            # optional
//!       leeway_seconds: 30               # optional, default 30
//! ```
//!
//! | field | meaning |
//! | --- | --- |
//! | `jwt_secret` | HMAC secret (default algorithm HS256) |
//! | `public_key`, `public_key_file` | RSA or EC public key in PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`), inline or in a file; default algorithm RS256, or ES256/ES384 by the key's curve |
//! | `algorithms` | the accepted `alg` values, all of the key's family (e.g. `["HS256", "HS512"]`, `["RS256", "PS256"]`); default: the one above |
//! | `exempt_paths` | paths served without a token: exact (`/healthz`), or a prefix with a trailing `*` (`/public/*` covers `/public/` and below, not `/public`), matched against the percent-decoded path; never a path that could be read as another one (a `.` or `..` segment, `//`, an encoded `/`, a `\`, double encoding: see `exemption_path`) |
//! | `issuer`, `audience` | a string or a list: the token's `iss` / `aud` must be present and one of them. Without `audience`, a token that carries `aud` is refused |
//! | `leeway_seconds` | clock skew allowed on `exp` and `nbf`, 0 to 3600 |
//!
//! Exactly one of `jwt_secret`, `public_key` and `public_key_file` is given.
//!
//! The host's own endpoints (`/healthz`, `/plugins`, `/metrics`) pass
//! through `before_request` too, so they need a token unless exempt here or
//! listed in the host's `server.public`.
//!
//! A request on an exempt path passes without a token. Any other request
//! needs `Authorization: Bearer <token>` with a token whose algorithm,
//! signature, `exp` (required), `nbf`, `iss` and `aud` check out; it is then
//! passed on with header `x-auth-subject` set to the token's `sub`, so later
//! plugins know who called. Any other request is answered `401` with a JSON
//! body `{"error": "...", "plugin": "auth"}` and a `www-authenticate`
//! challenge. An `x-auth-subject` header sent by the client is removed from
//! every request, exempt or not, so it cannot be forged.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use backworks_plugin_sdk::{
    BackworksError, BackworksPlugin, BackworksResult, HttpRequest, HttpResponse, RequestAction,
    Value, async_trait, json,
};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The header this plugin sets to the verified token's `sub` claim.
pub(crate) const SUBJECT_HEADER: &str = "x-auth-subject";

/// The default allowance, in seconds, for clock skew on `exp` and `nbf`.
pub(crate) const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// The largest `leeway_seconds` accepted: more than this is a
/// misconfiguration, not clock skew.
pub(crate) const MAX_LEEWAY_SECONDS: u64 = 3600;

/// The fields `initialize` accepts.
const FIELDS: &[&str] = &[
    "jwt_secret",
    "public_key",
    "public_key_file",
    "algorithms",
    "exempt_paths",
    "issuer",
    "audience",
    "leeway_seconds",
];

/// The built-in `auth` plugin: JWT bearer-token authentication in
/// `before_request`.
///
/// Create it with `Default`, then `initialize` it with its configuration
/// (see the module documentation for the fields). Until it has been
/// initialized successfully, `before_request` returns an error (so the host
/// refuses the request rather than letting it through) and `health_check`
/// reports it unhealthy. A later successful `initialize` replaces the
/// configuration; a failed one keeps the previous one.
///
/// `Debug` shows the key's kind and the validation settings, never the key.
#[derive(Default)]
pub(crate) struct JwtAuth {
    verifier: RwLock<Option<Arc<Verifier>>>,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verifier = self.current();
        f.debug_struct("JwtAuth")
            .field("verifier", &verifier)
            .finish()
    }
}

impl JwtAuth {
    fn current(&self) -> Option<Arc<Verifier>> {
        self.verifier
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl BackworksPlugin for JwtAuth {
    fn name(&self) -> &str {
        "auth"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn description(&self) -> &str {
        "checks JWT bearer tokens (HS256/384/512, RS256, ES256, ...) before requests reach endpoints"
    }

    async fn initialize(&self, config: &Value) -> BackworksResult<()> {
        let (source, rules) = Settings::parse(config)?;
        let material = match source {
            KeySource::Secret(secret) => KeyMaterial::Secret(secret),
            KeySource::Pem(text) => KeyMaterial::Pem {
                field: "public_key",
                text,
            },
            KeySource::PemFile(path) => KeyMaterial::Pem {
                field: "public_key_file",
                text: tokio::fs::read_to_string(&path).await.map_err(|e| {
                    config_error(format!(
                        "`public_key_file`: cannot read {}: {e}",
                        path.display()
                    ))
                })?,
            },
        };
        let verifier = Verifier::build(material, rules)?;
        tracing::debug!(verifier = ?verifier, "auth plugin initialized");
        *self
            .verifier
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(verifier));
        Ok(())
    }

    async fn health_check(&self) -> BackworksResult<()> {
        match self.current() {
            Some(_) => Ok(()),
            None => Err(BackworksError::Unhealthy(
                "the auth plugin has not been initialized".to_owned(),
            )),
        }
    }

    async fn before_request(&self, request: &HttpRequest) -> BackworksResult<RequestAction> {
        let verifier = self.current().ok_or_else(|| {
            BackworksError::Request(
                "the auth plugin has not been initialized; refusing the request".to_owned(),
            )
        })?;
        Ok(verifier.check(request))
    }
}

/// Where the verification key comes from, as configured.
enum KeySource {
    Secret(String),
    Pem(String),
    PemFile(PathBuf),
}

/// The verification key's text, with `public_key_file` read.
enum KeyMaterial {
    Secret(String),
    /// A PEM public key and the field it came from.
    Pem {
        field: &'static str,
        text: String,
    },
}

/// Everything in the configuration but the key.
struct Settings {
    algorithms: Option<Vec<Algorithm>>,
    exempt: Vec<PathPattern>,
    issuer: Option<Vec<String>>,
    audience: Option<Vec<String>>,
    leeway: u64,
}

fn config_error(message: impl Into<String>) -> BackworksError {
    BackworksError::Config(message.into())
}

/// "a string", "null", ... for error messages: the kind of a JSON value,
/// never its content (which may be a secret).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_empty_string<'a>(field: &str, value: &'a Value) -> BackworksResult<&'a str> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::String(_) => Err(config_error(format!(
            "`{field}`: expected a non-empty string, got an empty string"
        ))),
        other => Err(config_error(format!(
            "`{field}`: expected a non-empty string, got {}",
            kind_of(other)
        ))),
    }
}

/// A string or a non-empty array of strings, each non-empty.
fn string_or_list(field: &str, value: &Value) -> BackworksResult<Vec<String>> {
    let expected = "a non-empty string or a non-empty array of non-empty strings";
    match value {
        Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err(config_error(format!(
                    "`{field}[{i}]`: expected a non-empty string, got {}",
                    if other.as_str() == Some("") {
                        "an empty string"
                    } else {
                        kind_of(other)
                    }
                ))),
            })
            .collect(),
        Value::String(_) => Err(config_error(format!(
            "`{field}`: expected {expected}, got an empty string"
        ))),
        Value::Array(_) => Err(config_error(format!(
            "`{field}`: expected {expected}, got an empty array"
        ))),
        other => Err(config_error(format!(
            "`{field}`: expected {expected}, got {}",
            kind_of(other)
        ))),
    }
}

impl Settings {
    /// Reads and checks the configuration (without touching the file system).
    fn parse(config: &Value) -> BackworksResult<(KeySource, Self)> {
        let Value::Object(map) = config else {
            return Err(config_error(format!(
                "expected an object with `jwt_secret`, `public_key` or `public_key_file`, got {}",
                kind_of(config)
            )));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(config_error(format!(
                "unknown field `{unknown}`; expected one of {}",
                FIELDS.join(", ")
            )));
        }

        let given: Vec<&str> = ["jwt_secret", "public_key", "public_key_file"]
            .into_iter()
            .filter(|k| map.contains_key(*k))
            .collect();
        let key = match given.as_slice() {
            [] => {
                return Err(config_error(
                    "no key: expected one of `jwt_secret` (HMAC), `public_key` or `public_key_file` (RSA or EC public key in PEM form)",
                ));
            }
            ["jwt_secret"] => {
                KeySource::Secret(non_empty_string("jwt_secret", &map["jwt_secret"])?.to_owned())
            }
            ["public_key"] => {
                KeySource::Pem(non_empty_string("public_key", &map["public_key"])?.to_owned())
            }
            ["public_key_file"] => KeySource::PemFile(PathBuf::from(non_empty_string(
                "public_key_file",
                &map["public_key_file"],
            )?)),
            several => {
                return Err(config_error(format!(
                    "{} are mutually exclusive: expected exactly one key",
                    several
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
        };

        let algorithms = map
            .get("algorithms")
            .map(|value| {
                let names = match value {
                    Value::Array(items) if !items.is_empty() => items,
                    other => {
                        return Err(config_error(format!(
                            "`algorithms`: expected a non-empty array of algorithm names such as \"HS256\" or \"RS256\", got {}",
                            if other.as_array().is_some() {
                                "an empty array"
                            } else {
                                kind_of(other)
                            }
                        )));
                    }
                };
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let name = name.as_str().ok_or_else(|| {
                            config_error(format!(
                                "`algorithms[{i}]`: expected an algorithm name such as \"HS256\", got {}",
                                kind_of(name)
                            ))
                        })?;
                        Algorithm::from_str(name).map_err(|_| {
                            config_error(format!(
                                "`algorithms[{i}]`: unknown algorithm \"{name}\"; expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384"
                            ))
                        })
                    })
                    .collect::<BackworksResult<Vec<_>>>()
            })
            .transpose()?;

        let exempt = match map.get("exempt_paths") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| PathPattern::parse(&format!("exempt_paths[{i}]"), item))
                .collect::<BackworksResult<_>>()?,
            Some(other) => {
                return Err(config_error(format!(
                    "`exempt_paths`: expected an array of paths such as \"/healthz\" or \"/public/*\", got {}",
                    kind_of(other)
                )));
            }
        };

        let issuer = map
            .get("issuer")
            .map(|v| string_or_list("issuer", v))
            .transpose()?;
        let audience = map
            .get("audience")
            .map(|v| string_or_list("audience", v))
            .transpose()?;

        let leeway = match map.get("leeway_seconds") {
            None => DEFAULT_LEEWAY_SECONDS,
            Some(value) => match value.as_u64() {
                Some(n) if n <= MAX_LEEWAY_SECONDS => n,
                _ => {
                    let got = match value {
                        Value::Number(n) => n.to_string(),
                        other => kind_of(other).to_owned(),
                    };
                    return Err(config_error(format!(
                        "`leeway_seconds`: expected a whole number of seconds from 0 to {MAX_LEEWAY_SECONDS}, got {got}"
                    )));
                }
            },
        };

        Ok((
            key,
            Self {
                algorithms,
                exempt,
                issuer,
                audience,
                leeway,
            },
        ))
    }
}

/// An `exempt_paths` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    /// The path itself, and nothing else.
    Exact(String),
    /// Any path starting with this (the entry without its trailing `*`).
    Prefix(String),
}

impl PathPattern {
    fn parse(field: &str, value: &Value) -> BackworksResult<Self> {
        let Some(text) = value.as_str() else {
            return Err(config_error(format!(
                "`{field}`: expected a path such as \"/healthz\" or \"/public/*\", got {}",
                kind_of(value)
            )));
        };
        if !text.starts_with('/') {
            return Err(config_error(format!(
                "`{field}`: expected a path starting with `/`, got \"{text}\""
            )));
        }
        match text.find('*') {
            None => Ok(Self::Exact(text.to_owned())),
            Some(at) if at == text.len() - 1 => Ok(Self::Prefix(text[..at].to_owned())),
            Some(_) => Err(config_error(format!(
                "`{field}`: `*` is only allowed as the last character (a prefix match), got \"{text}\""
            ))),
        }
    }

    /// Whether `path`, a path as [`exemption_path`] gives it (decoded and
    /// unambiguous), is covered.
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// The request path that exemptions are decided on: `path` as the client
/// sent it, percent-decoded once. `None`, so no exemption applies and a
/// token is required, when a plugin, a proxy or the router could read the
/// path as another one: a `.` or `..` segment, an empty segment (`//`), an
/// encoded `/` (`%2F`), a `\`, a `%` left after decoding (double encoding),
/// a control character, a bad `%` escape or bytes that are not UTF-8. So
/// `/%70ublic/x` is exempt as `/public/x` is, and `/public/..%2Fadmin`,
/// `/public/%2e%2e/admin` or `//public/x` are not.
fn exemption_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    let decoded = if path.contains('%') {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes.get(i + 1..i + 3)?;
                let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                if value == b'/' {
                    return None;
                }
                out.push(value);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        std::borrow::Cow::Owned(String::from_utf8(out).ok()?)
    } else {
        std::borrow::Cow::Borrowed(path)
    };
    let ambiguous = !decoded.starts_with('/')
        || decoded
            .chars()
            .any(|c| c == '%' || c == '\\' || c.is_control())
        || decoded.contains("//")
        || decoded
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    (!ambiguous).then_some(decoded)
}

/// What the key is, for `Debug` and messages: never the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    HmacSecret,
    RsaPublicKey,
    EcPublicKey,
}

/// A ready-to-use configuration: the key, the validation rules and the
/// exempt paths.
struct Verifier {
    key: DecodingKey,
    kind: KeyKind,
    validation: Validation,
    exempt: Vec<PathPattern>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("key", &self.kind)
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_seconds", &self.validation.leeway)
            .field("exempt_paths", &self.exempt)
            .finish_non_exhaustive()
    }
}

/// Whether `key` can be used with `algorithm`: building a verifier parses
/// the key for that algorithm (an RSA modulus, an EC point on the curve).
fn key_fits(key: &DecodingKey, algorithm: Algorithm) -> bool {
    jsonwebtoken::crypto::verify("", b"", key, algorithm).is_ok()
}

/// The PEM label of the first `-----BEGIN <label>-----` line, if any.
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    let end = rest.find("-----")?;
    Some(&rest[..end])
}

fn algorithm_names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Verifier {
    /// Builds the verifier, checking the key against the algorithms.
    fn build(material: KeyMaterial, settings: Settings) -> BackworksResult<Self> {
        let (key, kind, default_algorithm, field) = match &material {
            KeyMaterial::Secret(secret) => {
                if secret.len() < 32 {
                    tracing::warn!(
                        length = secret.len(),
                        "auth: `jwt_secret` is shorter than 32 bytes, weaker than HS256 is designed for"
                    );
                }
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    KeyKind::HmacSecret,
                    Algorithm::HS256,
                    "jwt_secret",
                )
            }
            KeyMaterial::Pem { field, text } => {
                let (key, kind, algorithm) = public_key(field, text)?;
                (key, kind, algorithm, *field)
            }
        };

        let algorithms = settings
            .algorithms
            .unwrap_or_else(|| vec![default_algorithm]);
        let family = key.family();
        for algorithm in &algorithms {
            if algorithm.family() != family {
                return Err(config_error(format!(
                    "`algorithms`: {algorithm:?} cannot be used with the {} in `{field}`; expected one of {}",
                    kind.describe(),
                    algorithm_names(family.algorithms())
                )));
            }
            if !key_fits(&key, *algorithm) {
                return Err(config_error(format!(
                    "`algorithms`: the {} in `{field}` cannot verify {algorithm:?} signatures",
                    kind.describe()
                )));
            }
        }

        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = settings.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = BTreeSet::from(["exp"]);
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(issuer);
            required.insert("iss");
        }
        if let Some(audience) = &settings.audience {
            validation.set_audience(audience);
            required.insert("aud");
        }
        validation.set_required_spec_claims(&required.into_iter().collect::<Vec<_>>());

        Ok(Self {
            key,
            kind,
            validation,
            exempt: settings.exempt,
        })
    }

    /// The decision for one request.
    fn check(&self, request: &HttpRequest) -> RequestAction {
        let exempt = !self.exempt.is_empty()
            && exemption_path(&request.path)
                .is_some_and(|path| self.exempt.iter().any(|p| p.matches(&path)));
        if exempt {
            return match without_forged_subject(request) {
                Some(stripped) => RequestAction::Rewrite(stripped),
                None => RequestAction::Continue,
            };
        }
        let token = match bearer_token(request.header("authorization")) {
            Bearer::Missing => {
                tracing::debug!(path = %request.path, "auth: no bearer token");
                return RequestAction::Respond(unauthorized("missing bearer token", "Bearer"));
            }
            Bearer::Malformed(reason) => return self.reject(request, reason),
            Bearer::Token(token) => token,
        };
        let subject = match self.verify(token) {
            Ok(subject) => subject,
            Err(reason) => return self.reject(request, &reason),
        };
        let mut rewritten = without_forged_subject(request).unwrap_or_else(|| request.clone());
        if let Some(subject) = subject {
            rewritten.headers.insert(SUBJECT_HEADER.to_owned(), subject);
        }
        if rewritten == *request {
            RequestAction::Continue
        } else {
            RequestAction::Rewrite(rewritten)
        }
    }

    fn reject(&self, request: &HttpRequest, reason: &str) -> RequestAction {
        tracing::debug!(path = %request.path, reason, "auth: invalid bearer token");
        RequestAction::Respond(unauthorized(
            &format!("invalid token: {reason}"),
            "Bearer error=\"invalid_token\"",
        ))
    }

    /// Checks `token`; `Ok` carries its `sub` claim, `Err` the reason it is
    /// refused.
    fn verify(&self, token: &str) -> Result<Option<String>, String> {
        #[derive(Deserialize)]
        struct Claims {
            #[serde(default)]
            sub: Option<String>,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.reason(&e, token))?;
        match data.claims.sub {
            Some(sub) if sub.chars().any(char::is_control) => {
                Err("`sub` claim contains control characters".to_owned())
            }
            sub => Ok(sub),
        }
    }

    /// Why `token` was refused, in words fit for the client.
    fn reason(&self, error: &JwtError, token: &str) -> String {
        match error.kind() {
            ErrorKind::InvalidSignature => "signature does not match".to_owned(),
            ErrorKind::ExpiredSignature => "token has expired".to_owned(),
            ErrorKind::ImmatureSignature => "token is not valid yet (`nbf`)".to_owned(),
            ErrorKind::InvalidIssuer => "issuer (`iss`) is not accepted".to_owned(),
            ErrorKind::InvalidAudience => "audience (`aud`) is not accepted".to_owned(),
            ErrorKind::MissingRequiredClaim(claim) => format!("missing required claim `{claim}`"),
            ErrorKind::InvalidClaimFormat(claim) => {
                format!("claim `{claim}` has the wrong type")
            }
            ErrorKind::InvalidAlgorithm => match jsonwebtoken::decode_header(token) {
                Ok(header) => format!(
                    "algorithm {:?} is not accepted; expected {}",
                    header.alg,
                    algorithm_names(&self.validation.algorithms)
                ),
                Err(_) => "algorithm is not accepted".to_owned(),
            },
            ErrorKind::InvalidToken => {
                "malformed token: expected three base64url parts separated by `.`".to_owned()
            }
            ErrorKind::Base64(_) => "malformed token: a part is not valid base64url".to_owned(),
            ErrorKind::Json(e) => format!("malformed token: {e}"),
            ErrorKind::Utf8(_) => "malformed token: a part is not valid utf-8".to_owned(),
            other => {
                tracing::warn!(error = ?other, "auth: token verification failed unexpectedly");
                "token cannot be verified".to_owned()
            }
        }
    }
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            Self::HmacSecret => "HMAC secret",
            Self::RsaPublicKey => "RSA public key",
            Self::EcPublicKey => "EC public key",
        }
    }
}

/// Reads an RSA or EC public key from PEM text and picks its default
/// algorithm (RS256; ES256 or ES384 by curve).
fn public_key(field: &str, pem: &str) -> BackworksResult<(DecodingKey, KeyKind, Algorithm)> {
    match pem_label(pem) {
        None => {
            return Err(config_error(format!(
                "`{field}`: expected a public key in PEM form (`-----BEGIN PUBLIC KEY-----`), found no PEM header"
            )));
        }
        Some(label) if label.contains("PRIVATE") => {
            return Err(config_error(format!(
                "`{field}`: this is a private key (`BEGIN {label}`); give the public key instead (e.g. `openssl pkey -pubout`)"
            )));
        }
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(label) => {
            return Err(config_error(format!(
                "`{field}`: expected `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`, found `BEGIN {label}`"
            )));
        }
    }
    let unusable = || {
        config_error(format!(
            "`{field}`: not a usable RSA or EC (P-256, P-384) public key"
        ))
    };
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        if !key_fits(&key, Algorithm::RS256) {
            return Err(unusable());
        }
        return Ok((key, KeyKind::RsaPublicKey, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        let by_curve = [Algorithm::ES256, Algorithm::ES384]
            .into_iter()
            .find(|a| key_fits(&key, *a))
            .ok_or_else(unusable)?;
        return Ok((key, KeyKind::EcPublicKey, by_curve));
    }
    Err(unusable())
}

/// What the `authorization` header holds.
enum Bearer<'a> {
    /// No header, or another scheme than `Bearer`.
    Missing,
    /// The `Bearer` scheme with something that is not one token.
    Malformed(&'static str),
    /// The token.
    Token(&'a str),
}

/// Reads `Bearer <token>` (scheme case-insensitive, RFC 7235) from the
/// header's value.
fn bearer_token(header: Option<&str>) -> Bearer<'_> {
    let Some(value) = header.map(str::trim) else {
        return Bearer::Missing;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Missing;
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Bearer::Malformed("empty bearer token");
    }
    // token68 (RFC 7235): a JWT is base64url parts joined by `.`.
    let token68 = token
        .trim_end_matches('=')
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !token68 {
        return Bearer::Malformed("malformed authorization header: expected `Bearer <token>`");
    }
    Bearer::Token(token)
}

/// `request` without any client-sent `x-auth-subject` header, or `None`
/// when it has none.
fn without_forged_subject(request: &HttpRequest) -> Option<HttpRequest> {
    let forged = |name: &String| name.eq_ignore_ascii_case(SUBJECT_HEADER);
    if !request.headers.keys().any(forged) {
        return None;
    }
    let mut stripped = request.clone();
    stripped.headers.retain(|name, _| !forged(name));
    Some(stripped)
}

/// A `401` with the JSON error body and the `www-authenticate` challenge.
fn unauthorized(error: &str, challenge: &str) -> HttpResponse {
    let mut response = HttpResponse::json(401, &json!({"error": error, "plugin": "auth"}));
    response
        .headers
        .insert("www-authenticate".to_owned(), challenge.to_owned());
    response
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header, encode};
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use serde_json::Value;

    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A token over `claims` signed with `key` using `alg`.
    fn token(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs256(claims: &Value) -> String {
        token(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn valid_claims() -> Value {
        json!({"sub": "alice", "exp": now() + 600})
    }

    /// An RSA key pair as PEM (private PKCS#8, public SPKI), generated once
    /// per test run.
    fn rsa_pems() -> &'static (String, String) {
        static PEMS: OnceLock<(String, String)> = OnceLock::new();
        PEMS.get_or_init(|| {
            let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
            (
                private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                private
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
            )
        })
    }

    /// A fresh P-256 key pair as PEM (private PKCS#8, public SPKI).
    fn p256_pems() -> (String, String) {
        let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        (
            secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    }

    /// A fresh P-384 key pair as PEM (private PKCS#8, public SPKI).
    fn p384_pems() -> (String, String) {
        let secret = p384::SecretKey::random(&mut rsa::rand_core::OsRng);
        (
            secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    }

    async fn plugin(config: Value) -> JwtAuth {
        let auth = JwtAuth::default();
        auth.initialize(&config).await.unwrap();
        auth
    }

    async fn hmac_plugin() -> JwtAuth {
        plugin(json!({"jwt_secret": SECRET, "exempt_paths": ["/healthz", "/public/*"]})).await
    }

    async fn config_error_of(config: Value) -> String {
        match JwtAuth::default().initialize(&config).await {
            Err(BackworksError::Config(message)) => message,
            other => panic!("expected a configuration error for {config}, got {other:?}"),
        }
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "GET".to_owned(),
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..HttpRequest::default()
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    async fn run(auth: &JwtAuth, request: &HttpRequest) -> RequestAction {
        auth.before_request(request).await.unwrap()
    }

    /// The subject header of the request passed on; panics on a response.
    async fn accepted_subject(auth: &JwtAuth, token: &str) -> Option<String> {
        let request = request("/api", &[("authorization", &bearer(token))]);
        match run(auth, &request).await {
            RequestAction::Rewrite(rewritten) => {
                let mut expected = request.clone();
                expected.headers.remove(SUBJECT_HEADER);
                let mut without_subject = rewritten.clone();
                without_subject.headers.remove(SUBJECT_HEADER);
                assert_eq!(without_subject, expected, "only the subject may change");
                rewritten.headers.get(SUBJECT_HEADER).cloned()
            }
            RequestAction::Continue => None,
            RequestAction::Respond(response) => panic!("token refused: {}", response.body),
        }
    }

    /// The `error` of the 401 returned for `token`; panics if it passes.
    async fn rejection(auth: &JwtAuth, token: &str) -> String {
        let request = request("/api", &[("authorization", &bearer(token))]);
        invalid_token_error(run(auth, &request).await)
    }

    fn invalid_token_error(action: RequestAction) -> String {
        let RequestAction::Respond(response) = action else {
            panic!("expected a 401, got {action:?}");
        };
        assert_eq!(response.status, 401);
        assert_eq!(
            response.headers.get("www-authenticate").map(String::as_str),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(
            response.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let body: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["plugin"], "auth");
        body["error"].as_str().unwrap().to_owned()
    }

    fn assert_missing_token(action: RequestAction) {
        let RequestAction::Respond(response) = action else {
            panic!("expected a 401, got {action:?}");
        };
        assert_eq!(response.status, 401);
        assert_eq!(
            response.body,
            r#"{"error":"missing bearer token","plugin":"auth"}"#
        );
        assert_eq!(
            response.headers.get("www-authenticate").map(String::as_str),
            Some("Bearer")
        );
    }

    #[tokio::test]
    async fn a_valid_hs256_token_passes_with_its_subject() {
        let auth = hmac_plugin().await;
        assert_eq!(
            accepted_subject(&auth, &hs256(&valid_claims())).await,
            Some("alice".to_owned())
        );
    }

    #[tokio::test]
    async fn a_valid_token_without_sub_passes_unchanged() {
        let auth = hmac_plugin().await;
        let request = request(
            "/api",
            &[(
                "authorization",
                &bearer(&hs256(&json!({"exp": now() + 60}))),
            )],
        );
        assert_eq!(run(&auth, &request).await, RequestAction::Continue);
    }

    #[tokio::test]
    async fn the_scheme_is_case_insensitive() {
        let auth = hmac_plugin().await;
        let request = request(
            "/api",
            &[(
                "authorization",
                &format!("bearer  {}", hs256(&valid_claims())),
            )],
        );
        assert!(matches!(
            run(&auth, &request).await,
            RequestAction::Rewrite(_)
        ));
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let auth = hmac_plugin().await;
        let expired = hs256(&json!({"sub": "alice", "exp": now() - 3600}));
        assert_eq!(
            rejection(&auth, &expired).await,
            "invalid token: token has expired"
        );
    }

    #[tokio::test]
    async fn leeway_covers_clock_skew_and_is_configurable() {
        let just_expired = hs256(&json!({"sub": "alice", "exp": now() - 10}));
        let lenient = hmac_plugin().await;
        assert_eq!(
            accepted_subject(&lenient, &just_expired).await,
            Some("alice".to_owned())
        );
        let strict = plugin(json!({"jwt_secret": SECRET, "leeway_seconds": 0})).await;
        assert_eq!(
            rejection(&strict, &just_expired).await,
            "invalid token: token has expired"
        );
    }

    #[tokio::test]
    async fn a_token_without_exp_is_refused() {
        let auth = hmac_plugin().await;
        assert_eq!(
            rejection(&auth, &hs256(&json!({"sub": "alice"}))).await,
            "invalid token: missing required claim `exp`"
        );
        // An `exp` that is not a number does not count as one.
        assert_eq!(
            rejection(&auth, &hs256(&json!({"sub": "alice", "exp": "soon"}))).await,
            "invalid token: missing required claim `exp`"
        );
    }

    #[tokio::test]
    async fn a_token_not_valid_yet_is_refused() {
        let auth = hmac_plugin().await;
        let early = hs256(&json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600}));
        assert_eq!(
            rejection(&auth, &early).await,
            "invalid token: token is not valid yet (`nbf`)"
        );
        let odd = hs256(&json!({"sub": "alice", "exp": now() + 60, "nbf": "now"}));
        assert_eq!(
            rejection(&auth, &odd).await,
            "invalid token: claim `nbf` has the wrong type"
        );
    }

    #[tokio::test]
    async fn a_token_signed_with_another_secret_is_refused() {
        let auth = hmac_plugin().await;
        let forged = token(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another-secret-another-secret-another"),
            &valid_claims(),
        );
        assert_eq!(
            rejection(&auth, &forged).await,
            "invalid token: signature does not match"
        );
    }

    #[tokio::test]
    async fn a_tampered_token_is_refused() {
        let auth = hmac_plugin().await;
        let genuine = hs256(&valid_claims());
        let (header, rest) = genuine.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mallory = hs256(&json!({"sub": "mallory", "exp": now() + 600}));
        let mallory_claims = mallory.split('.').nth(1).unwrap();
        let spliced = format!("{header}.{mallory_claims}.{signature}");
        assert_eq!(
            rejection(&auth, &spliced).await,
            "invalid token: signature does not match"
        );
    }

    #[tokio::test]
    async fn only_the_configured_hmac_algorithms_are_accepted() {
        let hs384 = token(
            Algorithm::HS384,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &valid_claims(),
        );
        let default = hmac_plugin().await;
        assert_eq!(
            rejection(&default, &hs384).await,
            "invalid token: algorithm HS384 is not accepted; expected HS256"
        );
        let both = plugin(json!({"jwt_secret": SECRET, "algorithms": ["HS384", "HS512"]})).await;
        assert_eq!(
            accepted_subject(&both, &hs384).await,
            Some("alice".to_owned())
        );
        assert_eq!(
            rejection(&both, &hs256(&valid_claims())).await,
            "invalid token: algorithm HS256 is not accepted; expected HS384, HS512"
        );
    }

    #[tokio::test]
    async fn rs256_tokens_are_checked_against_the_public_key() {
        let (private, public) = rsa_pems();
        let auth = plugin(json!({"public_key": public})).await;
        let signing = EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();
        let good = token(Algorithm::RS256, &signing, &valid_claims());
        assert_eq!(
            accepted_subject(&auth, &good).await,
            Some("alice".to_owned())
        );

        // Another algorithm of the family is not accepted unless configured.
        let ps256 = token(Algorithm::PS256, &signing, &valid_claims());
        assert_eq!(
            rejection(&auth, &ps256).await,
            "invalid token: algorithm PS256 is not accepted; expected RS256"
        );

        // A token signed by another key (here an EC key, announced as RS256
        // by splicing) fails the signature check.
        let (ec_private, _) = p256_pems();
        let other = token(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
            &valid_claims(),
        );
        let good_head = good.split('.').next().unwrap();
        let (_, other_rest) = other.split_once('.').unwrap();
        assert_eq!(
            rejection(&auth, &format!("{good_head}.{other_rest}")).await,
            "invalid token: signature does not match"
        );
    }

    #[tokio::test]
    async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused() {
        // Algorithm confusion: the attacker knows the public key and signs
        // an HS256 token with its PEM text as the HMAC secret.
        let (_, public) = rsa_pems();
        let auth = plugin(json!({"public_key": public})).await;
        let confused = token(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
            &valid_claims(),
        );
        assert_eq!(
            rejection(&auth, &confused).await,
            "invalid token: algorithm HS256 is not accepted; expected RS256"
        );
        // Even when configured to list HS256, a public key cannot be used for it.
        let error =
            config_error_of(json!({"public_key": public, "algorithms": ["RS256", "HS256"]})).await;
        assert_eq!(
            error,
            "`algorithms`: HS256 cannot be used with the RSA public key in `public_key`; expected one of RS256, RS384, RS512, PS256, PS384, PS512"
        );
    }

    #[tokio::test]
    async fn es256_keys_are_read_from_a_file_and_es384_is_picked_by_curve() {
        let dir = tempfile::tempdir().unwrap();

        let (private, public) = p256_pems();
        let path = dir.path().join("p256.pem");
        std::fs::write(&path, &public).unwrap();
        let auth = plugin(json!({"public_key_file": path})).await;
        let signing = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        assert_eq!(
            accepted_subject(&auth, &token(Algorithm::ES256, &signing, &valid_claims())).await,
            Some("alice".to_owned())
        );
        let error = config_error_of(json!({"public_key": public, "algorithms": ["ES384"]})).await;
        assert_eq!(
            error,
            "`algorithms`: the EC public key in `public_key` cannot verify ES384 signatures"
        );

        let (private, public) = p384_pems();
        let auth = plugin(json!({"public_key": public})).await;
        let signing = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        assert_eq!(
            accepted_subject(&auth, &token(Algorithm::ES384, &signing, &valid_claims())).await,
            Some("alice".to_owned())
        );
    }

    #[tokio::test]
    async fn a_request_without_a_bearer_token_is_refused() {
        let auth = hmac_plugin().await;
        assert_missing_token(run(&auth, &request("/api", &[])).await);
        assert_missing_token(
            run(
                &auth,
                &request("/api", &[("authorization", "Basic YWxpY2U6c2VjcmV0")]),
            )
            .await,
        );
    }

    #[tokio::test]
    async fn a_malformed_authorization_header_is_refused() {
        let auth = hmac_plugin().await;
        let good = hs256(&valid_claims());
        for (value, error) in [
            ("Bearer", "invalid token: empty bearer token"),
            ("Bearer   ", "invalid token: empty bearer token"),
            (
                &format!("Bearer {good} extra"),
                "invalid token: malformed authorization header: expected `Bearer <token>`",
            ),
            (
                &format!("Bearer {good}, Bearer {good}"),
                "invalid token: malformed authorization header: expected `Bearer <token>`",
            ),
            (
                "Bearer not-a-jwt",
                "invalid token: malformed token: expected three base64url parts separated by `.`",
            ),
            (
                "Bearer a.b.c",
                "invalid token: malformed token: a part is not valid base64url",
            ),
        ] {
            let action = run(&auth, &request("/api", &[("authorization", value)])).await;
            assert_eq!(invalid_token_error(action), error, "for {value:?}");
        }
    }

    #[tokio::test]
    async fn exempt_paths_pass_without_a_token() {
        let auth = hmac_plugin().await;
        for path in ["/healthz", "/public/", "/public/a/b.css"] {
            assert_eq!(
                run(&auth, &request(path, &[])).await,
                RequestAction::Continue,
                "{path}"
            );
        }
        for path in [
            "/healthz/",
            "/healthzz",
            "/public",
            "/api",
            "/public/../admin",
            "/public/%2E%2e/admin",
            "/public/./x",
        ] {
            assert_missing_token(run(&auth, &request(path, &[])).await);
        }
    }

    /// Exemptions are decided on the decoded path; a path that a plugin or
    /// proxy could read as another one is never exempt.
    #[tokio::test]
    async fn exemptions_are_decided_on_the_decoded_unambiguous_path() {
        let auth = hmac_plugin().await;
        for path in [
            "/%70ublic/x",
            "/public/%61.css",
            "/%68ealthz",
            "/public/a%20b",
        ] {
            assert_eq!(
                run(&auth, &request(path, &[])).await,
                RequestAction::Continue,
                "{path}"
            );
        }
        for path in [
            "/public/..%2fadmin",
            "/public/..%2Fadmin",
            "/public/%2e%2e%2fadmin",
            "/public/%2e%2e/admin",
            "/public/.%2e/admin",
            "/public/..%5cadmin",
            "/public/..\\admin",
            "/public/%252e%252e/admin",
            "/public//../admin",
            "//public/x",
            "/public//x",
            "/public/%00",
            "/public/%0a",
            "/public/%zz",
            "/public/%2",
            "/public/%ff",
            "/healthz%2f",
            "/%2fhealthz",
        ] {
            assert_missing_token(run(&auth, &request(path, &[])).await);
        }
        assert_eq!(exemption_path("/a/b/"), Some("/a/b/".into()));
        assert_eq!(exemption_path("/%41/b"), Some("/A/b".into()));
        assert_eq!(exemption_path("/a/./b"), None);
    }

    #[tokio::test]
    async fn a_client_sent_subject_header_is_removed() {
        let auth = hmac_plugin().await;
        let forged = ("x-auth-subject", "root");

        // With a valid token: replaced by the token's subject.
        let with_token = request(
            "/api",
            &[("authorization", &bearer(&hs256(&valid_claims()))), forged],
        );
        let RequestAction::Rewrite(passed) = run(&auth, &with_token).await else {
            panic!("expected a rewrite");
        };
        assert_eq!(passed.headers[SUBJECT_HEADER], "alice");
        assert_eq!(passed.headers.len(), 2);

        // With a valid token without `sub`: removed.
        let no_sub = request(
            "/api",
            &[
                (
                    "authorization",
                    &bearer(&hs256(&json!({"exp": now() + 60}))),
                ),
                ("X-Auth-Subject", "root"),
            ],
        );
        let RequestAction::Rewrite(passed) = run(&auth, &no_sub).await else {
            panic!("expected a rewrite");
        };
        assert_eq!(passed.header(SUBJECT_HEADER), None);
        assert_eq!(passed.headers.len(), 1);

        // On an exempt path: removed too.
        let exempt = request("/healthz", &[forged]);
        let RequestAction::Rewrite(passed) = run(&auth, &exempt).await else {
            panic!("expected a rewrite");
        };
        assert!(passed.headers.is_empty());
    }

    #[tokio::test]
    async fn a_subject_with_control_characters_is_refused() {
        let auth = hmac_plugin().await;
        let token = hs256(&json!({"sub": "alice\r\nx-admin: 1", "exp": now() + 60}));
        assert_eq!(
            rejection(&auth, &token).await,
            "invalid token: `sub` claim contains control characters"
        );
    }

    #[tokio::test]
    async fn issuer_and_audience_are_required_when_configured() {
        let auth = plugin(json!({
            "jwt_secret": SECRET,
            "issuer": "https://id.example",
            "audience": ["backworks", "api"],
        }))
        .await;
        let exp = now() + 60;
        let good =
            hs256(&json!({"sub": "a", "exp": exp, "iss": "https://id.example", "aud": "api"}));
        assert_eq!(accepted_subject(&auth, &good).await, Some("a".to_owned()));
        for (claims, error) in [
            (
                json!({"exp": exp, "aud": "api"}),
                "invalid token: missing required claim `iss`",
            ),
            (
                json!({"exp": exp, "iss": "https://id.example"}),
                "invalid token: missing required claim `aud`",
            ),
            (
                json!({"exp": exp, "iss": "https://evil.example", "aud": "api"}),
                "invalid token: issuer (`iss`) is not accepted",
            ),
            (
                json!({"exp": exp, "iss": "https://id.example", "aud": "other"}),
                "invalid token: audience (`aud`) is not accepted",
            ),
        ] {
            assert_eq!(rejection(&auth, &hs256(&claims)).await, error, "{claims}");
        }

        // A token meant for an audience is refused by a plugin configured
        // without one.
        let unconfigured = hmac_plugin().await;
        assert_eq!(
            rejection(&unconfigured, &good).await,
            "invalid token: audience (`aud`) is not accepted"
        );
    }

    #[tokio::test]
    async fn configuration_errors_name_the_field() {
        let (private_rsa, public_rsa) = rsa_pems();
        let cases = [
            (
                Value::Null,
                "expected an object with `jwt_secret`, `public_key` or `public_key_file`, got null",
            ),
            (
                json!({}),
                "no key: expected one of `jwt_secret` (HMAC), `public_key` or `public_key_file` (RSA or EC public key in PEM form)",
            ),
            (
                json!({"jwt_secret": SECRET, "public_key": public_rsa}),
                "`jwt_secret` and `public_key` are mutually exclusive: expected exactly one key",
            ),
            (
                json!({"jwt_secret": ""}),
                "`jwt_secret`: expected a non-empty string, got an empty string",
            ),
            (
                json!({"jwt_secret": 42}),
                "`jwt_secret`: expected a non-empty string, got a number",
            ),
            (
                json!({"jwt_secret": SECRET, "exempt": ["/x"]}),
                "unknown field `exempt`; expected one of jwt_secret, public_key, public_key_file, algorithms, exempt_paths, issuer, audience, leeway_seconds",
            ),
            (
                json!({"jwt_secret": SECRET, "algorithms": []}),
                "`algorithms`: expected a non-empty array of algorithm names such as \"HS256\" or \"RS256\", got an empty array",
            ),
            (
                json!({"jwt_secret": SECRET, "algorithms": ["none"]}),
                "`algorithms[0]`: unknown algorithm \"none\"; expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384",
            ),
            (
                json!({"jwt_secret": SECRET, "algorithms": ["RS256"]}),
                "`algorithms`: RS256 cannot be used with the HMAC secret in `jwt_secret`; expected one of HS256, HS384, HS512",
            ),
            (
                json!({"jwt_secret": SECRET, "exempt_paths": "/healthz"}),
                "`exempt_paths`: expected an array of paths such as \"/healthz\" or \"/public/*\", got a string",
            ),
            (
                json!({"jwt_secret": SECRET, "exempt_paths": ["/ok", "healthz"]}),
                "`exempt_paths[1]`: expected a path starting with `/`, got \"healthz\"",
            ),
            (
                json!({"jwt_secret": SECRET, "exempt_paths": ["/a/*/b"]}),
                "`exempt_paths[0]`: `*` is only allowed as the last character (a prefix match), got \"/a/*/b\"",
            ),
            (
                json!({"jwt_secret": SECRET, "issuer": ""}),
                "`issuer`: expected a non-empty string or a non-empty array of non-empty strings, got an empty string",
            ),
            (
                json!({"jwt_secret": SECRET, "audience": ["a", 1]}),
                "`audience[1]`: expected a non-empty string, got a number",
            ),
            (
                json!({"jwt_secret": SECRET, "leeway_seconds": -1}),
                "`leeway_seconds`: expected a whole number of seconds from 0 to 3600, got -1",
            ),
            (
                json!({"jwt_secret": SECRET, "leeway_seconds": 1.5}),
                "`leeway_seconds`: expected a whole number of seconds from 0 to 3600, got 1.5",
            ),
            (
                json!({"jwt_secret": SECRET, "leeway_seconds": 86400}),
                "`leeway_seconds`: expected a whole number of seconds from 0 to 3600, got 86400",
            ),
            (
                json!({"public_key": "not a pem"}),
                "`public_key`: expected a public key in PEM form (`-----BEGIN PUBLIC KEY-----`), found no PEM header",
            ),
            (
                json!({"public_key": private_rsa}),
                "`public_key`: this is a private key (`BEGIN PRIVATE KEY`); give the public key instead (e.g. `openssl pkey -pubout`)",
            ),
            (
                json!({"public_key": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
                "`public_key`: expected `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`, found `BEGIN CERTIFICATE`",
            ),
            (
                json!({"public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}),
                "`public_key`: not a usable RSA or EC (P-256, P-384) public key",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config_error_of(config.clone()).await, expected, "{config}");
        }

        let missing = std::env::temp_dir().join("backworks-auth-test-no-such-key.pem");
        let error = config_error_of(json!({"public_key_file": missing})).await;
        assert!(
            error.starts_with(&format!(
                "`public_key_file`: cannot read {}: ",
                missing.display()
            )),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_failed_initialize_keeps_the_previous_configuration() {
        let auth = hmac_plugin().await;
        assert!(auth.initialize(&json!({})).await.is_err());
        assert_eq!(
            accepted_subject(&auth, &hs256(&valid_claims())).await,
            Some("alice".to_owned())
        );
    }

    #[tokio::test]
    async fn an_uninitialized_plugin_refuses_requests_and_is_unhealthy() {
        let auth = JwtAuth::default();
        let error = auth.before_request(&request("/healthz", &[])).await;
        assert!(
            matches!(&error, Err(BackworksError::Request(m)) if m.contains("not been initialized")),
            "{error:?}"
        );
        assert!(matches!(
            auth.health_check().await,
            Err(BackworksError::Unhealthy(_))
        ));
        let auth = hmac_plugin().await;
        auth.health_check().await.unwrap();
    }

    #[tokio::test]
    async fn debug_never_shows_the_key() {
        let auth = hmac_plugin().await;
        let shown = format!("{auth:?} {auth:#?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&SECRET[..8]), "{shown}");
        assert!(shown.contains("HmacSecret"), "{shown}");
        assert!(shown.contains("/healthz"), "{shown}");

        let (_, public) = rsa_pems();
        let auth = plugin(json!({"public_key": public})).await;
        let shown = format!("{auth:?}");
        let body_line = public.lines().nth(1).unwrap();
        assert!(!shown.contains(body_line), "{shown}");
        assert!(shown.contains("RsaPublicKey"), "{shown}");
    }

    #[test]
    fn the_plugin_describes_itself() {
        let auth = JwtAuth::default();
        assert_eq!(auth.name(), "auth");
        assert_eq!(auth.version(), env!("CARGO_PKG_VERSION"));
    }
}
