//! Paths inside a checkout of PR code: deploybot never follows a symlink
//! there, for what it reads, writes or hands to a builder.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::pipeline::exec::StepError;
use crate::quote;

/// `root/rel`, once it is certain that `rel` stays inside `root` (relative,
/// no `..`) and that no part of it that exists is a symlink. A part that
/// does not exist yet is fine: the caller creates it, or the command that
/// needs it says it is missing.
pub fn inside_checkout(root: &Path, rel: &str) -> Result<PathBuf, StepError> {
    let relative = Path::new(rel);
    let mut path = root.to_path_buf();
    let mut shown = PathBuf::new();
    for part in relative.components() {
        let Component::Normal(name) = part else {
            return Err(StepError::failed(format!(
                "{} is not a path inside the checkout",
                quote::code(rel)
            )));
        };
        path.push(name);
        shown.push(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StepError::failed(format!(
                    "{} is a symlink; deploybot does not follow symlinks in a checkout",
                    quote::code(&shown.display().to_string())
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StepError::failed(format!(
                    "cannot look at {} in the checkout: {e}",
                    quote::code(&shown.display().to_string())
                )));
            }
        }
    }
    if shown.as_os_str().is_empty() {
        return Err(StepError::failed(format!(
            "{} is not a path inside the checkout",
            quote::code(rel)
        )));
    }
    Ok(path)
}

/// Write `text` to `root/rel`, creating its folders, never through a
/// symlink: every part is checked, a file already there (committed in the
/// PR, say) is replaced, and the new one is created exclusively (which
/// follows no link, like `O_NOFOLLOW`).
pub fn write_in_checkout(root: &Path, rel: &str, text: &str) -> Result<PathBuf, StepError> {
    let path = inside_checkout(root, rel)?;
    let cannot = |what: &str, e: std::io::Error| {
        StepError::failed(format!("cannot {what} {}: {e}", quote::code(rel)))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| cannot("create the folder of", e))?;
    }
    // The folders may have been made just now: look again before writing.
    inside_checkout(root, rel)?;
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Err(StepError::failed(format!(
                "{} is a folder in the checkout; deploybot writes a file there",
                quote::code(rel)
            )));
        }
        Ok(_) => std::fs::remove_file(&path).map_err(|e| cannot("replace", e))?,
        Err(_) => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| cannot("write", e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| cannot("write", e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: StepError) -> String {
        match e {
            StepError::Failed { reason, .. } => reason,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn symlinks_in_a_checkout_are_refused() {
        let root = std::env::temp_dir().join(format!(
            "deploybot-paths-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let outside = root.join("outside");
        let checkout = root.join("checkout");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::create_dir_all(checkout.join("files")).expect("mkdir");
        std::os::unix::fs::symlink("/proc/self/environ", checkout.join("Containerfile"))
            .expect("symlink");
        std::os::unix::fs::symlink(&outside, checkout.join("vars")).expect("symlink");
        let refused = |rel: &str| message(inside_checkout(&checkout, rel).expect_err(rel));
        assert_eq!(
            refused("Containerfile"),
            "`Containerfile` is a symlink; deploybot does not follow symlinks in a checkout"
        );
        assert_eq!(
            refused("vars/generated.json"),
            "`vars` is a symlink; deploybot does not follow symlinks in a checkout"
        );
        assert!(refused("../x").contains("is not a path inside the checkout"));
        assert!(refused("/etc/passwd").contains("is not a path inside the checkout"));
        let written = write_in_checkout(&checkout, "vars/generated.json", "{}");
        assert!(written.is_err());
        assert!(
            !outside.join("generated.json").exists(),
            "nothing written outside"
        );
        // A plain path is fine, and a file there is replaced.
        let path = write_in_checkout(&checkout, "files/a/b.json", "1").expect("written");
        write_in_checkout(&checkout, "files/a/b.json", "2").expect("replaced");
        assert_eq!(std::fs::read_to_string(path).expect("read"), "2");
        let _ = std::fs::remove_dir_all(&root);
    }
}
