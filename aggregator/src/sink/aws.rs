//! What the CloudWatch sinks share: AWS credentials and SigV4 signing (`aws-sigv4`), sent
//! with reqwest. Credentials come from the sink's config (`secret_access_key` or
//! `secret_access_key_file`), else the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//! `AWS_PROFILE` or `default`). The secret key and the session token are secrets.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
}

/// The credential fields of a sink config.
#[derive(Debug, Clone, Copy)]
pub struct CredentialFields<'a> {
    pub access_key_id: Option<&'a String>,
    pub secret_access_key: Option<&'a Secret>,
    pub secret_access_key_file: Option<&'a PathBuf>,
    pub profile: Option<&'a String>,
}

fn resolve_credentials(
    fields: CredentialFields<'_>,
) -> Result<(String, Secret, Option<Secret>), SinkError> {
    if let Some(access_key_id) = fields.access_key_id {
        let secret = secret::require(
            "secret_access_key",
            fields.secret_access_key,
            fields.secret_access_key_file,
        )?;
        return Ok((access_key_id.clone(), secret, None));
    }
    if let (Ok(access_key_id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        let token = std::env::var("AWS_SESSION_TOKEN").ok().map(Secret::new);
        return Ok((access_key_id, Secret::new(secret), token));
    }
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".aws/credentials")));
    let profile = fields
        .profile
        .cloned()
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".to_owned());
    if let Some(path) = path.filter(|path| path.is_file()) {
        let text = std::fs::read_to_string(&path).map_err(|source| SinkError::SecretFile {
            field: "credentials",
            path: path.display().to_string(),
            source,
        })?;
        if let Some(found) = shared_profile(&text, &profile) {
            return Ok(found);
        }
    }
    Err(SinkError::Invalid {
        field: "credentials",
        problem: format!(
            "none found: set access_key_id and secret_access_key(_file), the AWS_* \
             environment variables, or profile {profile:?} in the shared credentials file"
        ),
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
        timeout: std::time::Duration,
    ) -> Result<Self, SinkError> {
        let (access_key_id, secret_access_key, session_token) = resolve_credentials(credentials)?;
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
            access_key_id,
            secret_access_key,
            session_token,
        })
    }

    /// POSTs a signed request to the endpoint's root; `what` names the call in errors.
    pub async fn post(
        &self,
        what: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest::Response, DeliveryError> {
        let identity = Credentials::new(
            &self.access_key_id,
            self.secret_access_key.expose(),
            self.session_token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            None,
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
    use super::*;

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
