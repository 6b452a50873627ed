use fuser::{Config, SessionACL};

/// How to mount: the image's name for `fsname=`, who may access the mount,
/// extra `-o` options and the number of request threads.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Shown as `restorefs:<image_name>` in `/proc/mounts` and `df`.
    pub image_name: String,
    acl: SessionACL,
    noatime: bool,
    noexec: bool,
    /// Options passed through to the kernel as they are.
    custom: Vec<String>,
    /// Threads answering requests; reads of a slow image overlap.
    pub threads: usize,
}

impl MountOptions {
    /// Defaults for the image called `image_name`: owner-only access.
    pub fn new(image_name: &str) -> MountOptions {
        // Options are comma-separated for the kernel and fusermount3, and
        // mount(8) splits /proc/mounts fields on whitespace: keep the name
        // in one piece.
        let image_name = image_name
            .chars()
            .map(|c| {
                if c == ',' || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(4, 16));
        MountOptions {
            image_name,
            acl: SessionACL::Owner,
            noatime: false,
            noexec: false,
            custom: Vec::new(),
            threads,
        }
    }

    /// Adds a comma-separated `-o` list. Options that would make the mount
    /// writable, or that restorefs sets itself, are refused.
    pub fn add(&mut self, list: &str) -> Result<(), String> {
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match opt {
                "allow_other" => self.acl = SessionACL::All,
                "allow_root" => self.acl = SessionACL::RootAndOwner,
                "noatime" => self.noatime = true,
                "noexec" => self.noexec = true,
                // Always on. nodev and nosuid because files from a backup
                // must not become devices or set-id programs on the host.
                "ro" | "default_permissions" | "nodev" | "nosuid" | "exec" | "atime" => {}
                "rw" => return Err("rw: restorefs mounts are read-only".into()),
                "dev" | "suid" => return Err(format!("{opt}: not allowed on a restorefs mount")),
                "auto_unmount" => return Err("auto_unmount: not supported".into()),
                o if o.starts_with("fsname=") || o.starts_with("subtype=") => {
                    return Err(format!("{o}: restorefs sets this itself"))
                }
                o => self.custom.push(o.to_string()),
            }
        }
        Ok(())
    }

    /// `fsname=` value: the mount's source in `/proc/mounts`.
    pub(crate) fn source(&self) -> String {
        format!("restorefs:{}", self.image_name)
    }

    /// mount(2) flags beyond read-only, nosuid and nodev.
    pub(crate) fn extra_flags(&self) -> libc::c_ulong {
        let mut flags = 0;
        if self.noatime {
            flags |= libc::MS_NOATIME;
        }
        if self.noexec {
            flags |= libc::MS_NOEXEC;
        }
        flags
    }

    /// The options the FUSE kernel module itself takes, after the
    /// `fd=...,rootmode=...` that the mounter adds.
    pub(crate) fn kernel_options(&self) -> Vec<String> {
        let mut out = vec!["default_permissions".to_string()];
        if self.acl != SessionACL::Owner {
            // The kernel only knows allow_other; fuser narrows it down to
            // root and owner for allow_root.
            out.push("allow_other".into());
        }
        out.extend(self.custom.iter().cloned());
        out
    }

    /// Every option as one `-o` list for fusermount3.
    pub(crate) fn fusermount_options(&self) -> String {
        let mut out = vec![
            "ro".to_string(),
            "nosuid".into(),
            "nodev".into(),
            format!("fsname={}", self.source()),
            "subtype=restorefs".into(),
        ];
        if self.noatime {
            out.push("noatime".into());
        }
        if self.noexec {
            out.push("noexec".into());
        }
        out.extend(self.kernel_options());
        out.join(",")
    }

    /// The fuser session configuration (the mount itself is ours).
    pub(crate) fn config(&self) -> Config {
        let mut config = Config::default();
        config.acl = self.acl;
        config.n_threads = Some(self.threads.max(1));
        // Each thread reads requests from its own clone of the /dev/fuse
        // descriptor, so the kernel hands requests to idle threads without
        // them all waking on one queue.
        config.clone_fd = true;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let mut o = MountOptions::new("/a b,c.img");
        assert_eq!(o.image_name, "/a_b_c.img");
        o.add("allow_other,noatime,ro").unwrap();
        assert_eq!(o.acl, SessionACL::All);
        assert!(o.add("rw").is_err());
        assert!(o.add("suid").is_err());
        assert_eq!(o.extra_flags(), libc::MS_NOATIME);
        assert_eq!(
            o.fusermount_options(),
            "ro,nosuid,nodev,fsname=restorefs:/a_b_c.img,subtype=restorefs,noatime,\
             default_permissions,allow_other"
        );
    }
}
