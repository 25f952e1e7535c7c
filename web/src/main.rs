//! Confab's browser client: a Dioxus app compiled to wasm, talking grpc-web to the gateway
//! at the page's own origin. Logic that needs no browser lives in `confab-web-core`.
#![forbid(unsafe_code)]

mod actions;
mod api;
mod state;
mod ui;

fn main() {
    dioxus::launch(ui::App);
}
