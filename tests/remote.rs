//! Images read by URL: every container and a delta chain with a relative
//! parent, served over HTTP by a Range-capable server written here (on
//! 127.0.0.1, started and stopped by each test) and over S3 by moto's
//! server, must read byte for byte as `qemu-img convert -O raw` reads the
//! local files. Faults injected by the server (dropped connections, 503s,
//! answers slower than the timeout, bodies cut short, an object changed
//! mid-session) must be retried or end in a clear error naming the URL and
//! the range; never a hang or wrong bytes.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use restorefs_parsers::image::{self, OpenOptions};
use restorefs_parsers::remote::{self, RemoteLocator, Settings};
use restorefs_parsers::ReadAt;

/// Whether `tool` runs; a missing tool fails under CI and skips otherwise.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok();
    if !ok {
        assert!(!in_ci(), "{tool} is required when CI is set");
        eprintln!("SKIPPED: {tool} not installed");
    }
    ok
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What the server does to one answer instead of answering normally.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Close the connection without answering.
    Drop,
    /// Answer 503 with Retry-After.
    Unavailable,
    /// Wait this long before answering.
    Slow(Duration),
    /// Send the headers and half the body, then close.
    Cut,
}

#[derive(Default)]
struct State {
    /// URL path -> (bytes, ETag).
    files: HashMap<String, (Arc<Vec<u8>>, String)>,
    faults: VecDeque<Fault>,
    gets: u64,
    /// Added before every answer.
    delay: Duration,
    /// Requests being answered now, and the most at once.
    in_flight: u64,
    max_in_flight: u64,
}

/// A small HTTP/1.1 server answering GET with byte ranges, keep-alive,
/// ETag and Last-Modified, serving files from memory.
struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, sp) = (st.clone(), sp.clone());
                        std::thread::spawn(move || serve(conn, &st, &sp));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Serves `bytes` at `/path`.
    fn put(&self, path: &str, bytes: Vec<u8>) {
        let etag = format!("\"{}-{}\"", bytes.len(), path.len());
        self.lock()
            .files
            .insert(format!("/{path}"), (Arc::new(bytes), etag));
    }

    /// Serves every file under `dir` by its relative path.
    fn put_dir(&self, dir: &Path, prefix: &str) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.path().is_dir() {
                self.put_dir(&e.path(), &format!("{name}/"));
            } else {
                self.put(&name, std::fs::read(e.path()).expect("read"));
            }
        }
    }

    fn set_etag(&self, path: &str, etag: &str) {
        if let Some(f) = self.lock().files.get_mut(&format!("/{path}")) {
            f.1 = etag.to_string();
        }
    }

    fn faults(&self, f: &[Fault]) {
        self.lock().faults.extend(f.iter().copied());
    }

    fn gets(&self) -> u64 {
        self.lock().gets
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests on one connection until it closes or the server stops.
fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (file, fault, delay) = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.gets += 1;
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            let fault = s.faults.pop_front();
            (s.files.get(path).cloned(), fault, s.delay)
        };
        std::thread::sleep(delay);
        answer(&mut out, method, &headers, file, fault);
        state.lock().unwrap_or_else(|e| e.into_inner()).in_flight -= 1;
        if matches!(fault, Some(Fault::Drop | Fault::Cut)) {
            return;
        }
    }
}

/// Writes the answer to one request (or the fault instead).
fn answer(
    out: &mut TcpStream,
    method: &str,
    headers: &HashMap<String, String>,
    file: Option<(Arc<Vec<u8>>, String)>,
    fault: Option<Fault>,
) {
    match fault {
        Some(Fault::Drop) => {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        Some(Fault::Unavailable) => {
            let _ = out.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        }
        Some(Fault::Slow(d)) => std::thread::sleep(d),
        _ => {}
    }
    let Some((bytes, etag)) = file.filter(|_| method == "GET") else {
        let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let len = bytes.len() as u64;
    let range = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let common = format!(
        "ETag: {etag}\r\nLast-Modified: Tue, 15 Nov 1994 12:45:26 GMT\r\nAccept-Ranges: bytes\r\n"
    );
    let (head, body): (String, &[u8]) = match range {
        Some((a, _)) if a >= len => (
            format!("HTTP/1.1 416 Range Not Satisfiable\r\n{common}Content-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"),
            &[],
        ),
        Some((a, b)) => {
            let b = b.min(len - 1);
            (
                format!(
                    "HTTP/1.1 206 Partial Content\r\n{common}Content-Range: bytes {a}-{b}/{len}\r\nContent-Length: {}\r\n\r\n",
                    b - a + 1
                ),
                &bytes[a as usize..=b as usize],
            )
        }
        None => (
            format!("HTTP/1.1 200 OK\r\n{common}Content-Length: {len}\r\n\r\n"),
            &bytes[..],
        ),
    };
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    if let Some(Fault::Cut) = fault {
        let _ = out.write_all(&body[..body.len() / 2]);
        let _ = out.shutdown(Shutdown::Both);
        return;
    }
    let _ = out.write_all(body);
}

/// A disk of `mib` MiB with data in scattered places and holes between.
fn sample_disk(path: &Path, mib: u64) {
    let mut bytes = vec![0u8; (mib << 20) as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (i, chunk) in bytes.chunks_mut(64 << 10).enumerate() {
        if i % 3 == 1 {
            continue;
        }
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    std::fs::write(path, bytes).expect("write sample disk");
}

fn qemu_raw(img: &Path) -> Vec<u8> {
    let out = img.with_extension("want.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(img)
        .arg(&out));
    let bytes = std::fs::read(&out).expect("read qemu output");
    let _ = std::fs::remove_file(&out);
    bytes
}

/// Reads all of `disk` in odd-sized pieces (crossing blocks and grains),
/// part of it backwards (random access).
fn read_all(disk: &dyn ReadAt) -> Vec<u8> {
    let mut out = vec![0u8; disk.size() as usize];
    let step = 333_333;
    let n = out.len().div_ceil(step);
    for i in (0..n).rev().take(3) {
        let end = ((i + 1) * step).min(out.len());
        disk.read_exact_at((i * step) as u64, &mut out[i * step..end])
            .expect("read");
    }
    for (i, chunk) in out.chunks_mut(step).enumerate() {
        disk.read_exact_at((i * step) as u64, chunk).expect("read");
    }
    out
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at offset {i}");
    }
}

/// Raw, qcow2, VHD, VHDX and VMDK (sparse and streamOptimized) of one disk,
/// and a VMDK and a qcow2 chain whose deltas name their parents `../base`,
/// read by URL.
#[test]
fn containers_and_chains_read_like_local() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    sample_disk(&d.join("disk.raw"), 6);
    let mut files: Vec<PathBuf> = vec![d.join("disk.raw")];
    for (name, fmt, opts) in [
        ("disk.qcow2", "qcow2", "cluster_size=65536"),
        ("disk.vhd", "vpc", "subformat=dynamic"),
        ("disk.vhdx", "vhdx", "subformat=dynamic"),
        ("disk.vmdk", "vmdk", "subformat=monolithicSparse"),
        ("stream.vmdk", "vmdk", "subformat=streamOptimized"),
    ] {
        let out = d.join(name);
        run(Command::new("qemu-img")
            .args(["convert", "-O", fmt, "-o", opts])
            .arg(d.join("disk.raw"))
            .arg(&out));
        files.push(out);
    }
    // Chains: base in the folder, the delta in a subfolder naming it
    // `../base.*`, with writes over whole and partial grains/clusters.
    std::fs::create_dir_all(d.join("deltas")).expect("mkdir");
    for (fmt, ext) in [("vmdk", "vmdk"), ("qcow2", "qcow2")] {
        let base = d.join(format!("base.{ext}"));
        let top = d.join(format!("deltas/top.{ext}"));
        run(Command::new("qemu-img")
            .args(["convert", "-O", fmt])
            .arg(d.join("disk.raw"))
            .arg(&base));
        run(Command::new("qemu-img")
            .args(["create", "-f", fmt, "-F", fmt, "-b"])
            .arg(format!("../base.{ext}"))
            .arg(&top));
        run(Command::new("qemu-io")
            .args([
                "-f",
                fmt,
                "-c",
                "write -P 0x77 1M 1536k",
                "-c",
                "write -z 4M 64k",
            ])
            .arg(&top));
        files.push(top);
    }
    let server = Server::start();
    server.put_dir(d, "");
    for file in &files {
        let rel = file.strip_prefix(d).expect("inside").to_string_lossy();
        let url = server.url(&rel);
        let img = image::open(Path::new(&url)).unwrap_or_else(|e| panic!("{url}: {e}"));
        let local = image::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(img.format, local.format, "{url}");
        assert_eq!(img.chain.len(), local.chain.len(), "{url}");
        assert_same(&url, &read_all(&*img.disk), &qemu_raw(file));
    }
    // The delta by URL, its parent given by URL with --parent.
    let url = server.url("deltas/top.qcow2");
    let opts = OpenOptions {
        parents: vec![PathBuf::from(server.url("base.qcow2"))],
        ignore_link_check: false,
    };
    let img = image::open_with(Path::new(&url), &opts).expect("open with --parent URL");
    assert_eq!(
        img.chain[1].file,
        PathBuf::from(server.url("base.qcow2")),
        "chain names the parent's URL"
    );
    assert_same(
        "--parent URL",
        &read_all(&*img.disk),
        &qemu_raw(&d.join("deltas/top.qcow2")),
    );
    // A missing parent names the URL looked for.
    server.lock().files.remove("/base.vmdk");
    let e = image::open(Path::new(&server.url("deltas/top.vmdk")))
        .err()
        .expect("missing parent must fail")
        .to_string();
    assert!(e.contains(&server.url("base.vmdk")), "{e}");
}

/// Settings that make fault tests quick.
fn quick() -> Settings {
    Settings {
        timeout: Duration::from_millis(700),
        retries: 3,
        backoff: Duration::from_millis(10),
        parallel: 4,
        cache_dir: None,
    }
}

fn object(server: &Server, mib: u64) -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def1u64;
    let bytes: Vec<u8> = (0..(mib << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    server.put("obj.bin", bytes.clone());
    bytes
}

#[test]
fn faults_are_retried_and_reads_stay_exact() {
    let server = Server::start();
    let want = object(&server, 20);
    let url = server.url("obj.bin");
    for faults in [
        vec![Fault::Drop],
        vec![Fault::Unavailable, Fault::Unavailable],
        vec![Fault::Slow(Duration::from_millis(1500))],
        vec![Fault::Cut],
        vec![Fault::Drop, Fault::Unavailable, Fault::Cut],
    ] {
        let src = RemoteLocator
            .open_with(&url, &quick())
            .unwrap_or_else(|e| panic!("{faults:?}: {e}"));
        server.faults(&faults);
        let started = Instant::now();
        let mut got = vec![0u8; want.len()];
        // Sequential reads of 128 KiB, as a copy does: readahead grows and
        // fetches pieces in parallel.
        for (i, chunk) in got.chunks_mut(128 << 10).enumerate() {
            src.read_exact_at((i * (128 << 10)) as u64, chunk)
                .unwrap_or_else(|e| panic!("{faults:?}: {e}"));
        }
        assert_same(&format!("{faults:?}"), &got, &want);
        assert!(started.elapsed() < Duration::from_secs(20), "{faults:?}");
        assert!(server.lock().faults.is_empty(), "{faults:?} not all used");
    }
}

#[test]
fn sequential_reads_use_large_requests() {
    let server = Server::start();
    let want = object(&server, 32);
    let src = RemoteLocator
        .open_with(&server.url("obj.bin"), &quick())
        .expect("open");
    let before = server.gets();
    let mut got = vec![0u8; want.len()];
    for (i, chunk) in got.chunks_mut(64 << 10).enumerate() {
        src.read_exact_at((i * (64 << 10)) as u64, chunk)
            .expect("read");
    }
    assert_same("sequential", &got, &want);
    let requests = server.gets() - before;
    // 512 reads of 64 KiB: at least 1 MiB per request, readahead growing.
    assert!(requests <= 20, "{requests} requests for 32 MiB");
}

/// A long sequential read keeps several requests in flight.
#[test]
fn long_reads_fetch_in_parallel() {
    let server = Server::start();
    let want = object(&server, 48);
    let src = RemoteLocator
        .open_with(&server.url("obj.bin"), &quick())
        .expect("open");
    server.lock().delay = Duration::from_millis(30);
    let mut got = vec![0u8; want.len()];
    for (i, chunk) in got.chunks_mut(1 << 20).enumerate() {
        src.read_exact_at((i << 20) as u64, chunk).expect("read");
    }
    assert_same("parallel", &got, &want);
    let most = server.lock().max_in_flight;
    assert!(most >= 2, "at most {most} request(s) in flight");
}

#[test]
fn persistent_faults_end_in_an_error_naming_url_and_range() {
    let server = Server::start();
    object(&server, 4);
    let url = server.url("obj.bin");
    let src = RemoteLocator.open_with(&url, &quick()).expect("open");
    server.faults(&[Fault::Unavailable; 10]);
    let started = Instant::now();
    let e = src
        .read_exact_at(2 << 20, &mut [0u8; 100])
        .expect_err("must fail")
        .to_string();
    assert!(
        e.contains(&url) && e.contains("bytes 2097152-3145727"),
        "{e}"
    );
    assert!(e.contains("503"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.lock().faults.clear();
    // Slow beyond the timeout every time: an error, not a hang.
    server.faults(&[Fault::Slow(Duration::from_secs(1)); 4]);
    let started = Instant::now();
    let e = src
        .read_exact_at(1 << 20, &mut [0u8; 100])
        .expect_err("must fail")
        .to_string();
    assert!(e.contains(&url) && e.contains("timed out"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    server.lock().faults.clear();
    // Not found.
    let e = RemoteLocator
        .open_with(&server.url("none.bin"), &quick())
        .expect_err("404")
        .to_string();
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn an_object_changed_mid_session_is_an_error() {
    let server = Server::start();
    let want = object(&server, 4);
    let url = server.url("obj.bin");
    let src = RemoteLocator.open_with(&url, &quick()).expect("open");
    let mut buf = vec![0u8; 1000];
    src.read_exact_at(0, &mut buf).expect("read before");
    assert_eq!(buf, want[..1000]);
    server.set_etag("obj.bin", "\"v2\"");
    let e = src
        .read_exact_at(3 << 20, &mut buf)
        .expect_err("changed object must fail")
        .to_string();
    assert!(e.contains("changed") && e.contains(&url), "{e}");
    // Cached blocks of the old version still read (they are that version).
    src.read_exact_at(0, &mut buf).expect("cached block");
}

#[test]
fn credentials_stay_out_of_messages_and_names() {
    let server = Server::start();
    object(&server, 1);
    let secret = "sig=TOPSECRET";
    let url = format!("{}?sv=2021-08-06&{secret}", server.url("obj.bin"));
    let img = image::open(Path::new(&url)).expect("open with a SAS query");
    assert!(!format!("{:?}", img.chain).contains("TOPSECRET"));
    let e = image::open(Path::new(&format!(
        "{}?{secret}",
        server.url("missing.vhd")
    )))
    .err()
    .expect("404")
    .to_string();
    assert!(!e.contains("TOPSECRET"), "{e}");
    let out = restorefs(&["info", &format!("{}?{secret}", server.url("missing.vhd"))]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("TOPSECRET"));
}

#[test]
fn disk_cache_serves_a_second_session() {
    let server = Server::start();
    let want = object(&server, 3);
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        cache_dir: Some(cache.path().to_path_buf()),
        ..quick()
    };
    let url = server.url("obj.bin");
    let first = RemoteLocator.open_with(&url, &settings).expect("open");
    let mut got = vec![0u8; want.len()];
    first.read_exact_at(0, &mut got).expect("read");
    assert_same("first", &got, &want);
    let second = RemoteLocator.open_with(&url, &settings).expect("open");
    let before = server.gets();
    got.fill(0);
    second.read_exact_at(0, &mut got).expect("read");
    assert_same("from the disk cache", &got, &want);
    assert_eq!(server.gets(), before, "second session fetched again");
    // Another version of the object does not use the cached blocks.
    server.set_etag("obj.bin", "\"v2\"");
    let third = RemoteLocator.open_with(&url, &settings).expect("open");
    third.read_exact_at(0, &mut got).expect("read");
    assert!(server.gets() > before);
}

/// `restorefs ls` and `cat` of the demo image by URL print what they print
/// for the local file.
#[test]
fn cli_reads_by_url() {
    let demo = repo().join("testimages/demo/demo.img");
    let server = Server::start();
    server.put("vm/demo.img", std::fs::read(&demo).expect("demo image"));
    let url = server.url("vm/demo.img");
    let local = ok(&["ls", s(&demo), "/"]);
    assert_eq!(ok(&["ls", &url, "/"]), local);
    let path = "/p2/home/alice/mail/inbox.mbox";
    assert_eq!(ok(&["cat", &url, path]), ok(&["cat", s(&demo), path]));
    let cache = tempfile::tempdir().expect("tempdir");
    let lr = ["ls", "-R", "--cache-dir", s(cache.path()), &url, "/p2"];
    assert_eq!(ok(&lr), ok(&["ls", "-R", s(&demo), "/p2"]));
    assert!(std::fs::read_dir(cache.path())
        .expect("cache")
        .next()
        .is_some());
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("inbox.mbox");
    ok(&["cp", &url, path, s(&copy)]);
    assert_eq!(
        std::fs::read(&copy).expect("copy"),
        ok(&["cat", s(&demo), path])
    );
    // The mount: reads as the file does; the mount table shows the URL
    // without its (SAS) query.
    if fuse_available() {
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let sas = format!("{url}?sv=2021-08-06&sig=TOPSECRET");
        let out = restorefs(&["mount", &sas, s(&mnt)]);
        let got = std::fs::read(mnt.join(&path[1..]));
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        ok(&["umount", s(&mnt)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            got.expect("read through the mount"),
            ok(&["cat", s(&demo), path])
        );
        assert!(mounts.contains(&url), "{mounts}");
        assert!(!mounts.contains("TOPSECRET"), "{mounts}");
    }
}

/// `--all-points` over a chain read by URL: one directory per point.
#[test]
fn all_points_by_url() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let demo = repo().join("testimages/demo/demo.img");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&demo)
        .arg(d.join("base.qcow2")));
    run(Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2"])
        .arg(d.join("top.qcow2")));
    let server = Server::start();
    server.put_dir(d, "");
    let url = server.url("top.qcow2");
    let listing = String::from_utf8_lossy(&ok(&["ls", "--all-points", &url, "/"])).into_owned();
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["@1-base", "@2-top"],
        "{listing}"
    );
    assert_eq!(
        ok(&["ls", "--all-points", &url, "/@1-base/p2/home/alice/mail"]),
        ok(&["ls", s(&demo), "/p2/home/alice/mail"])
    );
}

/// moto's S3 server on 127.0.0.1, stopped on drop.
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_moto() -> Option<Moto> {
    let port = free_port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            assert!(!in_ci(), "moto_server is required when CI is set: {e}");
            eprintln!("SKIPPED: moto_server not installed (pip install 'moto[server]')");
            return None;
        }
    };
    let moto = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

/// A PUT signed with SigV4 (the test's own request over a plain socket).
fn s3_put(port: u16, path: &str, body: &[u8]) {
    use sha2::{Digest, Sha256};
    let creds = remote::s3::Credentials {
        access_key: "testing".into(),
        secret: "testing".into(),
        token: None,
    };
    let host = format!("127.0.0.1:{port}");
    let payload = hex(&Sha256::digest(body));
    let signed = remote::s3::sign_v4(
        &creds,
        "us-east-1",
        "s3",
        "PUT",
        &host,
        path,
        "",
        &[],
        &payload,
        std::time::SystemTime::now(),
    );
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in signed {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect moto");
    conn.write_all(req.as_bytes()).expect("send");
    conn.write_all(body).expect("send body");
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "PUT {path}: {answer}");
}

#[test]
fn s3_objects_and_chains_read_like_local() {
    if !have("qemu-img") {
        return;
    }
    let Some(moto) = start_moto() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    sample_disk(&d.join("disk.raw"), 3);
    run(Command::new("qemu-img")
        .args(["convert", "-O", "vhdx"])
        .arg(d.join("disk.raw"))
        .arg(d.join("base.vhdx")));
    std::fs::create_dir_all(d.join("deltas")).expect("mkdir");
    run(Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-F", "vhdx", "-b", "../base.vhdx"])
        .arg(d.join("deltas/top.qcow2")));
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x33 100k 1M"])
        .arg(d.join("deltas/top.qcow2")));
    s3_put(moto.1, "/images", b"");
    for f in ["base.vhdx", "deltas/top.qcow2"] {
        s3_put(
            moto.1,
            &format!("/images/vm/{f}"),
            &std::fs::read(d.join(f)).expect("read"),
        );
    }
    // The environment a user sets for an S3-compatible store.
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", moto.1));
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    let img = image::open(Path::new("s3://images/vm/deltas/top.qcow2")).expect("open s3 chain");
    assert_eq!(img.chain.len(), 2);
    assert_eq!(img.chain[1].file, Path::new("s3://images/vm/base.vhdx"));
    assert_same(
        "s3 chain",
        &read_all(&*img.disk),
        &qemu_raw(&d.join("deltas/top.qcow2")),
    );
    let e = image::open(Path::new("s3://images/vm/none.vhdx"))
        .err()
        .expect("missing object")
        .to_string();
    assert!(e.contains("s3://images/vm/none.vhdx"), "{e}");
}

/// Every file under `dir`: (path, read result).
fn read_tree(dir: &Path, out: &mut Vec<(PathBuf, std::io::Result<Vec<u8>>)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            out.push((dir.to_path_buf(), Err(e)));
            return;
        }
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => read_tree(&p, out),
            Ok(t) if t.is_file() => {
                let r = std::fs::read(&p);
                out.push((p, r));
            }
            _ => {}
        }
    }
}

/// A mount over a URL answers a read it cannot serve (the object changed
/// on the server) with EIO for that read only, and keeps serving: once the
/// server has the pinned version again, every file reads.
#[test]
fn mount_answers_eio_and_keeps_serving() {
    if !fuse_available() {
        return;
    }
    let demo = repo().join("testimages/demo/demo.img");
    let server = Server::start();
    server.put("demo.img", std::fs::read(&demo).expect("demo image"));
    let pinned = server.lock().files["/demo.img"].1.clone();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    ok(&["mount", &server.url("demo.img"), s(&mnt)]);
    server.set_etag("demo.img", "\"another-version\"");
    let before = server.gets();
    let mut changed = Vec::new();
    read_tree(&mnt, &mut changed);
    let fetched = server.gets() > before;
    server.set_etag("demo.img", &pinned);
    let mut healthy = Vec::new();
    read_tree(&mnt, &mut healthy);
    let mbox = std::fs::read(mnt.join("p2/home/alice/mail/inbox.mbox"));
    ok(&["umount", s(&mnt)]);
    let eio = changed
        .iter()
        .filter(|(_, r)| r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EIO))
        .count();
    let other: Vec<_> = changed
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| (p, e)))
        .filter(|(_, e)| e.raw_os_error() != Some(libc::EIO))
        .collect();
    assert!(other.is_empty(), "errors other than EIO: {other:?}");
    assert!(!fetched || eio > 0, "fetches failed but no read saw EIO");
    let failed: Vec<_> = healthy.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "after recovery: {failed:?}");
    assert!(healthy.len() > 3, "{} files", healthy.len());
    assert_eq!(
        mbox.expect("mbox"),
        ok(&["cat", s(&demo), "/p2/home/alice/mail/inbox.mbox"])
    );
    eprintln!("{eio} read(s) got EIO while the object differed");
}
