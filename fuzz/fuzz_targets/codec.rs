//! libFuzzer target: any bytes through the wire codec (see `herald_fuzz::check_codec`).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| herald_fuzz::check_codec(bytes));
