//! Whether one path lies inside another, judged by where the paths really lead.
//!
//! Keys and the gateway's actor store must never sit inside the ledger directory: copying or
//! shipping the ledger would ship them, and whoever can change the ledger could re-sign it.
//! Paths given on the command line are relative, use `..`, pass through symbolic links, or
//! name directories that do not exist yet; all of them must be judged by where they lead.

use std::path::{Component, Path, PathBuf};

/// `path` made absolute, with symbolic links resolved as far as the path exists; the part
/// that does not exist yet is appended with `.` dropped and `..` applied to what precedes it.
pub fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component<'_>> = abs.components().collect();
    // The longest prefix that exists is canonicalized; the root always exists.
    for split in (0..=parts.len()).rev() {
        let prefix: PathBuf = parts[..split].iter().collect();
        if prefix.as_os_str().is_empty() {
            continue;
        }
        let Ok(mut out) = prefix.canonicalize() else {
            continue;
        };
        for part in &parts[split..] {
            match part {
                Component::CurDir => {}
                Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other.as_os_str()),
            }
        }
        return out;
    }
    abs
}

/// Whether `inner` is `outer` itself or lies anywhere below it.
pub fn is_within(outer: &Path, inner: &Path) -> bool {
    resolved(inner).starts_with(resolved(outer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_inside_is_found_however_it_is_spelled() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = tmp.path().join("audit");
        std::fs::create_dir(&ledger).unwrap();
        assert!(is_within(&ledger, &ledger));
        assert!(is_within(&ledger, &ledger.join("keys")));
        assert!(is_within(&ledger, &ledger.join("not/yet/there")));
        assert!(is_within(&ledger, &ledger.join("./x/../keys")));
        assert!(is_within(&ledger, &tmp.path().join("gone/../audit/keys")));
        // A link that leads into the ledger is inside it.
        std::os::unix::fs::symlink(&ledger, tmp.path().join("link")).unwrap();
        assert!(is_within(&ledger, &tmp.path().join("link/keys")));
        // Beside it, even with a shared name prefix, is outside.
        assert!(!is_within(&ledger, &tmp.path().join("audit.keys")));
        assert!(!is_within(&ledger, &tmp.path().join("audit/../audit.keys")));
        assert!(!is_within(&ledger, tmp.path()));
        // A ledger directory that does not exist yet is judged by its absolute form too.
        let fresh = tmp.path().join("fresh");
        assert!(is_within(&fresh, &fresh.join("keys")));
        assert!(!is_within(&fresh, &tmp.path().join("fresh.keys")));
    }

    #[test]
    fn relative_paths_are_judged_from_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert!(is_within(Path::new("same"), Path::new("same")));
        assert!(is_within(Path::new("in1"), Path::new("in1/keys")));
        assert!(is_within(Path::new("in1"), &cwd.join("in1/keys")));
        assert!(!is_within(Path::new("in1"), Path::new("in1.keys")));
    }
}
