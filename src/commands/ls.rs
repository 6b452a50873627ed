use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use restorefs_parsers::fs::FileType;
use restorefs_parsers::image::display_name;
use restorefs_parsers::tree::{Node, RestoreTree};

use super::{open, warn_volumes, CliError, CliResult, OpenSpec};
use crate::format::{mode_string, stat_json, time_string};

/// `restorefs ls IMAGE [PATH] [-l] [-R] [--json]`.
pub fn run(
    image: &Path,
    path: &str,
    long: bool,
    recursive: bool,
    json: bool,
    spec: &OpenSpec,
) -> CliResult {
    let tree = open(image, spec)?;
    warn_volumes(&tree, Some(path));
    let node = tree.resolve(path).map_err(|e| CliError::at(image, e))?;
    let st = tree.stat(node).map_err(|e| CliError::at(image, e))?;
    let stdout = io::stdout();
    let mut out = Lister {
        tree: &tree,
        out: stdout.lock(),
        long,
        json,
        failed: false,
        image,
    };
    let norm = normalize(path);
    if st.kind != FileType::Dir {
        let name = norm.rsplit('/').next().unwrap_or("").to_string();
        out.entry(&norm, &name, node)?;
    } else {
        out.dir(&norm, node, recursive, true)?;
    }
    Ok(if out.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

struct Lister<'a, W: Write> {
    tree: &'a RestoreTree,
    out: W,
    long: bool,
    json: bool,
    failed: bool,
    image: &'a Path,
}

impl<W: Write> Lister<'_, W> {
    fn dir(
        &mut self,
        path: &str,
        node: Node,
        recursive: bool,
        first: bool,
    ) -> Result<(), CliError> {
        let mut entries = match self.tree.read_dir(node) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("restorefs: {}: {path}: {e}", display_name(self.image));
                self.failed = true;
                return Ok(());
            }
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if recursive && !self.json {
            if !first {
                self.write("\n")?;
            }
            self.write(&format!("{path}:\n"))?;
        }
        let base = path.trim_end_matches('/');
        for e in &entries {
            let name = e.name.to_string_lossy();
            self.entry(&format!("{base}/{name}"), &name, e.node)?;
        }
        if recursive {
            for e in entries.iter().filter(|e| e.kind == FileType::Dir) {
                let child = format!("{base}/{}", e.name.to_string_lossy());
                self.dir(&child, e.node, true, false)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &str, name: &str, node: Node) -> Result<(), CliError> {
        if !self.long && !self.json {
            return self.write(&format!("{name}\n"));
        }
        let st = match self.tree.stat(node) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("restorefs: {}: {path}: {e}", display_name(self.image));
                self.failed = true;
                return Ok(());
            }
        };
        let target = if st.kind == FileType::Symlink {
            match self.tree.read_link(node) {
                Ok(t) => Some(t.to_string_lossy().into_owned()),
                Err(e) => {
                    eprintln!("restorefs: {}: {path}: {e}", display_name(self.image));
                    self.failed = true;
                    None
                }
            }
        } else {
            None
        };
        // Files whose data cannot be read (EFS, deduplicated, cloud-only)
        // say so in the listing rather than only when read.
        let note = self.tree.note(node);
        let line = if self.json {
            let mut v = stat_json(path, node.ino(), &st, target.as_deref());
            if let Some(n) = &note {
                v["note"] = serde_json::json!(n);
            }
            v.to_string()
        } else {
            let mut l = format!(
                "{} {:>3} {:>5} {:>5} {:>12} {} {name}",
                mode_string(st.kind, st.mode),
                st.nlink,
                st.uid,
                st.gid,
                st.size,
                time_string(st.mtime),
            );
            if let Some(t) = &target {
                l.push_str(" -> ");
                l.push_str(t);
            }
            if let Some(n) = &note {
                l.push_str("  [");
                l.push_str(n);
                l.push(']');
            }
            l
        };
        self.write(&format!("{line}\n"))
    }

    fn write(&mut self, s: &str) -> Result<(), CliError> {
        match self.out.write_all(s.as_bytes()) {
            Ok(()) => Ok(()),
            // `restorefs ls | head` is not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(e) => Err(CliError(format!("stdout: {e}"))),
        }
    }
}
