#![no_main]
//! The pptx extractor on arbitrary bytes: errors are fine, panics and hangs are not.

use std::time::Duration;

use confab_extract::detect::Detected;
use confab_extract::extract::{Limits, extract};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::new(Duration::from_secs(5));
    let _ = extract(Detected::Pptx, data, &limits);
});
