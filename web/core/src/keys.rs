//! Keyboard habits: Enter sends, Shift+Enter newline, Esc stops, Ctrl/Cmd+K focuses search.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Send the composer's message (the default action of the key is prevented).
    Send,
    /// Stop the running generation.
    Stop,
    FocusSearch,
    /// Let the browser do its default (type, newline…).
    Default,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct KeyPress<'a> {
    pub key: &'a str,
    pub shift: bool,
    pub ctrl: bool,
    pub meta: bool,
    pub alt: bool,
    /// An IME composition is in progress (Enter confirms the composition, it must not send).
    pub composing: bool,
}

/// Keys typed in the composer.
pub fn composer_key(k: KeyPress<'_>, streaming: bool) -> KeyAction {
    match k.key {
        "Enter" if !k.shift && !k.composing && !k.alt => {
            if streaming {
                KeyAction::Default
            } else {
                KeyAction::Send
            }
        }
        "Escape" if streaming => KeyAction::Stop,
        _ => global_key(k, streaming),
    }
}

/// Keys anywhere on the page.
pub fn global_key(k: KeyPress<'_>, streaming: bool) -> KeyAction {
    match k.key {
        "k" | "K" if (k.ctrl || k.meta) && !k.alt && !k.shift => KeyAction::FocusSearch,
        "Escape" if streaming => KeyAction::Stop,
        _ => KeyAction::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str) -> KeyPress<'_> {
        KeyPress {
            key,
            ..Default::default()
        }
    }

    #[test]
    fn enter_sends_shift_enter_does_not() {
        assert_eq!(composer_key(key("Enter"), false), KeyAction::Send);
        assert_eq!(
            composer_key(
                KeyPress {
                    shift: true,
                    ..key("Enter")
                },
                false
            ),
            KeyAction::Default
        );
        assert_eq!(
            composer_key(
                KeyPress {
                    composing: true,
                    ..key("Enter")
                },
                false
            ),
            KeyAction::Default
        );
        assert_eq!(
            composer_key(key("Enter"), true),
            KeyAction::Default,
            "no send while streaming"
        );
        assert_eq!(composer_key(key("a"), false), KeyAction::Default);
    }

    #[test]
    fn escape_stops_only_while_streaming_and_ctrl_k_focuses_search() {
        assert_eq!(composer_key(key("Escape"), true), KeyAction::Stop);
        assert_eq!(global_key(key("Escape"), true), KeyAction::Stop);
        assert_eq!(global_key(key("Escape"), false), KeyAction::Default);
        assert_eq!(
            global_key(
                KeyPress {
                    ctrl: true,
                    ..key("k")
                },
                false
            ),
            KeyAction::FocusSearch
        );
        assert_eq!(
            global_key(
                KeyPress {
                    meta: true,
                    ..key("K")
                },
                false
            ),
            KeyAction::FocusSearch
        );
        assert_eq!(global_key(key("k"), false), KeyAction::Default);
        assert_eq!(
            composer_key(
                KeyPress {
                    ctrl: true,
                    ..key("k")
                },
                false
            ),
            KeyAction::FocusSearch
        );
    }
}
