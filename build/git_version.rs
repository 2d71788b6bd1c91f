// The build script of the `connectoid` and `connectoid-relay` crates (each
// crate's build.rs includes this file): sets `CONNECTOID_VERSION` for
// `--version`, the crate version and, in a git checkout, the commit it was
// built from. Outside a checkout (a crate tarball) or without `git`, the
// version alone.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Watches `file` if it exists (a missing one would rerun every build).
fn rerun_if_changed(file: Option<String>) {
    if let Some(file) = file
        && std::path::Path::new(&file).exists()
    {
        println!("cargo:rerun-if-changed={file}");
    }
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let full = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            // Rebuild when HEAD moves (a commit, a checkout).
            for path in ["HEAD", "packed-refs"] {
                rerun_if_changed(git(&["rev-parse", "--git-path", path]));
            }
            if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(file) = git(&["rev-parse", "--git-path", &reference])
            {
                rerun_if_changed(Some(file));
            }
            format!("{version} (commit {commit})")
        }
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=CONNECTOID_VERSION={full}");
}
