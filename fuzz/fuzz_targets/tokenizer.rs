#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| medtext_fuzz::tokenizer(data));
