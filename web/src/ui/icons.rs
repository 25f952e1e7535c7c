//! Icons as inline SVG: emoji fonts are not everywhere (e.g. headless Linux).

use dioxus::prelude::*;

#[component]
pub(super) fn PaperclipIcon() -> Element {
    rsx! {
        svg { width: "20", height: "20", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linecap: "round",
            path { d: "M21 12.5l-8.5 8.5a5 5 0 0 1-7-7L14 5.5a3.5 3.5 0 0 1 5 5L10.5 19a2 2 0 0 1-3-3L15 8.5" }
        }
    }
}

#[component]
pub(super) fn DocIcon() -> Element {
    rsx! {
        svg { width: "18", height: "18", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linejoin: "round",
            path { d: "M14 3H6a1 1 0 0 0-1 1v16a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1V8z M14 3v5h5 M8 13h8 M8 17h6" }
        }
    }
}

#[component]
pub(super) fn ImageIcon() -> Element {
    rsx! {
        svg { width: "18", height: "18", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linejoin: "round",
            rect { x: "3", y: "4", width: "18", height: "16", rx: "2" }
            path { d: "M3 17l5-5 4 4 3-3 6 6" }
        }
    }
}

#[component]
pub(super) fn CopyIcon() -> Element {
    rsx! {
        svg { width: "15", height: "15", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linejoin: "round",
            rect { x: "9", y: "9", width: "12", height: "12", rx: "2" }
            path { d: "M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1" }
        }
    }
}
