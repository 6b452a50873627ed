//! One object on an HTTP(S) server read with Range requests as a
//! [`ReadAt`].
//!
//! Design: the object is cut into [`BLOCK`]-sized blocks kept in the
//! shared chunk cache ([`ChunkCache::global`]) and, with a cache folder, on
//! disk. A read takes the blocks it needs from the caches; the missing ones
//! are fetched as runs of consecutive blocks, one Range request per run
//! (coalesced), so no request is smaller than a block. A read starting
//! where the previous one ended doubles a readahead window (up to
//! [`MAX_AHEAD`]) of blocks fetched with it, in batches of at least half
//! the window; a random read resets it. Runs
//! longer than [`PIECE`] are split and fetched by several requests at once.
//!
//! The first answer pins the object's length, ETag and Last-Modified; every
//! later answer must carry the same (and a `Content-Range` naming exactly
//! the bytes asked for), else the read fails: a changed object is an
//! error, never a mix of two versions. The disk cache is keyed by the same
//! validators. Timeouts, resets, truncated bodies, 5xx, 408 and 429 are
//! retried with exponential backoff a bounded number of times; then the
//! read fails naming the URL (without credentials) and the byte range.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::s3::{self, S3Object};
use super::wire;
use super::Settings;
use crate::cache::ChunkCache;
use crate::readat::{clamp_len, ReadAt};

/// Bytes per cached block, and the smallest request.
pub const BLOCK: u64 = 1 << 20;
/// Largest readahead window.
pub const MAX_AHEAD: u64 = 64 << 20;
/// Largest single request; longer runs are split and fetched in parallel.
pub const PIECE: u64 = 8 << 20;
/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Bytes received from servers by this process (for progress).
pub(super) static FETCHED: AtomicU64 = AtomicU64::new(0);
/// Requests sent by this process.
pub(super) static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Fetched blocks: (index, bytes).
type Blocks = Vec<(u64, Arc<[u8]>)>;

/// How requests to one object are made and signed.
#[derive(Debug, Clone)]
pub enum Target {
    /// A plain URL (an Azure SAS URL too: its query is the credential).
    Http { url: String, azure: bool },
    /// An S3 object, signed with SigV4 when credentials are known.
    S3(S3Object),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Target::Http { url, .. } => url.clone(),
            Target::S3(o) => o.url(),
        }
    }

    /// Headers for a `method` request carrying `extra`.
    fn headers(
        &self,
        method: &str,
        url: &str,
        extra: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = extra.to_vec();
        match self {
            // Without x-ms-version Azure answers Range with the whole blob.
            Target::Http { azure: true, .. } => {
                h.push(("x-ms-version".into(), "2021-08-06".into()))
            }
            Target::Http { .. } => {}
            Target::S3(o) => {
                h.extend(o.sign(method, url, extra, s3::EMPTY_SHA256, SystemTime::now()));
            }
        }
        h
    }
}

/// The validators pinned at open: the object must not change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pin {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Why one attempt failed.
#[derive(Debug)]
enum Fault {
    /// Worth another attempt (timeout, reset, 5xx, throttling, short body).
    Again(String),
    /// Final (not found, denied, the object changed, no Range support).
    Final(String),
}

/// An object read by HTTP Range requests.
pub struct HttpSource {
    target: Target,
    url: String,
    /// The URL without credentials, for messages.
    shown: String,
    agent: ureq::Agent,
    settings: Settings,
    pin: Pin,
    owner: u64,
    disk: Option<PathBuf>,
    /// (offset the next sequential read starts at, readahead bytes).
    seq: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpSource({})", self.shown)
    }
}

/// A blocking client with rustls, following redirects, statuses left to
/// us, every wait bounded by the settings' timeout; one per timeout for the
/// process, so the files of a chain share pooled connections.
pub fn agent(settings: &Settings) -> ureq::Agent {
    static AGENTS: Mutex<Vec<(Duration, ureq::Agent)>> = Mutex::new(Vec::new());
    let mut agents = AGENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, a)) = agents.iter().find(|(t, _)| *t == settings.timeout) {
        return a.clone();
    }
    let a = new_agent(settings.timeout);
    agents.push((settings.timeout, a.clone()));
    a
}

fn new_agent(timeout: Duration) -> ureq::Agent {
    let t = Some(timeout);
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(t)
        .timeout_send_request(t)
        .timeout_recv_response(t)
        .timeout_per_read(t)
        .user_agent(concat!("restorefs/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl HttpSource {
    /// Opens `target` (shown as `shown`): one small ranged GET finds its
    /// length and pins its validators.
    pub fn open(target: Target, shown: String, settings: &Settings) -> io::Result<HttpSource> {
        let agent = agent(settings);
        let url = target.url();
        let mut src = HttpSource {
            target,
            url,
            shown,
            agent,
            settings: settings.clone(),
            pin: Pin::default(),
            owner: ChunkCache::owner(),
            disk: None,
            seq: Mutex::new((0, 0)),
        };
        src.pin = src.retry("probe", 0, 0, |s| s.probe())?;
        src.disk = settings.cache_dir.as_ref().and_then(|d| src.disk_dir(d));
        Ok(src)
    }

    /// The pinned length and validators.
    pub fn pin(&self) -> &Pin {
        &self.pin
    }

    /// Last-Modified as a time, if the server sent it.
    pub fn modified(&self) -> Option<SystemTime> {
        wire::http_date(self.pin.last_modified.as_deref()?)
    }

    /// `GET bytes=0-0`: the length from `Content-Range` (a HEAD is not
    /// allowed by every pre-signed URL), and the validators.
    fn probe(&self) -> Result<Pin, Fault> {
        let resp = self.send(0, 0)?;
        let status = resp.status().as_u16();
        let etag = header(&resp, "etag");
        let last_modified = header(&resp, "last-modified");
        let range = header(&resp, "content-range").and_then(|v| wire::content_range(&v));
        let size = match (status, range) {
            (206, Some(r)) if r.range == Some((0, 0)) => r.total,
            // An empty object cannot satisfy any range.
            (416, Some(r)) if r.total == Some(0) => Some(0),
            (200 | 206 | 416, _) => {
                return Err(Fault::Final(format!(
                    "the server does not answer byte-range requests (status {status})"
                )))
            }
            (s, _) => return Err(status_fault(s)),
        };
        let size = size
            .ok_or_else(|| Fault::Final("the server does not give the object's length".into()))?;
        drain(resp);
        Ok(Pin {
            size,
            etag,
            last_modified,
        })
    }

    /// One ranged GET, before its answer is checked.
    fn send(&self, first: u64, last: u64) -> Result<ureq::http::Response<ureq::Body>, Fault> {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let extra = vec![("range".to_string(), format!("bytes={first}-{last}"))];
        let mut req = self.agent.get(&self.url);
        for (k, v) in self.target.headers("GET", &self.url, &extra) {
            req = req.header(k, v);
        }
        req.call().map_err(transport_fault)
    }

    /// Bytes `first..=last`, checked against the pin.
    fn fetch(&self, first: u64, last: u64) -> Result<Vec<u8>, Fault> {
        let resp = self.send(first, last)?;
        let status = resp.status().as_u16();
        let want = last - first + 1;
        match status {
            206 => {
                let r = header(&resp, "content-range").and_then(|v| wire::content_range(&v));
                if r.is_none_or(|r| {
                    r.range != Some((first, last)) || r.total.is_some_and(|t| t != self.pin.size)
                }) {
                    return Err(Fault::Final(format!(
                        "the server answered another range ({}) or length than asked; \
                         the object changed or the server is wrong",
                        header(&resp, "content-range").unwrap_or_default()
                    )));
                }
            }
            // A server may answer a range covering everything with it all.
            200 if first == 0 && want == self.pin.size => {}
            200 => {
                return Err(Fault::Final(
                    "the server answered a byte-range request with the whole object".into(),
                ))
            }
            412 | 416 => return Err(changed("the requested range is no longer there")),
            s => return Err(status_fault(s)),
        }
        for (name, pinned) in [
            ("etag", &self.pin.etag),
            ("last-modified", &self.pin.last_modified),
        ] {
            let got = header(&resp, name);
            if pinned.is_some() && got.is_some() && got != *pinned {
                return Err(changed(&format!(
                    "{name} was {}, now {}",
                    pinned.as_deref().unwrap_or_default(),
                    got.unwrap_or_default()
                )));
            }
        }
        let mut body = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        let got = resp
            .into_body()
            .into_reader()
            .take(want)
            .read_to_end(&mut body)
            .map_err(|e| Fault::Again(format!("reading the answer: {e}")))?;
        FETCHED.fetch_add(got as u64, Ordering::Relaxed);
        if got as u64 != want {
            return Err(Fault::Again(format!(
                "answer cut short ({got} of {want} bytes)"
            )));
        }
        Ok(body)
    }

    /// Runs `f` until it succeeds, fails finally, or the attempts run out;
    /// the error names the URL and the range.
    fn retry<T>(
        &self,
        what: &str,
        first: u64,
        last: u64,
        f: impl Fn(&Self) -> Result<T, Fault>,
    ) -> io::Result<T> {
        let mut wait = self.settings.backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let why = match f(self) {
                Ok(v) => return Ok(v),
                Err(Fault::Final(why)) => {
                    return Err(io::Error::other(format!(
                        "{}: {what} of bytes {first}-{last}: {why}",
                        self.shown
                    )))
                }
                Err(Fault::Again(why)) => why,
            };
            if attempt > self.settings.retries {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: {what} of bytes {first}-{last} failed {attempt} times, last: {why}",
                        self.shown
                    ),
                ));
            }
            tracing::debug!(
                "{}: {what} {first}-{last}: {why}; retrying in {wait:?}",
                self.shown
            );
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }

    /// The disk cache folder of this object version, if it can be told
    /// apart from other versions (an ETag or a Last-Modified).
    fn disk_dir(&self, root: &std::path::Path) -> Option<PathBuf> {
        if self.pin.etag.is_none() && self.pin.last_modified.is_none() {
            return None;
        }
        let key = format!(
            "{}\n{}\n{}\n{}",
            self.shown,
            self.pin.size,
            self.pin.etag.as_deref().unwrap_or_default(),
            self.pin.last_modified.as_deref().unwrap_or_default()
        );
        let dir = root.join(&s3::hex(&Sha256::digest(key.as_bytes()))[..32]);
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    fn block_len(&self, idx: u64) -> u64 {
        self.pin.size.saturating_sub(idx * BLOCK).min(BLOCK)
    }

    /// Block `idx` from memory or disk, if held.
    fn cached(&self, idx: u64) -> Option<Arc<[u8]>> {
        if let Some(b) = ChunkCache::global().get(self.owner, idx) {
            return Some(b);
        }
        let dir = self.disk.as_ref()?;
        let bytes = std::fs::read(dir.join(idx.to_string())).ok()?;
        if bytes.len() as u64 != self.block_len(idx) {
            return None;
        }
        let b: Arc<[u8]> = bytes.into();
        ChunkCache::global().insert(self.owner, idx, b.clone());
        Some(b)
    }

    fn keep(&self, idx: u64, block: Arc<[u8]>) {
        if let Some(dir) = &self.disk {
            let tmp = dir.join(format!("{idx}.{}.tmp", std::process::id()));
            if std::fs::write(&tmp, &block).is_ok() {
                let _ = std::fs::rename(&tmp, dir.join(idx.to_string()));
            }
        }
        ChunkCache::global().insert(self.owner, idx, block);
    }

    /// Readahead bytes for a read of `len` at `offset`.
    fn ahead(&self, offset: u64, len: u64) -> u64 {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let (next, window) = *seq;
        let sequential = offset <= next && next.saturating_sub(offset) <= BLOCK && next > 0;
        let window = if sequential {
            (window * 2).clamp(BLOCK, MAX_AHEAD)
        } else {
            0
        };
        *seq = (offset.saturating_add(len).max(next), window);
        window
    }

    /// Fetches `count` blocks from `first` as one or several requests (in
    /// parallel); a failure is returned only for a piece holding a block
    /// up to `needed_last` (the read's own), readahead failures are left
    /// for a later read.
    fn fetch_run(&self, first: u64, count: u64, needed_last: u64) -> (Blocks, Option<io::Error>) {
        let per_piece = (PIECE / BLOCK).max(1);
        let pieces: Vec<(u64, u64)> = (0..count.div_ceil(per_piece))
            .map(|p| (first + p * per_piece, per_piece.min(count - p * per_piece)))
            .collect();
        let get = |(b, n): (u64, u64)| -> io::Result<Blocks> {
            let start = b * BLOCK;
            let end = (start + n * BLOCK).min(self.pin.size) - 1;
            let bytes = self.retry("read", start, end, |s| s.fetch(start, end))?;
            Ok(bytes
                .chunks(BLOCK as usize)
                .enumerate()
                .map(|(i, c)| (b + i as u64, Arc::<[u8]>::from(c)))
                .collect())
        };
        let mut out = Vec::new();
        let mut err = None;
        for group in pieces.chunks(self.settings.parallel.max(1)) {
            let results: Vec<(u64, io::Result<Blocks>)> = if group.len() == 1 {
                vec![(group[0].0, get(group[0]))]
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = group
                        .iter()
                        .map(|&p| (p.0, s.spawn(move || get(p))))
                        .collect();
                    handles
                        .into_iter()
                        .map(|(b, h)| {
                            let r = h
                                .join()
                                .unwrap_or_else(|_| Err(io::Error::other("fetch thread panicked")));
                            (b, r)
                        })
                        .collect()
                })
            };
            for (b, r) in results {
                match r {
                    Ok(blocks) => out.extend(blocks),
                    Err(e) if b <= needed_last => {
                        err.get_or_insert(e);
                    }
                    // Readahead nobody asked for yet: a later read retries.
                    Err(e) => tracing::debug!("readahead: {e}"),
                }
            }
            if err.is_some() {
                break;
            }
        }
        (out, err)
    }
}

impl ReadAt for HttpSource {
    fn size(&self) -> u64 {
        self.pin.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = clamp_len(self.pin.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let blocks = self.pin.size.div_ceil(BLOCK);
        let first = offset / BLOCK;
        let last = (offset + len as u64 - 1) / BLOCK;
        let ahead = self.ahead(offset, len as u64).div_ceil(BLOCK);
        let mut have: HashMap<u64, Arc<[u8]>> = HashMap::new();
        let mut missing: Vec<u64> = Vec::new();
        for idx in first..=last.saturating_add(ahead).min(blocks - 1) {
            match self.cached(idx) {
                Some(b) => {
                    have.insert(idx, b);
                }
                None => missing.push(idx),
            }
        }
        // Readahead in batches: while the read's own blocks are held, wait
        // until half the window is missing, so the window is fetched as a
        // few large parallel requests rather than one block per read.
        let own_missing = missing.iter().any(|&i| i <= last);
        let ahead_missing = missing.iter().filter(|&&i| i > last).count() as u64;
        if !own_missing && ahead_missing * 2 < ahead {
            missing.clear();
        }
        // Runs of consecutive missing blocks, one request (or several
        // pieces) each.
        let mut i = 0;
        while i < missing.len() {
            let mut n = 1;
            while missing.get(i + n) == Some(&(missing[i] + n as u64)) {
                n += 1;
            }
            let (blocks, err) = self.fetch_run(missing[i], n as u64, last);
            for (idx, b) in blocks {
                self.keep(idx, b.clone());
                have.insert(idx, b);
            }
            if let Some(e) = err {
                return Err(e);
            }
            i += n;
        }
        let mut done = 0;
        while done < len {
            let pos = offset + done as u64;
            let idx = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let block = have.get(&idx).ok_or_else(|| {
                io::Error::other(format!("{}: block {idx} not fetched", self.shown))
            })?;
            let n = block.len().saturating_sub(within).min(len - done);
            if n == 0 {
                return Err(io::Error::other(format!(
                    "{}: block {idx} short",
                    self.shown
                )));
            }
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(len)
    }
}

/// A header as text, if present and readable.
fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// Reads (and drops) the rest of a small answer so the connection can be
/// reused.
fn drain(resp: ureq::http::Response<ureq::Body>) {
    let _ = io::copy(
        &mut resp.into_body().into_reader().take(1 << 16),
        &mut io::sink(),
    );
}

fn changed(what: &str) -> Fault {
    Fault::Final(format!(
        "the object changed on the server during this session ({what}); open it again"
    ))
}

fn status_fault(status: u16) -> Fault {
    match status {
        408 | 429 | 500..=599 => Fault::Again(format!("server answered {status}")),
        401 | 403 => Fault::Final(format!("access denied (status {status})")),
        404 | 410 => Fault::Final(format!("not found (status {status})")),
        s => Fault::Final(format!("unexpected answer (status {s})")),
    }
}

fn transport_fault(e: ureq::Error) -> Fault {
    match e {
        ureq::Error::Timeout(t) => Fault::Again(format!("timed out ({t})")),
        ureq::Error::Io(e) => Fault::Again(format!("connection: {e}")),
        ureq::Error::Protocol(e) => Fault::Again(format!("protocol: {e}")),
        ureq::Error::ConnectionFailed => Fault::Again("connection failed".into()),
        e => Fault::Final(e.to_string()),
    }
}
