//! Pure extraction: bytes → type (by content) → structured parts (pages, sheets, sections,
//! tables) with cl100k token counts. No I/O, no async, no storage: confab-files runs it on
//! a blocking thread and maps the results onto its protobuf messages.
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod corpus;
pub mod detect;
pub mod error;
pub mod extract;
pub mod tokens;
pub mod types;

pub use detect::{Detected, ImageFormat, TextFlavor, detect};
pub use error::{ExtractError, Result, human_size};
pub use extract::{Extracted, ImageOutput, Limits, extract};
