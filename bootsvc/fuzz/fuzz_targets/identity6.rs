//! See `bootsvc_fuzz::targets::identity6` for the input format and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bootsvc_fuzz::targets::identity6::run(data));
