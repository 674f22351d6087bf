//! What the CloudWatch sinks share: AWS credentials and SigV4 signing (`aws-sigv4`), sent
//! with reqwest.
//!
//! Credentials are looked for in the order of the AWS SDKs' default chain: the sink's
//! config (`access_key_id` with `secret_access_key` or `secret_access_key_file`), the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the
//! shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//! `profile`, `AWS_PROFILE` or `default`), the ECS/EKS container credentials endpoint
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`), and last the EC2 instance metadata
//! service (IMDSv2; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it,
//! `AWS_EC2_METADATA_DISABLED=true` turns it off). The last two hand out temporary keys:
//! they are fetched at the first delivery and again five minutes before they expire, and a
//! failure to fetch them is a transient delivery error (the events wait, nothing is
//! dead-lettered). The secret key and the session token are secrets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::secret::{self, Secret};
use super::{DeliveryError, SinkError, http};

/// Where and as whom to call AWS; part of each CloudWatch sink's config.
#[derive(Debug, Clone)]
pub struct AwsClient {
    client: reqwest::Client,
    endpoint: String,
    region: String,
    service: &'static str,
    source: Source,
    /// The temporary keys of a [`Source::Remote`], once fetched.
    fetched: Arc<tokio::sync::Mutex<Option<Keys>>>,
}

/// One set of keys.
#[derive(Debug, Clone)]
struct Keys {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// When temporary keys stop working.
    expires: Option<SystemTime>,
}

/// Temporary keys are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// The instance metadata service is on the local link: it answers at once or not at all.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an IMDSv2 session token is asked to live.
const METADATA_TOKEN_TTL_SECS: &str = "21600";
/// Where ECS serves `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const CONTAINER_CREDENTIALS_HOST: &str = "http://169.254.170.2";
const INSTANCE_METADATA_ENDPOINT: &str = "http://169.254.169.254";

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    Static(Keys),
    Remote {
        remote: Remote,
        /// No proxy (the endpoints are link-local) and a short timeout.
        client: reqwest::Client,
    },
}

/// An endpoint that hands out temporary keys.
#[derive(Debug, Clone, PartialEq)]
enum Remote {
    /// ECS task roles and EKS pod identity: one GET.
    Container {
        url: String,
        authorization: Option<Authorization>,
    },
    /// An EC2 instance profile, through IMDSv2: a session token, the role's name, its keys.
    InstanceMetadata { endpoint: String },
}

/// The container endpoint's `Authorization` value: given, or read from a file at every
/// fetch (EKS rotates it).
#[derive(Debug, Clone, PartialEq)]
enum Authorization {
    Value(Secret),
    File(PathBuf),
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Container { url, .. } => write!(f, "the container credentials endpoint {url}"),
            Remote::InstanceMetadata { endpoint } => {
                write!(f, "the EC2 instance metadata service at {endpoint}")
            }
        }
    }
}

/// The credential fields of a sink config.
#[derive(Debug, Clone, Copy)]
pub struct CredentialFields<'a> {
    pub access_key_id: Option<&'a String>,
    pub secret_access_key: Option<&'a Secret>,
    pub secret_access_key_file: Option<&'a PathBuf>,
    pub profile: Option<&'a String>,
}

/// Finds where the keys come from, in the SDKs' order; `env` reads an environment variable.
fn resolve_source(
    fields: CredentialFields<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, SinkError> {
    let fixed = |access_key_id: String, secret_access_key: Secret, session_token| {
        Ok(Source::Static(Keys {
            access_key_id,
            secret_access_key,
            session_token,
            expires: None,
        }))
    };
    if let Some(access_key_id) = fields.access_key_id {
        let secret = secret::require(
            "secret_access_key",
            fields.secret_access_key,
            fields.secret_access_key_file,
        )?;
        return fixed(access_key_id.clone(), secret, None);
    }
    if let (Some(access_key_id), Some(secret)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        let token = env("AWS_SESSION_TOKEN").map(Secret::new);
        return fixed(access_key_id, Secret::new(secret), token);
    }
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".aws/credentials")));
    let profile = fields
        .profile
        .cloned()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_owned());
    if let Some(path) = path.filter(|path| path.is_file()) {
        let text = std::fs::read_to_string(&path).map_err(|source| SinkError::SecretFile {
            field: "credentials",
            path: path.display().to_string(),
            source,
        })?;
        if let Some((key_id, secret, token)) = shared_profile(&text, &profile) {
            return fixed(key_id, secret, token);
        }
    }
    // An explicit profile that is not there is a mistake, not a reason to look further.
    if fields.profile.is_some() {
        return Err(SinkError::Invalid {
            field: "profile",
            problem: format!("{profile:?} is not in the shared credentials file"),
        });
    }
    let container_url = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .map(|relative| format!("{CONTAINER_CREDENTIALS_HOST}{relative}"))
        .or_else(|| env("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    let remote = if let Some(url) = container_url {
        let authorization = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            .map(|path| Authorization::File(PathBuf::from(path)))
            .or_else(|| {
                env("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                    .map(|value| Authorization::Value(Secret::new(value)))
            });
        Remote::Container { url, authorization }
    } else if env("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
    {
        return Err(SinkError::Invalid {
            field: "credentials",
            problem: format!(
                "none found: set access_key_id and secret_access_key(_file), the AWS_* \
                 environment variables, or profile {profile:?} in the shared credentials file \
                 (the EC2 instance metadata service is off: AWS_EC2_METADATA_DISABLED)"
            ),
        });
    } else {
        let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| INSTANCE_METADATA_ENDPOINT.to_owned());
        Remote::InstanceMetadata {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        }
    };
    let client = http::direct_client(METADATA_TIMEOUT)?;
    Ok(Source::Remote { remote, client })
}

/// The temporary keys `remote` hands out now.
async fn fetch(remote: &Remote, client: &reqwest::Client) -> Result<Keys, String> {
    let text = |response: reqwest::Response| async move {
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| error.without_url().to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!(
                "HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            ))
        }
    };
    let send = |request: reqwest::RequestBuilder| async move {
        request
            .send()
            .await
            .map_err(|error| error.without_url().to_string())
    };
    let document = match remote {
        Remote::Container { url, authorization } => {
            let mut request = client.get(url);
            match authorization {
                Some(Authorization::Value(value)) => {
                    request = request.header(reqwest::header::AUTHORIZATION, value.expose());
                }
                Some(Authorization::File(path)) => {
                    let value = std::fs::read_to_string(path)
                        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                    request = request.header(reqwest::header::AUTHORIZATION, value.trim());
                }
                None => {}
            }
            text(send(request).await?).await?
        }
        Remote::InstanceMetadata { endpoint } => {
            let token = text(
                send(client.put(format!("{endpoint}/latest/api/token")).header(
                    "x-aws-ec2-metadata-token-ttl-seconds",
                    METADATA_TOKEN_TTL_SECS,
                ))
                .await?,
            )
            .await
            .map_err(|error| format!("session token: {error}"))?;
            let roles_url = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
            let get = |url: String| {
                client
                    .get(url)
                    .header("x-aws-ec2-metadata-token", token.trim())
            };
            let roles = text(send(get(roles_url.clone())).await?)
                .await
                .map_err(|error| format!("instance profile: {error}"))?;
            let role = roles
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .ok_or("no instance profile (IAM role) is attached to this instance")?
                .to_owned();
            text(send(get(format!("{roles_url}{role}"))).await?)
                .await
                .map_err(|error| format!("role {role}: {error}"))?
        }
    };
    parse_keys(&document)
}

/// The JSON both endpoints answer with.
fn parse_keys(document: &str) -> Result<Keys, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Document {
        code: Option<String>,
        message: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
        expiration: Option<String>,
    }
    let document: Document = serde_json::from_str(document)
        .map_err(|error| format!("not a credentials document: {error}"))?;
    if let Some(code) = document.code.filter(|code| code != "Success") {
        return Err(format!("{code}: {}", document.message.unwrap_or_default()));
    }
    let (Some(access_key_id), Some(secret)) = (document.access_key_id, document.secret_access_key)
    else {
        return Err("the credentials document has no AccessKeyId or SecretAccessKey".to_owned());
    };
    let expires = document
        .expiration
        .map(|text| {
            humantime::parse_rfc3339_weak(&text)
                .map_err(|error| format!("Expiration {text:?}: {error}"))
        })
        .transpose()?;
    Ok(Keys {
        access_key_id,
        secret_access_key: Secret::new(secret),
        session_token: document
            .token
            .filter(|token| !token.is_empty())
            .map(Secret::new),
        expires,
    })
}

/// A profile of the shared credentials file (INI).
fn shared_profile(text: &str, profile: &str) -> Option<(String, Secret, Option<Secret>)> {
    let mut in_profile = false;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            in_profile = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            let value = value.trim().to_owned();
            match name.trim() {
                "aws_access_key_id" => key_id = Some(value),
                "aws_secret_access_key" => secret = Some(Secret::new(value)),
                "aws_session_token" => token = Some(Secret::new(value)),
                _ => {}
            }
        }
    }
    Some((key_id?, secret?, token))
}

impl AwsClient {
    /// `endpoint` defaults to `https://<service>.<region>.amazonaws.com`.
    pub fn new(
        service: &'static str,
        region: &str,
        endpoint: Option<&String>,
        credentials: CredentialFields<'_>,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        Self::with_env(service, region, endpoint, credentials, timeout, &|name| {
            std::env::var(name).ok()
        })
    }

    fn with_env(
        service: &'static str,
        region: &str,
        endpoint: Option<&String>,
        credentials: CredentialFields<'_>,
        timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SinkError> {
        let source = resolve_source(credentials, env)?;
        let endpoint = endpoint
            .cloned()
            .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"));
        reqwest::Url::parse(&endpoint).map_err(|error| SinkError::Invalid {
            field: "endpoint",
            problem: format!("not a URL ({error})"),
        })?;
        Ok(Self {
            client: http::client(timeout)?,
            endpoint: format!("{}/", endpoint.trim_end_matches('/')),
            region: region.to_owned(),
            service,
            source,
            fetched: Arc::default(),
        })
    }

    /// The keys to sign with now: the fixed ones, or temporary ones fetched (again) when
    /// there are none yet or they are about to expire.
    async fn keys(&self, what: &str) -> Result<Keys, DeliveryError> {
        let (remote, client) = match &self.source {
            Source::Static(keys) => return Ok(keys.clone()),
            Source::Remote { remote, client } => (remote, client),
        };
        let mut fetched = self.fetched.lock().await;
        let fresh = |keys: &Keys| {
            keys.expires.is_none_or(|expires| {
                expires
                    .duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY)
            })
        };
        if let Some(keys) = fetched.as_ref().filter(|keys| fresh(keys)) {
            return Ok(keys.clone());
        }
        let keys = fetch(remote, client).await.map_err(|error| {
            DeliveryError::Transient(format!("{what}: credentials from {remote}: {error}"))
        })?;
        tracing::info!(
            service = self.service,
            access_key_id = %keys.access_key_id,
            expires = %keys.expires.map(|at| humantime::format_rfc3339_seconds(at).to_string()).unwrap_or_default(),
            "AWS credentials from {remote}"
        );
        *fetched = Some(keys.clone());
        Ok(keys)
    }

    /// POSTs a signed request to the endpoint's root; `what` names the call in errors.
    pub async fn post(
        &self,
        what: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest::Response, DeliveryError> {
        let keys = self.keys(what).await?;
        let identity = Credentials::new(
            &keys.access_key_id,
            keys.secret_access_key.expose(),
            keys.session_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            keys.expires,
            "hostwatch",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|error| DeliveryError::Permanent(format!("{what}: signing: {error}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &self.endpoint,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|error| DeliveryError::Permanent(format!("{what}: signing: {error}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|error| DeliveryError::Permanent(format!("{what}: signing: {error}")))?
            .into_parts();
        let mut request = self.client.post(&self.endpoint);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (signed_headers, _) = instructions.into_parts();
        for header in signed_headers {
            request = request.header(header.name(), header.value());
        }
        request
            .body(body)
            .send()
            .await
            .map_err(|error| http::transport_error(what, error))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::sink::testing::{Receiver, Reply};

    const NO_FIELDS: CredentialFields<'static> = CredentialFields {
        access_key_id: None,
        secret_access_key: None,
        secret_access_key_file: None,
        profile: None,
    };

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn remote(source: Source) -> Remote {
        match source {
            Source::Remote { remote, .. } => remote,
            Source::Static(keys) => panic!("static keys {}", keys.access_key_id),
        }
    }

    #[test]
    fn the_chain_is_config_then_environment_then_file_then_container_then_instance() {
        let key = "AKIDCONFIG".to_owned();
        let secret = Secret::new("s");
        let config = CredentialFields {
            access_key_id: Some(&key),
            secret_access_key: Some(&secret),
            ..NO_FIELDS
        };
        let everything = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
        ]);
        let Source::Static(keys) = resolve_source(config, &everything).unwrap() else {
            panic!("the config's keys");
        };
        assert_eq!(keys.access_key_id, "AKIDCONFIG");
        let Source::Static(keys) = resolve_source(NO_FIELDS, &everything).unwrap() else {
            panic!("the environment's keys");
        };
        assert_eq!(keys.access_key_id, "AKIDENV");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n",
        )
        .unwrap();
        let with_file = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
        ]);
        let Source::Static(keys) = resolve_source(NO_FIELDS, &with_file).unwrap() else {
            panic!("the file's keys");
        };
        assert_eq!(keys.access_key_id, "AKIDFILE");

        let container = env_of(&[
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-token"),
        ]);
        assert_eq!(
            remote(resolve_source(NO_FIELDS, &container).unwrap()),
            Remote::Container {
                url: "http://169.254.170.2/v2/credentials/abc".to_owned(),
                authorization: Some(Authorization::Value(Secret::new("pod-token"))),
            }
        );
        assert_eq!(
            remote(resolve_source(NO_FIELDS, &env_of(&[])).unwrap()),
            Remote::InstanceMetadata {
                endpoint: "http://169.254.169.254".to_owned()
            }
        );
        let moved = env_of(&[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "http://[fd00:ec2::254]/",
        )]);
        assert_eq!(
            remote(resolve_source(NO_FIELDS, &moved).unwrap()),
            Remote::InstanceMetadata {
                endpoint: "http://[fd00:ec2::254]".to_owned()
            }
        );
    }

    #[test]
    fn with_the_instance_metadata_service_off_nothing_found_is_a_config_error() {
        let off = env_of(&[("AWS_EC2_METADATA_DISABLED", "TRUE")]);
        let Err(err) = resolve_source(NO_FIELDS, &off) else {
            panic!("no credentials anywhere");
        };
        let text = err.to_string();
        assert!(
            text.contains("none found") && text.contains("AWS_EC2_METADATA_DISABLED"),
            "{text}"
        );

        let profile = "ops".to_owned();
        let Err(err) = resolve_source(
            CredentialFields {
                profile: Some(&profile),
                ..NO_FIELDS
            },
            &env_of(&[]),
        ) else {
            panic!("a named profile that is not there");
        };
        assert!(err.to_string().contains("\"ops\""), "{err}");
    }

    /// A stand-in for the EC2 instance metadata service (which cannot run here), speaking
    /// IMDSv2: keys that expire `expires_in` from now.
    async fn instance_metadata(expires_in: Duration) -> Receiver {
        Receiver::start_with(move |request, index| {
            let token_ok = request
                .headers
                .get("x-aws-ec2-metadata-token")
                .map(String::as_str)
                == Some("imds-session");
            match (request.method.as_str(), request.path.as_str()) {
                ("PUT", "/latest/api/token")
                    if request
                        .headers
                        .contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
                {
                    Reply::Status {
                        status: 200,
                        headers: Vec::new(),
                        body: "imds-session".into(),
                    }
                }
                ("GET", "/latest/meta-data/iam/security-credentials/") if token_ok => {
                    Reply::Status {
                        status: 200,
                        headers: Vec::new(),
                        body: "hostwatch-role\n".into(),
                    }
                }
                ("GET", "/latest/meta-data/iam/security-credentials/hostwatch-role")
                    if token_ok =>
                {
                    let expires = SystemTime::now() + expires_in;
                    Reply::json(json!({
                        "Code": "Success",
                        "Type": "AWS-HMAC",
                        "AccessKeyId": format!("ASIAIMDS{index}"),
                        "SecretAccessKey": "imds-secret",
                        "Token": "imds-session-token",
                        "Expiration": humantime::format_rfc3339_seconds(expires).to_string(),
                    }))
                }
                _ => Reply::status(401),
            }
        })
        .await
    }

    fn client_for(cloudwatch: &Receiver, env: &dyn Fn(&str) -> Option<String>) -> AwsClient {
        AwsClient::with_env(
            "logs",
            "eu-west-1",
            Some(&cloudwatch.url("")),
            NO_FIELDS,
            Duration::from_secs(5),
            env,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn instance_profile_keys_sign_requests_and_are_fetched_again_before_they_expire() {
        let metadata = instance_metadata(Duration::from_secs(6 * 3600)).await;
        let cloudwatch = Receiver::start().await;
        let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata.url(""))]);
        let aws = client_for(&cloudwatch, &env);
        for _ in 0..2 {
            aws.post(
                "put",
                &[("x-amz-target", "Logs_20140328.PutLogEvents")],
                b"{}".to_vec(),
            )
            .await
            .unwrap();
        }
        let asked: Vec<String> = metadata
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            asked,
            [
                "PUT /latest/api/token",
                "GET /latest/meta-data/iam/security-credentials/",
                "GET /latest/meta-data/iam/security-credentials/hostwatch-role",
            ],
            "fetched once, kept for the second request"
        );
        for request in cloudwatch.requests() {
            assert!(
                request.headers["authorization"].contains("Credential=ASIAIMDS2/"),
                "{}",
                request.headers["authorization"]
            );
            assert_eq!(
                request.headers["x-amz-security-token"],
                "imds-session-token"
            );
        }

        // Keys with less than five minutes left are fetched again for every request.
        let metadata = instance_metadata(Duration::from_secs(60)).await;
        let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata.url(""))]);
        let aws = client_for(&cloudwatch, &env);
        for _ in 0..2 {
            aws.post("put", &[], b"{}".to_vec()).await.unwrap();
        }
        assert_eq!(metadata.requests().len(), 6);
    }

    #[tokio::test]
    async fn no_instance_profile_is_a_transient_error_and_nothing_is_sent() {
        let metadata = Receiver::start_with(|request, _| match request.method.as_str() {
            "PUT" => Reply::Status {
                status: 200,
                headers: Vec::new(),
                body: "imds-session".into(),
            },
            _ => Reply::status(404),
        })
        .await;
        let cloudwatch = Receiver::start().await;
        let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata.url(""))]);
        let aws = client_for(&cloudwatch, &env);
        let Err(DeliveryError::Transient(text)) = aws.post("put", &[], b"{}".to_vec()).await else {
            panic!("a transient error: the events wait for a role to be attached");
        };
        assert!(
            text.contains("EC2 instance metadata service")
                && text.contains("instance profile: HTTP 404"),
            "{text}"
        );
        assert!(cloudwatch.requests().is_empty());
    }

    #[tokio::test]
    async fn container_credentials_send_the_token_read_from_its_file() {
        let container = Receiver::start_with(|request, _| {
            if request.headers.get("authorization").map(String::as_str)
                == Some("pod-identity-token")
            {
                Reply::json(json!({
                    "AccessKeyId": "ASIAPOD",
                    "SecretAccessKey": "pod-secret",
                    "Token": "pod-session",
                    "Expiration": "2099-01-01T00:00:00Z",
                }))
            } else {
                Reply::status(403)
            }
        })
        .await;
        let cloudwatch = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "pod-identity-token\n").unwrap();
        let env = env_of(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &container.url("/v1/credentials"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ]);
        let aws = client_for(&cloudwatch, &env);
        aws.post("put", &[], b"{}".to_vec()).await.unwrap();
        let signed = &cloudwatch.requests()[0];
        assert!(signed.headers["authorization"].contains("Credential=ASIAPOD/"));
        assert_eq!(signed.headers["x-amz-security-token"], "pod-session");
        assert_eq!(container.requests()[0].path, "/v1/credentials");
    }

    #[test]
    fn a_credentials_document_that_is_not_a_success_says_why() {
        let err = parse_keys(r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"denied"}"#)
            .map(|keys| keys.access_key_id)
            .unwrap_err();
        assert_eq!(err, "AssumeRoleUnauthorizedAccess: denied");
        assert!(parse_keys("<html>").is_err());
    }

    #[test]
    fn reads_a_profile_of_the_shared_credentials_file() {
        let text = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n\
                    [ops]\naws_access_key_id=AKIDOPS\naws_secret_access_key=s2\naws_session_token=t\n";
        let (key, secret, token) = shared_profile(text, "ops").unwrap();
        assert_eq!(key, "AKIDOPS");
        assert_eq!(secret.expose(), "s2");
        assert_eq!(token.unwrap().expose(), "t");
        let (key, _, token) = shared_profile(text, "default").unwrap();
        assert_eq!(key, "AKIDDEFAULT");
        assert!(token.is_none());
        assert!(shared_profile(text, "missing").is_none());
    }
}
