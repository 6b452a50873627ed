//! `s3://bucket/key`: where the object is, and AWS Signature Version 4
//! (the `AWS4-HMAC-SHA256` scheme of the S3 API reference, "Authenticating
//! Requests: Using the Authorization Header").
//!
//! Credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_SESSION_TOKEN`, else from the `AWS_PROFILE` (or `default`) section
//! of `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`); the region from
//! `AWS_REGION`, `AWS_DEFAULT_REGION`, else the profile's `region` in
//! `~/.aws/config` (`AWS_CONFIG_FILE`), else `us-east-1`. Without
//! credentials requests go unsigned (public buckets). `AWS_ENDPOINT_URL_S3`
//! or `AWS_ENDPOINT_URL` names an S3-compatible store, addressed
//! path-style (`ENDPOINT/bucket/key`); AWS itself is addressed
//! virtual-hosted style (`https://bucket.s3.REGION.amazonaws.com/key`).
//! Instance metadata credentials are not fetched.
//!
//! Secrets are never formatted: [`Credentials`] prints only its key id.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::wire::civil;

/// SHA-256 of an empty payload, as GET and HEAD send.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key pair, with a session token for temporary credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret: String,
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, secret hidden)", self.access_key)
    }
}

/// How to reach and sign for one S3 object.
#[derive(Debug, Clone)]
pub struct S3Object {
    pub bucket: String,
    pub key: String,
    pub region: String,
    /// `scheme://host[:port]` requests go to.
    pub endpoint: String,
    /// `ENDPOINT/bucket/key` rather than `bucket.host/key`.
    pub path_style: bool,
    pub creds: Option<Credentials>,
}

impl S3Object {
    /// `bucket`/`key` with credentials, region and endpoint from the
    /// environment (see the module docs).
    pub fn from_env(bucket: &str, key: &str) -> S3Object {
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| {
                let file = aws_file("AWS_CONFIG_FILE", "config")?;
                let section = if profile == "default" {
                    profile.clone()
                } else {
                    format!("profile {profile}")
                };
                ini_value(&std::fs::read_to_string(file).ok()?, &section, "region")
            })
            .unwrap_or_else(|| "us-east-1".into());
        let creds = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret)) => Some(Credentials {
                access_key,
                secret,
                token: env("AWS_SESSION_TOKEN"),
            }),
            _ => aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|text| {
                    Some(Credentials {
                        access_key: ini_value(&text, &profile, "aws_access_key_id")?,
                        secret: ini_value(&text, &profile, "aws_secret_access_key")?,
                        token: ini_value(&text, &profile, "aws_session_token"),
                    })
                }),
        };
        let custom = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"));
        let (endpoint, path_style) = match custom {
            Some(e) => (e.trim_end_matches('/').to_string(), true),
            None => (format!("https://s3.{region}.amazonaws.com"), false),
        };
        S3Object {
            bucket: bucket.into(),
            key: key.into(),
            region,
            endpoint,
            path_style,
            creds,
        }
    }

    /// The HTTP(S) URL of the object (the key percent-encoded).
    pub fn url(&self) -> String {
        let key = uri_encode(&self.key, false);
        if self.path_style {
            format!("{}/{}/{key}", self.endpoint, uri_encode(&self.bucket, true))
        } else {
            let (scheme, host) = self
                .endpoint
                .split_once("://")
                .unwrap_or(("https", &self.endpoint));
            format!("{scheme}://{}.{host}/{key}", self.bucket)
        }
    }

    /// The headers that sign a `method` request of `url` (the payload's
    /// SHA-256 hex being `payload`) carrying `extra` headers, at `now`;
    /// none without credentials.
    pub fn sign(
        &self,
        method: &str,
        url: &str,
        extra: &[(String, String)],
        payload: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let Some(creds) = &self.creds else {
            return Vec::new();
        };
        let (host, path, query) = split_url(url);
        sign_v4(
            creds,
            &self.region,
            "s3",
            method,
            host,
            path,
            query,
            extra,
            payload,
            now,
        )
    }
}

/// `(authority, path, query)` of an absolute URL.
fn split_url(url: &str) -> (&str, &str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..], query),
        None => (rest, "/", query),
    }
}

/// Signature V4 headers (`x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token`, `authorization`) for one request. `path` is
/// already URI-encoded; every `extra` header is signed with `host`.
#[allow(clippy::too_many_arguments)]
pub fn sign_v4(
    creds: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    extra: &[(String, String)],
    payload: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let (y, mo, d, h, mi, s) = civil(now);
    let date = format!("{y:04}{mo:02}{d:02}");
    let stamp = format!("{date}T{h:02}{mi:02}{s:02}Z");
    let mut out = vec![
        ("x-amz-date".to_string(), stamp.clone()),
        ("x-amz-content-sha256".to_string(), payload.to_string()),
    ];
    if let Some(t) = &creds.token {
        out.push(("x-amz-security-token".into(), t.clone()));
    }
    let mut signed: Vec<(String, String)> = vec![("host".into(), host.to_string())];
    signed.extend(
        extra
            .iter()
            .chain(out.iter())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())),
    );
    signed.sort();
    let names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
    let names = names.join(";");
    let headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    let query: Vec<String> = pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => format!("{k}={v}"),
            None => format!("{p}="),
        })
        .collect();
    let canonical = format!(
        "{method}\n{path}\n{}\n{headers}\n{names}\n{payload}",
        query.join("&")
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", creds.secret).as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={signature}",
            creds.access_key
        ),
    ));
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SigV4 URI encoding: every byte but `A-Za-z0-9-_.~` as `%XX`, and `/`
/// too when `slash`.
pub fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$VAR`, else `~/.aws/NAME`.
fn aws_file(var: &str, name: &str) -> Option<PathBuf> {
    env(var)
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(env("HOME")?).join(".aws").join(name)))
}

/// `key = value` in `[section]` of an INI text.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines().take(100_000) {
        let line = line.trim();
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = s.trim() == section;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The GET Object example of the S3 SigV4 documentation
    /// ("Example: GET Object", examplebucket, 2013-05-24).
    #[test]
    fn aws_get_object_example() {
        let creds = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let h = sign_v4(
            &creds,
            "us-east-1",
            "s3",
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            "",
            &[("Range".into(), "bytes=0-9".into())],
            EMPTY_SHA256,
            now,
        );
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(!format!("{creds:?}").contains("EXAMPLEKEY"));
    }

    #[test]
    fn urls_and_profiles() {
        let o = S3Object {
            bucket: "b".into(),
            key: "dir/a b+.vmdk".into(),
            region: "eu-west-1".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            path_style: true,
            creds: None,
        };
        assert_eq!(o.url(), "http://127.0.0.1:9000/b/dir/a%20b%2B.vmdk");
        let v = S3Object {
            path_style: false,
            endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
            ..o
        };
        assert_eq!(
            v.url(),
            "https://b.s3.eu-west-1.amazonaws.com/dir/a%20b%2B.vmdk"
        );
        let ini = "[default]\nregion = us-west-2\n[profile x]\nregion=ap-south-1\n";
        assert_eq!(ini_value(ini, "profile x", "region").unwrap(), "ap-south-1");
        assert_eq!(ini_value(ini, "default", "region").unwrap(), "us-west-2");
        assert_eq!(ini_value(ini, "nope", "region"), None);
    }
}
