//! Images read where backups live: `http://` and `https://` URLs (Range
//! requests), `s3://bucket/key` and Azure blob URLs with a SAS token.
//!
//! Design: [`RemoteLocator`] is the [`Locator`] for URLs. It opens an
//! object as an [`http::HttpSource`] (a [`crate::ReadAt`] over Range
//! requests; see its docs for caching, readahead, retries and the pinning
//! that refuses a changed object), finds a delta's relatively named parent
//! beside the delta's URL, and names objects without credentials (no
//! query string, no user info). [`crate::image::locator`] sends every
//! location of this form here, so every layer above reads remote images
//! exactly as local ones. `s3://` is turned into an HTTP(S) URL and signed
//! by [`s3`]; an Azure SAS URL is plain HTTPS plus an `x-ms-version` header.
//!
//! Process-wide [`Settings`] (timeouts, retries, parallel requests, a disk
//! cache folder) are set once by a front end with [`configure`].

pub mod http;
pub mod s3;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::image::{FileId, Locator};
use crate::{Error, Result, Source};
use http::{HttpSource, Target};

/// How remote objects are read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest wait for a connection, an answer or more body bytes.
    pub timeout: Duration,
    /// Attempts after the first for a failing request.
    pub retries: u32,
    /// First wait before retrying; doubled each time.
    pub backoff: Duration,
    /// Requests in flight at once for one long read.
    pub parallel: usize,
    /// A folder keeping fetched blocks between sessions.
    pub cache_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(30),
            retries: 5,
            backoff: Duration::from_millis(200),
            parallel: 4,
            cache_dir: None,
        }
    }
}

static SETTINGS: RwLock<Option<Settings>> = RwLock::new(None);

/// Sets how this process reads remote objects opened from now on.
pub fn configure(settings: Settings) {
    *SETTINGS.write().unwrap_or_else(|e| e.into_inner()) = Some(settings);
}

/// The settings [`configure`] set, else the defaults.
pub fn settings() -> Settings {
    SETTINGS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Bytes received from servers by this process so far.
pub fn fetched_bytes() -> u64 {
    http::FETCHED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Requests sent to servers by this process so far.
pub fn requests() -> u64 {
    http::REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `loc` is a URL this module reads (`http://`, `https://`,
/// `s3://`).
pub fn is_url(loc: &Path) -> bool {
    loc.to_str().is_some_and(|s| scheme(s).is_some())
}

fn scheme(s: &str) -> Option<&'static str> {
    let lower = s.get(..s.len().min(8))?.to_ascii_lowercase();
    ["https://", "http://", "s3://"]
        .into_iter()
        .find(|p| lower.starts_with(p))
}

/// URLs: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoteLocator;

impl RemoteLocator {
    /// Opens the object at `url` with `settings`.
    pub fn open_with(&self, url: &str, settings: &Settings) -> Result<HttpSource> {
        let shown = shown(url);
        let target = target(url).ok_or_else(|| {
            Error::unsupported(
                "remote",
                format!("{shown}: not an http(s)://HOST/PATH or s3://BUCKET/KEY URL"),
            )
        })?;
        // The error names the URL and the range already.
        HttpSource::open(target, shown, settings).map_err(|e| Error::io("remote", 0, e))
    }

    fn probe(&self, loc: &Path) -> Result<HttpSource> {
        let url = loc
            .to_str()
            .ok_or_else(|| Error::NotFound(loc.display().to_string()))?;
        self.open_with(url, &settings())
    }
}

impl Locator for RemoteLocator {
    fn open(&self, loc: &Path) -> Result<Source> {
        Ok(Arc::new(self.probe(loc)?))
    }

    fn exists(&self, loc: &Path) -> bool {
        self.probe(loc).is_ok()
    }

    fn beside(&self, loc: &Path, name: &Path) -> PathBuf {
        match (loc.to_str(), name.to_str()) {
            (Some(url), Some(name)) => PathBuf::from(beside(url, name)),
            _ => name.to_path_buf(),
        }
    }

    fn identity(&self, loc: &Path) -> FileId {
        FileId::Name(self.name(loc))
    }

    fn name(&self, loc: &Path) -> PathBuf {
        PathBuf::from(shown(&loc.to_string_lossy()))
    }

    fn modified(&self, loc: &Path) -> Option<SystemTime> {
        self.probe(loc).ok()?.modified()
    }
}

/// `url` without user info and query (where credentials travel).
pub fn shown(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or_default();
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}

/// How to request the object at `url`.
fn target(url: &str) -> Option<Target> {
    if scheme(url)? == "s3://" {
        let rest = &url[5..];
        let (bucket, key) = rest.split_once('/')?;
        if bucket.is_empty() || key.is_empty() {
            return None;
        }
        return Some(Target::S3(s3::S3Object::from_env(bucket, key)));
    }
    let host = url.split_once("://")?.1.split(['/', '?']).next()?;
    let azure = host.contains(".blob.") || url.contains("&sig=") || url.contains("?sig=");
    Some(Target::Http {
        url: url.to_string(),
        azure,
    })
}

/// The URL of `name` (relative, `/`-separated, unencoded) in the folder
/// of `url`: `..` taken lexically (never above the bucket or host root),
/// the query of `url` kept (an Azure SAS for the container serves its
/// siblings too).
pub fn beside(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let s3 = scheme(base) == Some("s3://");
    let Some((scheme, rest)) = base.split_once("://") else {
        return name.to_string();
    };
    // The root that `..` cannot leave: the host, or an S3 bucket.
    let (root, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    parts.pop(); // the file name
    if name.starts_with('/') {
        parts.clear();
        parts.push(String::new());
    }
    for seg in name.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            s if s3 => parts.push(s.to_string()),
            s => parts.push(s3::uri_encode(s, true)),
        }
    }
    if parts.is_empty() {
        parts.push(String::new());
    }
    let mut out = format!("{scheme}://{root}{}", parts.join("/"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_siblings() {
        assert_eq!(
            shown("https://user:pw@acct.blob.core.windows.net/c/vm/top.vhd?sv=1&sig=SECRET"),
            "https://acct.blob.core.windows.net/c/vm/top.vhd"
        );
        assert_eq!(
            beside("https://h:8080/a/b/top.vhd?sv=1&sig=x", "../base image.vhd"),
            "https://h:8080/a/base%20image.vhd?sv=1&sig=x"
        );
        assert_eq!(
            beside("http://h/top.vmdk", "../../base.vmdk"),
            "http://h/base.vmdk"
        );
        assert_eq!(
            beside("s3://bkt/vm/d/top.qcow2", "../base.qcow2"),
            "s3://bkt/vm/base.qcow2"
        );
        assert_eq!(beside("s3://bkt/top.qcow2", "../../x"), "s3://bkt/x");
        assert!(is_url(Path::new("HTTPS://x/y")) && is_url(Path::new("s3://b/k")));
        assert!(!is_url(Path::new("/tmp/https://x")) && !is_url(Path::new("s3:/b")));
        assert!(target("s3://bucket").is_none());
    }
}
