//! What the HTTP sinks share: one way to build a client and one way to read an answer.
//!
//! Classification (DESIGN §7): 2xx accepted; 429 throttled, honouring `Retry-After`
//! (seconds or an HTTP date); 408 and 5xx transient; any other 4xx permanent; a refused
//! connection, a reset or a timeout transient. Error texts never include the URL, which
//! may itself be a secret (a Slack incoming webhook).

use std::time::{Duration, SystemTime};

use super::{DeliveryError, SinkError};

/// How long a 429 without a usable `Retry-After` waits before the next attempt.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// At most this much of a failed answer's body is kept as the delivery's last error.
const ERROR_BODY_CHARS: usize = 200;

/// A client whose every request gives up after `timeout`.
pub fn client(timeout: Duration) -> Result<reqwest::Client, SinkError> {
    build(builder(timeout))
}

/// Like [`client`], but never through a proxy: for link-local endpoints (the cloud's
/// metadata and credential services) that a proxy cannot reach.
pub fn direct_client(timeout: Duration) -> Result<reqwest::Client, SinkError> {
    build(builder(timeout).no_proxy())
}

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("hostwatch-aggregator/", env!("CARGO_PKG_VERSION")))
}

fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, SinkError> {
    builder.build().map_err(|error| SinkError::Invalid {
        field: "http client",
        problem: error.without_url().to_string(),
    })
}

/// Sends a request and classifies the answer; `what` names the call in errors
/// (e.g. "slack chat.postMessage").
pub async fn send(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, DeliveryError> {
    let response = request
        .send()
        .await
        .map_err(|error| transport_error(what, error))?;
    check(what, response).await
}

/// A failure before an answer arrived: always worth retrying.
pub fn transport_error(what: &str, error: reqwest::Error) -> DeliveryError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if refused(&error) {
        "connection refused"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let error = error.without_url();
    DeliveryError::Transient(format!("{what}: {kind}: {error}"))
}

/// Whether the connection was refused (nothing listens there): the cause is an
/// `io::Error` somewhere down the error's sources.
fn refused(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Accepts 2xx; turns anything else into the matching `DeliveryError`.
pub async fn check(
    what: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, DeliveryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(ERROR_BODY_CHARS).collect();
    let reason = format!("{what}: http {status}: {}", body.trim());
    Err(match status.as_u16() {
        429 => DeliveryError::Throttled {
            retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            reason,
        },
        408 => DeliveryError::Transient(reason),
        400..=499 => DeliveryError::Permanent(reason),
        _ => DeliveryError::Transient(reason),
    })
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form senders may use.
fn httpdate(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|name| name == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut clock = time.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
