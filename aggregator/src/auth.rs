//! Who may talk to the aggregator, and what they may see (DESIGN §8).
//!
//! Agents present a bearer token bound to a tenant (and optionally one cluster), or a
//! client certificate bound the same way (`[[auth.agent_certs]]`: its subject common name
//! or a DNS name of its subjectAltName, verified against `auth.tls.client_ca_file` by the
//! TLS layer before this module sees it), or both, which must then agree; a Hello
//! claiming another tenant or cluster is refused. Operators present a bearer token bound
//! to a tenant or global, with the role `viewer` (reads) or `admin` (reads and changes).
//! Tokens are never kept in clear: the config holds their SHA-256 (hex) or names a file
//! holding the token, which is hashed when read; a presented token is hashed and looked
//! up. Tokens are never logged nor returned: errors name the token's configured `name`.
//!
//! With no tokens (nor, for agents, certificate bindings) of a kind configured, that side
//! is open: agents may claim any identity, operators are global admins. `config` then refuses a non-loopback listener.
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
    /// Client certificates agents present over TLS, bound to a tenant (and cluster).
    pub agent_certs: Vec<AgentCertConfig>,
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

/// One agent certificate binding: the verified client certificates it matches, and the
/// tenant (and cluster) they may report for. It matches on exactly one of `common_name`
/// (the subject's CN) or `dns_name` (a DNS name in the subjectAltName); either may start
/// with `*.` to match any one leftmost label (`*.db.acme.example` matches
/// `n1.db.acme.example`, not `db.acme.example` nor `a.n1.db.acme.example`). Comparison
/// ignores ASCII case. The first binding that matches, in config order, applies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentCertConfig {
    /// Names the binding in logs and errors.
    pub name: String,
    pub tenant: String,
    /// When set, only this cluster of the tenant.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub dns_name: Option<String>,
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
    /// Whether agents must authenticate (with a token or a bound client certificate).
    pub fn agents_enabled(&self) -> bool {
        !self.agent_tokens.is_empty() || !self.agent_certs.is_empty()
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
            check_binding(&field, &token.tenant, token.cluster.as_deref(), errors);
            if let Err(error) = token.secret().digest(&field) {
                errors.push(error.to_string());
            }
        }
        let client_ca = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_file.is_some());
        for (index, binding) in self.agent_certs.iter().enumerate() {
            let field = format!("agent_certs[{index}]");
            check_name(&field, &binding.name, &mut seen, errors);
            check_binding(&field, &binding.tenant, binding.cluster.as_deref(), errors);
            if let Err(error) = CertPattern::of(&field, binding) {
                errors.push(error.to_string());
            }
            if !client_ca {
                errors.push(format!(
                    "config: auth.{field}: needs auth.tls.client_ca_file (client certificates \
                     are verified against it)"
                ));
            }
        }
        for (index, token) in self.operator_tokens.iter().enumerate() {
            let field = format!("operator_tokens[{index}]");
            check_name(&field, &token.name, &mut seen, errors);
            if let Some(problem) = token.tenant.as_deref().and_then(proto::names::check) {
                errors.push(format!(
                    "config: auth.{field}.tenant: {problem} (leave it out for a global token)"
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

/// The tenant (and cluster) a token or certificate binds: names the protocol allows, as an
/// agent's Hello must carry them, or the binding could never match (or match a bad name).
fn check_binding(field: &str, tenant: &str, cluster: Option<&str>, errors: &mut Vec<String>) {
    if let Some(problem) = proto::names::check(tenant) {
        errors.push(format!("config: auth.{field}.tenant: {problem}"));
    }
    if let Some(problem) = cluster.and_then(proto::names::check) {
        errors.push(format!("config: auth.{field}.cluster: {problem}"));
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

/// What an agent token or certificate binding allows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentGrant {
    name: String,
    tenant: String,
    cluster: Option<String>,
}

/// Which client certificates a binding matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CertPattern {
    CommonName(String),
    DnsName(String),
}

impl CertPattern {
    fn of(field: &str, binding: &AgentCertConfig) -> Result<Self, AuthError> {
        let invalid = |message: &str| AuthError::Invalid {
            field: field.to_owned(),
            message: message.to_owned(),
        };
        let pattern = match (&binding.common_name, &binding.dns_name) {
            (Some(name), None) => CertPattern::CommonName(name.trim().to_owned()),
            (None, Some(name)) => CertPattern::DnsName(name.trim().to_owned()),
            (Some(_), Some(_)) => return Err(invalid("give common_name or dns_name, not both")),
            (None, None) => return Err(invalid("needs common_name or dns_name")),
        };
        let (CertPattern::CommonName(text) | CertPattern::DnsName(text)) = &pattern;
        let rest = text.strip_prefix("*.").unwrap_or(text);
        if rest.is_empty() || rest.contains('*') {
            return Err(invalid(
                "a name must not be empty, and `*` may only be the whole leftmost label (`*.`)",
            ));
        }
        Ok(pattern)
    }

    fn matches(&self, cert: &ClientCert) -> bool {
        match self {
            CertPattern::CommonName(pattern) => cert
                .common_names
                .iter()
                .any(|name| name_matches(pattern, name)),
            CertPattern::DnsName(pattern) => cert
                .dns_names
                .iter()
                .any(|name| name_matches(pattern, name)),
        }
    }
}

/// `pattern` equals `name` (ASCII case ignored), or is `*.rest` and `name` is one
/// non-empty label followed by `.rest`.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        None => pattern.eq_ignore_ascii_case(name),
        Some(rest) => name.split_once('.').is_some_and(|(label, name_rest)| {
            !label.is_empty() && name_rest.eq_ignore_ascii_case(rest)
        }),
    }
}

/// What the aggregator reads of an agent's client certificate (which the TLS layer has
/// already verified against `auth.tls.client_ca_file`): the names a binding may match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub common_names: Vec<String>,
    pub dns_names: Vec<String>,
}

impl ClientCert {
    /// Reads the subject's common names and the subjectAltName's DNS names of a DER
    /// certificate; one that cannot be read is UNAUTHENTICATED.
    pub fn from_der(der: &[u8]) -> Result<Self, Status> {
        let unreadable = |detail: String| {
            Status::unauthenticated(format!("client certificate: not readable: {detail}"))
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|error| unreadable(error.to_string()))?;
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok().map(str::to_owned))
            .collect();
        let dns_names = cert
            .subject_alternative_name()
            .map_err(|error| unreadable(error.to_string()))?
            .map(|extension| {
                extension
                    .value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(name) => {
                            Some((*name).to_owned())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            common_names,
            dns_names,
        })
    }

    /// `CN "agent-1", DNS "n1.db.acme.example"`, for errors and logs.
    fn describe(&self) -> String {
        let names: Vec<String> = self
            .common_names
            .iter()
            .map(|name| format!("CN {name:?}"))
            .chain(self.dns_names.iter().map(|name| format!("DNS {name:?}")))
            .collect();
        if names.is_empty() {
            "no CN nor DNS name".to_owned()
        } else {
            names.join(", ")
        }
    }
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
    /// Certificate bindings, in config order (the first match applies).
    agent_certs: Arc<Vec<(CertPattern, AgentGrant)>>,
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
        let mut agent_certs = Vec::new();
        for (index, binding) in config.agent_certs.iter().enumerate() {
            let pattern = CertPattern::of(&format!("agent_certs[{index}]"), binding)?;
            agent_certs.push((
                pattern,
                AgentGrant {
                    name: binding.name.clone(),
                    tenant: binding.tenant.clone(),
                    cluster: binding.cluster.clone(),
                },
            ));
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
            agent_certs: Arc::new(agent_certs),
            operators: Arc::new(operators),
            require_agent_client_cert: config
                .tls
                .as_ref()
                .is_some_and(|tls| tls.require_agent_client_cert),
        })
    }

    /// Checks an agent's Hello. `client_cert`: the connection's client certificate, if
    /// it presented one (the TLS layer verified it against the client CA).
    ///
    /// - With `require_agent_client_cert`, no certificate is UNAUTHENTICATED.
    /// - With certificate bindings configured, a certificate no binding matches is
    ///   UNAUTHENTICATED; one that matches is a credential, as a token is.
    /// - With tokens configured, a presented token (metadata first, then the Hello's
    ///   field) must be known (UNAUTHENTICATED otherwise).
    /// - With either configured, an agent needs at least one credential; when it has both,
    ///   they must name the same tenant and no two different clusters; and each must
    ///   allow the tenant and cluster the Hello claims. PERMISSION_DENIED otherwise,
    ///   naming the token or binding (never the token itself).
    pub fn check_agent(
        &self,
        metadata: &MetadataMap,
        hello_token: &str,
        tenant: &str,
        cluster: &str,
        client_cert: Option<&ClientCert>,
    ) -> Result<(), Status> {
        if self.require_agent_client_cert && client_cert.is_none() {
            return Err(Status::unauthenticated(
                "this aggregator requires agents to present a client certificate",
            ));
        }
        let cert_grant = match client_cert {
            Some(cert) if !self.agent_certs.is_empty() => Some(
                self.agent_certs
                    .iter()
                    .find(|(pattern, _)| pattern.matches(cert))
                    .map(|(_, grant)| grant)
                    .ok_or_else(|| {
                        Status::unauthenticated(format!(
                            "client certificate ({}) is not bound to a tenant: no \
                             auth.agent_certs entry matches it",
                            cert.describe()
                        ))
                    })?,
            ),
            _ => None,
        };
        let token = bearer(metadata)?.or_else(|| Some(hello_token).filter(|t| !t.is_empty()));
        let token_grant = match token {
            Some(token) if !self.agents.is_empty() => Some(
                self.agents
                    .get(&digest_of(token))
                    .ok_or_else(|| Status::unauthenticated("unknown agent token"))?,
            ),
            _ => None,
        };
        if self.agents.is_empty() && self.agent_certs.is_empty() {
            return Ok(());
        }
        let credentials: Vec<(String, &AgentGrant)> = token_grant
            .map(|grant| (format!("agent token {:?}", grant.name), grant))
            .into_iter()
            .chain(cert_grant.map(|grant| (format!("client certificate {:?}", grant.name), grant)))
            .collect();
        match credentials.as_slice() {
            [] if self.agent_certs.is_empty() => {
                return Err(Status::unauthenticated("an agent token is required"));
            }
            [] => {
                return Err(Status::unauthenticated(
                    "an agent token or a bound client certificate is required",
                ));
            }
            [(token, by_token), (cert, by_cert)] => {
                let clusters_differ = matches!(
                    (&by_token.cluster, &by_cert.cluster),
                    (Some(a), Some(b)) if a != b
                );
                if by_token.tenant != by_cert.tenant || clusters_differ {
                    return Err(Status::permission_denied(format!(
                        "{token} is for {} but {cert} is for {}: they must agree",
                        scope(by_token),
                        scope(by_cert)
                    )));
                }
            }
            _ => {}
        }
        for (what, grant) in &credentials {
            if grant.tenant != tenant {
                return Err(Status::permission_denied(format!(
                    "{what} is for tenant {:?}, not {tenant:?}",
                    grant.tenant
                )));
            }
            if let Some(allowed) = grant.cluster.as_deref().filter(|c| *c != cluster) {
                return Err(Status::permission_denied(format!(
                    "{what} is for cluster {tenant}/{allowed}, not {tenant}/{cluster}"
                )));
            }
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

/// "tenant \"acme\"" or "cluster acme/db", for errors.
fn scope(grant: &AgentGrant) -> String {
    match &grant.cluster {
        Some(cluster) => format!("cluster {}/{cluster}", grant.tenant),
        None => format!("tenant {:?}", grant.tenant),
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
            auth.check_agent(&none, "agent-secret", "acme", "db", None)
                .is_ok()
        );
        let metadata = with_bearer("agent-secret");
        assert!(auth.check_agent(&metadata, "", "acme", "db", None).is_ok());
        let other_tenant = auth
            .check_agent(&none, "agent-secret", "globex", "db", None)
            .unwrap_err();
        assert_eq!(other_tenant.code(), tonic::Code::PermissionDenied);
        assert!(!other_tenant.message().contains("agent-secret"));
        let other_cluster = auth
            .check_agent(&none, "agent-secret", "acme", "web", None)
            .unwrap_err();
        assert_eq!(other_cluster.code(), tonic::Code::PermissionDenied);
        let unknown = auth
            .check_agent(&none, "guess", "acme", "db", None)
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let missing = auth.check_agent(&none, "", "acme", "db", None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn without_tokens_everyone_is_let_in() {
        let auth = Auth::build(&AuthConfig::default()).unwrap();
        assert!(
            auth.check_agent(&MetadataMap::new(), "", "any", "thing", None)
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
    fn bound_tenants_and_clusters_are_names_the_protocol_allows() {
        let digest = "0".repeat(64);
        let text = format!(
            r#"
            [tls]
            cert_file = "/c"
            key_file = "/k"
            client_ca_file = "/ca"
            [[agent_tokens]]
            name = "a"
            tenant = ".."
            cluster = "db/1"
            sha256 = "{digest}"
            [[agent_certs]]
            name = "b"
            tenant = "-acme"
            cluster = ""
            common_name = "agent-1"
            [[operator_tokens]]
            name = "c"
            tenant = "."
            role = "admin"
            sha256 = "{digest}"
            [[operator_tokens]]
            name = "d"
            tenant = "acme"
            role = "viewer"
            sha256 = "{digest}"
        "#
        );
        let config: AuthConfig = toml::from_str(&text).unwrap();
        let mut errors = Vec::new();
        config.validate(&mut errors);
        assert_eq!(
            errors,
            [
                "config: auth.agent_tokens[0].tenant: \"..\" starts with '.'; a name starts \
                 with a letter, a digit or '_'",
                "config: auth.agent_tokens[0].cluster: \"db/1\" contains '/'; only letters, \
                 digits, '.', '_' and '-' are allowed",
                "config: auth.agent_certs[0].tenant: \"-acme\" starts with '-'; a name starts \
                 with a letter, a digit or '_'",
                "config: auth.agent_certs[0].cluster: must not be empty",
                "config: auth.operator_tokens[0].tenant: \".\" starts with '.'; a name starts \
                 with a letter, a digit or '_' (leave it out for a global token)",
            ]
        );
    }

    #[test]
    fn a_wildcard_matches_exactly_one_leftmost_label() {
        assert!(name_matches("*.db.acme.example", "n1.db.acme.example"));
        assert!(name_matches("*.db.acme.example", "N1.DB.Acme.example"));
        assert!(!name_matches("*.db.acme.example", "db.acme.example"));
        assert!(!name_matches("*.db.acme.example", "a.n1.db.acme.example"));
        assert!(!name_matches("*.db.acme.example", ".db.acme.example"));
        assert!(name_matches("agent-1", "AGENT-1"));
        assert!(!name_matches("agent-1", "agent-10"));
    }

    #[test]
    fn certificate_bindings_need_one_name_and_the_client_ca() {
        let text = r#"
            [[agent_certs]]
            name = "both"
            tenant = "acme"
            common_name = "a"
            dns_name = "b"
            [[agent_certs]]
            name = "neither"
            tenant = "acme"
            [[agent_certs]]
            name = "star"
            tenant = "acme"
            dns_name = "n*.acme.example"
        "#;
        let config: AuthConfig = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        config.validate(&mut errors);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("agent_certs[0]: give common_name or dns_name, not both")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("agent_certs[1]: needs common_name or dns_name")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("agent_certs[2]") && e.contains("leftmost label")),
            "{errors:#?}"
        );
        let without_ca = errors
            .iter()
            .filter(|e| e.contains("needs auth.tls.client_ca_file"))
            .count();
        assert_eq!(without_ca, 3, "{errors:#?}");
        assert!(config.agents_enabled());
    }

    #[test]
    fn a_bound_certificate_is_a_credential_and_must_agree_with_a_token() {
        let text = format!(
            r#"
            [[agent_tokens]]
            name = "acme-db"
            tenant = "acme"
            cluster = "db"
            sha256 = "{}"
            [[agent_certs]]
            name = "acme-web-certs"
            tenant = "acme"
            cluster = "web"
            common_name = "web-1"
            "#,
            token_sha256("agent-secret"),
        );
        let auth = Auth::build(&toml::from_str(&text).unwrap()).unwrap();
        let none = MetadataMap::new();
        let web = ClientCert {
            common_names: vec!["web-1".into()],
            dns_names: vec![],
        };
        assert!(
            auth.check_agent(&none, "", "acme", "web", Some(&web))
                .is_ok()
        );
        let disagree = auth
            .check_agent(&none, "agent-secret", "acme", "web", Some(&web))
            .unwrap_err();
        assert_eq!(disagree.code(), tonic::Code::PermissionDenied);
        assert!(
            disagree.message().ends_with("they must agree"),
            "{disagree:?}"
        );
        let unbound = ClientCert {
            common_names: vec!["db-1".into()],
            dns_names: vec![],
        };
        let refused = auth
            .check_agent(&none, "agent-secret", "acme", "db", Some(&unbound))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        // Without a certificate the token alone still works, as before.
        assert!(
            auth.check_agent(&none, "agent-secret", "acme", "db", None)
                .is_ok()
        );
        let nothing = auth.check_agent(&none, "", "acme", "db", None).unwrap_err();
        assert_eq!(nothing.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            nothing.message(),
            "an agent token or a bound client certificate is required"
        );
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
            auth.check_agent(&MetadataMap::new(), "file-secret", "acme", "any", None)
                .is_ok()
        );
    }
}
