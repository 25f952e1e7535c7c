#![no_main]
//! Image validation, thumbnail and prompt downscale on arbitrary bytes.

use std::time::Duration;

use confab_extract::detect::{Detected, ImageFormat};
use confab_extract::extract::image::prompt_image;
use confab_extract::extract::{Limits, extract};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::new(Duration::from_secs(5));
    for f in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp, ImageFormat::Gif] {
        let _ = extract(Detected::Image(f), data, &limits);
        let _ = prompt_image(data, f, 512, &limits);
    }
});
