//! Who may talk to the aggregator, and what they may see (DESIGN §8).
//!
//! Agents present a bearer token bound to a tenant (and optionally one cluster); a Hello
//! claiming another tenant or cluster is refused. Operators present a bearer token bound
//! to a tenant or global, with the role `viewer` (reads) or `admin` (reads and changes).
//! Tokens are never kept in clear: the config holds their SHA-256 (hex) or names a file
//! holding the token, which is hashed when read; a presented token is hashed and looked
//! up. Tokens are never logged nor returned: errors name the token's configured `name`.
//!
//! With no tokens of a kind configured, that side is open: agents may claim any
//! identity, operators are global admins. `config` then refuses a non-loopback listener.
//!
//! This module decides; `ingest` and `api` ask. `OperatorAuth` is the interceptor that
//! puts the operator's `Caller` into every Operator request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// `[auth]` in the aggregator's config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens agents present in their Hello (or as `authorization: Bearer …`).
    pub agent_tokens: Vec<AgentTokenConfig>,
    /// Tokens operators present as `authorization: Bearer …`.
    pub operator_tokens: Vec<OperatorTokenConfig>,
    /// TLS on the listener; client certificates for agents.
    pub tls: Option<TlsConfig>,
}

/// One agent token: which tenant (and cluster) it may report for.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenConfig {
    /// Names the token in logs and errors (the token itself never appears).
    pub name: String,
    pub tenant: String,
    /// When set, only this cluster of the tenant.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// One operator token: a tenant's (or global), viewer or admin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorTokenConfig {
    pub name: String,
    /// The tenant whose data it sees; absent: every tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    pub role: Role,
    /// Hex SHA-256 of the token, or a file holding the token: exactly one.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Where a token's secret comes from: its SHA-256 in the config, or a file holding it.
struct TokenSecret<'a> {
    sha256: Option<&'a String>,
    token_file: Option<&'a PathBuf>,
}

impl AgentTokenConfig {
    fn secret(&self) -> TokenSecret<'_> {
        TokenSecret {
            sha256: self.sha256.as_ref(),
            token_file: self.token_file.as_ref(),
        }
    }
}

impl OperatorTokenConfig {
    fn secret(&self) -> TokenSecret<'_> {
        TokenSecret {
            sha256: self.sha256.as_ref(),
            token_file: self.token_file.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Reads, publishes and changes.
    Admin,
}

/// TLS on the gRPC listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and private key of the aggregator.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM CA certificates that sign agents' client certificates. With it, a client
    /// certificate, when presented, must be signed by one of them.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Agents must present a client certificate (signed by `client_ca_file`); operators
    /// need none.
    #[serde(default)]
    pub require_agent_client_cert: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("config: auth.{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("config: auth.{field}: {path}: {source}")]
    Read {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AuthConfig {
    /// Whether agents must present a token.
    pub fn agents_enabled(&self) -> bool {
        !self.agent_tokens.is_empty()
    }

    /// Whether operators must present a token.
    pub fn operators_enabled(&self) -> bool {
        !self.operator_tokens.is_empty()
    }

    /// Every problem, for `check-config` (token files are read, so a missing one shows).
    pub fn validate(&self, errors: &mut Vec<String>) {
        let mut seen = Vec::new();
        for (index, token) in self.agent_tokens.iter().enumerate() {
            let field = format!("agent_tokens[{index}]");
            check_name(&field, &token.name, &mut seen, errors);
            if token.tenant.trim().is_empty() {
                errors.push(format!("config: auth.{field}.tenant: must not be empty"));
            }
            if let Err(error) = token.secret().digest(&field) {
                errors.push(error.to_string());
            }
        }
        for (index, token) in self.operator_tokens.iter().enumerate() {
            let field = format!("operator_tokens[{index}]");
            check_name(&field, &token.name, &mut seen, errors);
            if token.tenant.as_deref().is_some_and(|t| t.trim().is_empty()) {
                errors.push(format!(
                    "config: auth.{field}.tenant: must not be empty (leave it out for a global token)"
                ));
            }
            if let Err(error) = token.secret().digest(&field) {
                errors.push(error.to_string());
            }
        }
        if let Some(tls) = &self.tls
            && tls.require_agent_client_cert
            && tls.client_ca_file.is_none()
        {
            errors.push(
                "config: auth.tls.require_agent_client_cert: needs client_ca_file".to_owned(),
            );
        }
    }
}

fn check_name(field: &str, name: &str, seen: &mut Vec<String>, errors: &mut Vec<String>) {
    if name.trim().is_empty() {
        errors.push(format!("config: auth.{field}.name: must not be empty"));
    } else if seen.iter().any(|other| other == name) {
        errors.push(format!("config: auth.{field}.name: {name:?} is used twice"));
    }
    seen.push(name.to_owned());
}

type TokenDigest = [u8; 32];

fn digest_of(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The hex SHA-256 of a token, as `auth.*_tokens[].sha256` wants it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(digest_of(token))
}

impl TokenSecret<'_> {
    fn digest(&self, field: &str) -> Result<TokenDigest, AuthError> {
        let invalid = |message: &str| AuthError::Invalid {
            field: field.to_owned(),
            message: message.to_owned(),
        };
        match (self.sha256, self.token_file) {
            (Some(hex_digest), None) => {
                let bytes = hex::decode(hex_digest.trim())
                    .map_err(|_| invalid("sha256: not 64 hex digits"))?;
                TokenDigest::try_from(bytes.as_slice())
                    .map_err(|_| invalid("sha256: not 64 hex digits"))
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                    field: format!("{field}.token_file"),
                    path: path.to_owned(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(invalid("token_file: the file is empty"));
                }
                Ok(digest_of(token))
            }
            (Some(_), Some(_)) => Err(invalid("give sha256 or token_file, not both")),
            (None, None) => Err(invalid("needs sha256 or token_file")),
        }
    }
}

/// What an agent token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentGrant {
    name: String,
    tenant: String,
    cluster: Option<String>,
}

/// Who is calling the Operator service, and what they may see and do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name ("anonymous" without auth).
    pub name: String,
    /// The only tenant it sees; `None`: all of them.
    pub tenant: Option<String>,
    pub role: Role,
}

impl Caller {
    /// The caller when operator auth is off: a global admin.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            tenant: None,
            role: Role::Admin,
        }
    }

    /// Whether it may see data of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|own| own == tenant)
    }

    /// The tenant filter to apply to a request's `tenant` field: the caller's own tenant
    /// when it is bound to one. `None` when the request names a tenant it may not see:
    /// the answer is then empty, as for a tenant that does not exist.
    pub fn tenant_filter(&self, requested: &str) -> Option<String> {
        match &self.tenant {
            None => Some(requested.to_owned()),
            Some(own) if requested.is_empty() || requested == own => Some(own.clone()),
            Some(_) => None,
        }
    }

    /// Refuses viewers: for every RPC that publishes or changes something.
    pub fn require_admin(&self) -> Result<(), Status> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Viewer => Err(Status::permission_denied(format!(
                "token {:?} is a viewer: it may not publish or change anything",
                self.name
            ))),
        }
    }

    /// Refuses a change to another tenant's data.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), Status> {
        if self.sees(tenant) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "token {:?} is not allowed for tenant {tenant:?}",
                self.name
            )))
        }
    }
}

/// The caller a request was authenticated as (put there by `OperatorAuth`).
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

/// The aggregator's tokens, ready to check.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    agents: Arc<HashMap<TokenDigest, AgentGrant>>,
    operators: Arc<HashMap<TokenDigest, Caller>>,
    require_agent_client_cert: bool,
}

impl Auth {
    /// Reads token files and decodes digests.
    pub fn build(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut agents = HashMap::new();
        for (index, token) in config.agent_tokens.iter().enumerate() {
            let digest = token.secret().digest(&format!("agent_tokens[{index}]"))?;
            agents.insert(
                digest,
                AgentGrant {
                    name: token.name.clone(),
                    tenant: token.tenant.clone(),
                    cluster: token.cluster.clone(),
                },
            );
        }
        let mut operators = HashMap::new();
        for (index, token) in config.operator_tokens.iter().enumerate() {
            let digest = token
                .secret()
                .digest(&format!("operator_tokens[{index}]"))?;
            operators.insert(
                digest,
                Caller {
                    name: token.name.clone(),
                    tenant: token.tenant.clone(),
                    role: token.role,
                },
            );
        }
        Ok(Self {
            agents: Arc::new(agents),
            operators: Arc::new(operators),
            require_agent_client_cert: config
                .tls
                .as_ref()
                .is_some_and(|tls| tls.require_agent_client_cert),
        })
    }

    /// Checks an agent's Hello: the token (metadata first, then the Hello's field) must
    /// be known, and allow the tenant and cluster the Hello claims. `has_client_cert`:
    /// whether the connection presented a (CA-verified) client certificate.
    pub fn check_agent(
        &self,
        metadata: &MetadataMap,
        hello_token: &str,
        tenant: &str,
        cluster: &str,
        has_client_cert: bool,
    ) -> Result<(), Status> {
        if self.require_agent_client_cert && !has_client_cert {
            return Err(Status::unauthenticated(
                "this aggregator requires agents to present a client certificate",
            ));
        }
        if self.agents.is_empty() {
            return Ok(());
        }
        let token = bearer(metadata)?
            .or_else(|| Some(hello_token).filter(|token| !token.is_empty()))
            .ok_or_else(|| Status::unauthenticated("an agent token is required"))?;
        let grant = self
            .agents
            .get(&digest_of(token))
            .ok_or_else(|| Status::unauthenticated("unknown agent token"))?;
        if grant.tenant != tenant {
            return Err(Status::permission_denied(format!(
                "agent token {:?} is for tenant {:?}, not {tenant:?}",
                grant.name, grant.tenant
            )));
        }
        if let Some(allowed) = grant.cluster.as_deref().filter(|c| *c != cluster) {
            return Err(Status::permission_denied(format!(
                "agent token {:?} is for cluster {tenant}/{allowed}, not {tenant}/{cluster}",
                grant.name
            )));
        }
        Ok(())
    }

    /// The interceptor that authenticates every Operator request.
    pub fn operator_interceptor(&self) -> OperatorAuth {
        OperatorAuth {
            operators: Arc::clone(&self.operators),
        }
    }
}

/// The bearer token in `authorization`, if any; a malformed header is an error.
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization: not ASCII"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer <token>`"))?;
    Ok(Some(token.trim()))
}

/// Authenticates an Operator request and attaches its `Caller`.
#[derive(Debug, Clone)]
pub struct OperatorAuth {
    operators: Arc<HashMap<TokenDigest, Caller>>,
}

impl tonic::service::Interceptor for OperatorAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = if self.operators.is_empty() {
            Caller::anonymous()
        } else {
            let token = bearer(request.metadata())?
                .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
            self.operators
                .get(&digest_of(token))
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown token"))?
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        toml::from_str(&format!(
            r#"
            [[agent_tokens]]
            name = "acme-db"
            tenant = "acme"
            cluster = "db"
            sha256 = "{}"
            [[operator_tokens]]
            name = "acme-viewer"
            tenant = "acme"
            role = "viewer"
            sha256 = "{}"
            "#,
            token_sha256("agent-secret"),
            token_sha256("viewer-secret"),
        ))
        .unwrap()
    }

    fn with_bearer(token: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata
    }

    #[test]
    fn agent_tokens_bind_tenant_and_cluster() {
        let auth = Auth::build(&config()).unwrap();
        let none = MetadataMap::new();
        assert!(
            auth.check_agent(&none, "agent-secret", "acme", "db", false)
                .is_ok()
        );
        let metadata = with_bearer("agent-secret");
        assert!(auth.check_agent(&metadata, "", "acme", "db", false).is_ok());
        let other_tenant = auth
            .check_agent(&none, "agent-secret", "globex", "db", false)
            .unwrap_err();
        assert_eq!(other_tenant.code(), tonic::Code::PermissionDenied);
        assert!(!other_tenant.message().contains("agent-secret"));
        let other_cluster = auth
            .check_agent(&none, "agent-secret", "acme", "web", false)
            .unwrap_err();
        assert_eq!(other_cluster.code(), tonic::Code::PermissionDenied);
        let unknown = auth
            .check_agent(&none, "guess", "acme", "db", false)
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let missing = auth
            .check_agent(&none, "", "acme", "db", false)
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn without_tokens_everyone_is_let_in() {
        let auth = Auth::build(&AuthConfig::default()).unwrap();
        assert!(
            auth.check_agent(&MetadataMap::new(), "", "any", "thing", false)
                .is_ok()
        );
        let request =
            tonic::service::Interceptor::call(&mut auth.operator_interceptor(), Request::new(()))
                .unwrap();
        assert_eq!(caller(&request).unwrap(), Caller::anonymous());
    }

    #[test]
    fn operators_are_identified_by_their_token() {
        let auth = Auth::build(&config()).unwrap();
        let mut interceptor = auth.operator_interceptor();
        let mut request = Request::new(());
        *request.metadata_mut() = with_bearer("viewer-secret");
        let request = tonic::service::Interceptor::call(&mut interceptor, request).unwrap();
        let caller = caller(&request).unwrap();
        assert_eq!(caller.tenant.as_deref(), Some("acme"));
        assert_eq!(
            caller.require_admin().unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(caller.tenant_filter(""), Some("acme".to_owned()));
        assert_eq!(caller.tenant_filter("globex"), None);
        let anonymous =
            tonic::service::Interceptor::call(&mut interceptor, Request::new(())).unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn secrets_need_exactly_one_source() {
        let text = r#"
            [[operator_tokens]]
            name = "a"
            role = "admin"
            [[operator_tokens]]
            name = "a"
            role = "admin"
            sha256 = "abc"
            [[agent_tokens]]
            name = "b"
            tenant = ""
            token_file = "/nonexistent/token"
        "#;
        let config: AuthConfig = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        config.validate(&mut errors);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("needs sha256 or token_file"))
        );
        assert!(errors.iter().any(|e| e.contains("not 64 hex digits")));
        assert!(errors.iter().any(|e| e.contains("is used twice")));
        assert!(errors.iter().any(|e| e.contains("/nonexistent/token")));
        assert!(errors.iter().any(|e| e.contains("agent_tokens[0].tenant")));
    }

    #[test]
    fn a_token_file_is_hashed_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "file-secret\n").unwrap();
        let config = AuthConfig {
            agent_tokens: vec![AgentTokenConfig {
                name: "from-file".into(),
                tenant: "acme".into(),
                cluster: None,
                sha256: None,
                token_file: Some(path),
            }],
            ..AuthConfig::default()
        };
        let auth = Auth::build(&config).unwrap();
        assert!(
            auth.check_agent(&MetadataMap::new(), "file-secret", "acme", "any", false)
                .is_ok()
        );
    }
}
