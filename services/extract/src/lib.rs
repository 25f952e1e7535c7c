//! Pure extraction: bytes → type (by content) → structured parts (pages, sheets, sections,
//! slides, tables) with cl100k token counts. No async, no storage, no network: confab-files
//! runs it on a blocking thread and maps the results onto its protobuf messages. The only
//! things it touches outside memory are the pdfium library it binds once
//! (`extract::pdfium`) and the Tesseract program it runs for OCR (`extract::ocr`).
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "corpus"))]
pub mod corpus;
pub mod detect;
pub mod error;
pub mod extract;
pub mod tokens;
pub mod types;

pub use detect::{Detected, ImageFormat, TextFlavor, detect};
pub use error::{ExtractError, Result, human_size};
pub use extract::{Extracted, ImageOutput, Limits, extract};
