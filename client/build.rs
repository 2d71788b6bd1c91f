//! Sets `CONNECTOID_VERSION` for `connectoid --version`; the script is shared
//! with the relay.

include!("../build/git_version.rs");
