//! The `connectoid` command-line tool (filled in next).

fn main() {}
