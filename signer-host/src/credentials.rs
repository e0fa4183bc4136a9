//! AWS credentials for the enclave's KMS calls: the host fetches them (the instance role, from
//! IMDSv2, or this process's environment in development) and hands them to the enclave, again
//! before they expire. The enclave never reaches IMDS itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use signer_proto::pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::Error;

/// Where credentials come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// None: the enclave uses the local provider.
    #[default]
    None,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` of this process.
    Environment,
    /// The instance role, from the instance metadata service (IMDSv2).
    Imds,
}

/// The instance metadata service's address.
pub const IMDS: &str = "169.254.169.254:80";
/// Largest IMDS response read.
const MAX_RESPONSE: u64 = 64 * 1024;
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);
/// Refresh this long before expiry.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Fetches credentials from `source`; `None` when the source is `None`.
///
/// # Errors
/// [`Error::Credentials`] naming what failed.
pub async fn fetch(
    source: &CredentialSource,
    imds: &str,
) -> Result<Option<pb::AwsCredentials>, Error> {
    match source {
        CredentialSource::None => Ok(None),
        CredentialSource::Environment => {
            let var = |name| {
                std::env::var(name).map_err(|_| {
                    Error::Credentials("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY not set")
                })
            };
            Ok(Some(pb::AwsCredentials {
                access_key_id: var("AWS_ACCESS_KEY_ID")?,
                secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
                session_token: std::env::var("AWS_SESSION_TOKEN").unwrap_or_default(),
                expiration_unix: 0,
            }))
        }
        CredentialSource::Imds => from_imds(imds).await.map(Some),
    }
}

/// When to fetch again: `REFRESH_MARGIN` before expiry, or in 15 minutes for credentials without
/// one.
pub fn refresh_after(credentials: &pb::AwsCredentials, now: SystemTime) -> Duration {
    if credentials.expiration_unix == 0 {
        return Duration::from_secs(15 * 60);
    }
    let expiry = UNIX_EPOCH + Duration::from_secs(credentials.expiration_unix);
    expiry
        .duration_since(now + REFRESH_MARGIN)
        .unwrap_or(Duration::from_secs(10))
}

/// Keeps credentials fresh until `shutdown`: fetches, publishes them on `current` (the loader
/// hands them to a newly started enclave) and pushes them to the running enclave; fetches again
/// `REFRESH_MARGIN` before expiry; retries failures with doubling waits up to a minute.
pub async fn refresh(
    source: CredentialSource,
    imds: String,
    current: tokio::sync::watch::Sender<Option<pb::AwsCredentials>>,
    enclave: pb::enclave_service_client::EnclaveServiceClient<tonic::transport::Channel>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = match fetch(&source, &imds).await {
            Ok(Some(credentials)) => {
                let next = refresh_after(&credentials, SystemTime::now());
                tracing::info!(
                    expiration_unix = credentials.expiration_unix,
                    refresh_in_s = next.as_secs(),
                    "AWS credentials fetched"
                );
                // A failure here is fine: an enclave that is down gets them from the loader.
                let _ = enclave.clone().set_credentials(credentials.clone()).await;
                current.send_replace(Some(credentials));
                retry = Duration::from_secs(1);
                next
            }
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, retry_in_s = retry.as_secs(), "fetching AWS credentials failed");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// One HTTP/1.1 exchange with IMDS: `Connection: close`, bounded size, bounded time.
async fn http(imds: &str, method: &str, path: &str, header: (&str, &str)) -> Result<String, Error> {
    let exchange = async {
        let mut stream = TcpStream::connect(imds)
            .await
            .map_err(|_| Error::Credentials("IMDS unreachable"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{}: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            header.0, header.1
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|_| Error::Credentials("IMDS write failed"))?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(|_| Error::Credentials("IMDS read failed"))?;
        Ok::<_, Error>(response)
    };
    let response = tokio::time::timeout(IMDS_TIMEOUT, exchange)
        .await
        .map_err(|_| Error::Credentials("IMDS timed out"))??;
    let text =
        String::from_utf8(response).map_err(|_| Error::Credentials("IMDS answered non-UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(Error::Credentials("IMDS answered malformed HTTP"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(Error::Credentials(
            "IMDS refused (is IMDSv2 reachable with hop limit >= 1, and does the instance have a role?)",
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(Error::Credentials("IMDS answered chunked; not supported"));
    }
    Ok(body.to_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials {
    code: String,
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// The instance role's credentials from IMDSv2.
async fn from_imds(imds: &str) -> Result<pb::AwsCredentials, Error> {
    let token = http(
        imds,
        "PUT",
        "/latest/api/token",
        ("X-aws-ec2-metadata-token-ttl-seconds", "300"),
    )
    .await?;
    let auth = ("X-aws-ec2-metadata-token", token.trim());
    let roles = http(
        imds,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        auth,
    )
    .await?;
    let role = roles
        .lines()
        .next()
        .map(str::trim)
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .ok_or(Error::Credentials("the instance has no IAM role"))?;
    let body = http(
        imds,
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        auth,
    )
    .await?;
    let parsed: ImdsCredentials = serde_json::from_str(&body)
        .map_err(|_| Error::Credentials("IMDS credentials malformed"))?;
    if parsed.code != "Success" {
        return Err(Error::Credentials("IMDS did not return credentials"));
    }
    Ok(pb::AwsCredentials {
        access_key_id: parsed.access_key_id,
        secret_access_key: parsed.secret_access_key,
        session_token: parsed.token,
        expiration_unix: rfc3339_utc(&parsed.expiration)
            .ok_or(Error::Credentials("IMDS expiration malformed"))?,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (what IMDS emits) to Unix seconds.
fn rfc3339_utc(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_imds_timestamps() {
        assert_eq!(rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        // `date -u -d 2026-11-21T20:15:30Z +%s`
        assert_eq!(rfc3339_utc("2026-11-21T20:15:30Z"), Some(1_795_292_130));
        assert_eq!(rfc3339_utc("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        for bad in [
            "",
            "2026-11-21 20:15:30Z",
            "2026-13-01T00:00:00Z",
            "2026-11-21T20:15:30+01:00",
            "x026-11-21T20:15:30Z",
        ] {
            assert_eq!(rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn refreshes_before_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiring = pb::AwsCredentials {
            expiration_unix: 1_000_000 + 3600,
            ..Default::default()
        };
        assert_eq!(
            refresh_after(&expiring, now),
            Duration::from_secs(3600) - REFRESH_MARGIN
        );
        let nearly = pb::AwsCredentials {
            expiration_unix: 1_000_000 + 60,
            ..Default::default()
        };
        assert_eq!(refresh_after(&nearly, now), Duration::from_secs(10));
        assert_eq!(
            refresh_after(&pb::AwsCredentials::default(), now),
            Duration::from_secs(900)
        );
    }

    /// A fake IMDSv2 answering the three requests, checking the token is sent back.
    async fn fake_imds(answers: Vec<(&'static str, String)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for (expect, body) in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 4096];
                let n = stream.read(&mut request).await.unwrap();
                let request = String::from_utf8_lossy(&request[..n]).into_owned();
                let (status, body) = if request.contains(expect) {
                    ("200 OK", body)
                } else {
                    ("401 Unauthorized", String::new())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
            }
        });
        address
    }

    #[tokio::test]
    async fn fetches_the_instance_role_from_imds_v2() {
        let credentials = r#"{"Code":"Success","LastUpdated":"2026-11-21T18:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret","Token":"session","Expiration":"2026-11-21T20:15:30Z"}"#;
        let imds = fake_imds(vec![
            (
                "X-aws-ec2-metadata-token-ttl-seconds: 300",
                "TOKEN-1".to_owned(),
            ),
            (
                "X-aws-ec2-metadata-token: TOKEN-1",
                "signer-role\n".to_owned(),
            ),
            (
                "GET /latest/meta-data/iam/security-credentials/signer-role",
                credentials.to_owned(),
            ),
        ])
        .await;
        let fetched = fetch(&CredentialSource::Imds, &imds)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fetched.access_key_id, "ASIAEXAMPLE");
        assert_eq!(fetched.session_token, "session");
        assert_eq!(fetched.expiration_unix, 1_795_292_130);
    }

    #[tokio::test]
    async fn reports_a_refusing_or_absent_imds() {
        let imds = fake_imds(vec![("never matches", String::new())]).await;
        assert!(matches!(
            fetch(&CredentialSource::Imds, &imds).await,
            Err(Error::Credentials(_))
        ));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        assert!(matches!(
            fetch(&CredentialSource::Imds, &closed).await,
            Err(Error::Credentials(_))
        ));
        assert_eq!(fetch(&CredentialSource::None, IMDS).await.unwrap(), None);
    }
}
