//! libFuzzer target: any bytes in any chunking through the line framer (see
//! `herald_fuzz::check_framer`); the first byte picks the chunk size.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Some((&chunk, rest)) = bytes.split_first() {
        herald_fuzz::check_framer(rest, chunk);
    }
});
