//! libFuzzer target: any bytes in any chunking through the Kafka frame decoder and
//! request handler (see `herald_fuzz::check_kafka_frames`); the first byte picks the
//! chunk size.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Some((&chunk, rest)) = bytes.split_first() {
        herald_fuzz::check_kafka_frames(rest, chunk);
    }
});
