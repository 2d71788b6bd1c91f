#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| connectoid_protocol::fuzzing::peer_link(data));
