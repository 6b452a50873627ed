use fuser::{Config, MountOption, SessionACL};

/// How to mount: the image's name for `fsname=`, who may access the mount,
/// extra `-o` options and the number of request threads.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Shown as `restorefs:<image_name>` in `/proc/mounts` and `df`.
    pub image_name: String,
    acl: SessionACL,
    extra: Vec<MountOption>,
    /// Threads answering requests; reads of a slow image overlap.
    pub threads: usize,
}

impl MountOptions {
    /// Defaults for the image called `image_name`: owner-only access.
    pub fn new(image_name: &str) -> MountOptions {
        // fuser joins options with ',' for fusermount3, and the kernel and
        // mount(8) split fields on whitespace: keep the name in one piece.
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
            extra: Vec::new(),
            threads,
        }
    }

    /// Adds a comma-separated `-o` list. Options that would make the mount
    /// writable, or that restorefs sets itself, are refused.
    pub fn add(&mut self, list: &str) -> Result<(), String> {
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let parsed = match opt {
                "allow_other" => {
                    self.acl = SessionACL::All;
                    continue;
                }
                "allow_root" => {
                    self.acl = SessionACL::RootAndOwner;
                    continue;
                }
                "ro" | "default_permissions" => continue,
                "rw" => return Err("rw: restorefs mounts are read-only".into()),
                o if o.starts_with("fsname=") || o.starts_with("subtype=") => {
                    return Err(format!("{o}: restorefs sets this itself"))
                }
                "auto_unmount" => MountOption::AutoUnmount,
                "noatime" => MountOption::NoAtime,
                "noexec" => MountOption::NoExec,
                "exec" => MountOption::Exec,
                // nodev and nosuid are always on: files from a backup must
                // not become devices or set-id programs on the host.
                "nodev" | "nosuid" => continue,
                "dev" | "suid" => return Err(format!("{opt}: not allowed on a restorefs mount")),
                o => MountOption::CUSTOM(o.to_string()),
            };
            if !self.extra.contains(&parsed) {
                self.extra.push(parsed);
            }
        }
        if self.extra.contains(&MountOption::AutoUnmount) && self.acl == SessionACL::Owner {
            // fuser only passes auto_unmount through fusermount3, which needs
            // an ACL other than owner-only to accept it.
            self.acl = SessionACL::RootAndOwner;
        }
        Ok(())
    }

    /// The fuser configuration: read-only, kernel permission checks, no
    /// devices or set-id bits, plus the user's options.
    pub(crate) fn config(&self) -> Config {
        let mut mount_options = vec![
            MountOption::RO,
            MountOption::FSName(format!("restorefs:{}", self.image_name)),
            // Not MountOption::Subtype: fuser's direct mount(2) (as root)
            // drops it, while the kernel and fusermount3 both accept it as
            // an ordinary option.
            MountOption::CUSTOM("subtype=restorefs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        mount_options.extend(self.extra.iter().cloned());
        let mut config = Config::default();
        config.mount_options = mount_options;
        config.acl = self.acl;
        config.n_threads = Some(self.threads.max(1));
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
        let c = o.config();
        assert!(c.mount_options.contains(&MountOption::RO));
        assert!(c.mount_options.contains(&MountOption::NoAtime));
    }
}
