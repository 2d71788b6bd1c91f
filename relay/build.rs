//! Sets `CONNECTOID_VERSION` for `connectoid-relay --version`; the script is
//! shared with the client.

include!("../build/git_version.rs");
