//! The page address (`location.hash`): which conversation is open and which message to
//! show, so a refresh or a shared link opens the same place. A new page (e.g. settings)
//! is a new variant here.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A new chat: no hash.
    NewChat,
    /// `#c=<conversation id>`, with `&m=<message id>` to scroll to and flash a message.
    Conversation { id: String, message: Option<String> },
}

impl Route {
    /// The route of a hash (with or without its leading `#`); anything unknown is a new chat.
    pub fn parse(hash: &str) -> Self {
        let hash = hash.trim_start_matches('#');
        let Some(rest) = hash.strip_prefix("c=") else {
            return Route::NewChat;
        };
        let (id, message) = match rest.split_once("&m=") {
            Some((c, m)) => (c, (!m.is_empty()).then(|| m.to_string())),
            None => (rest, None),
        };
        if id.is_empty() {
            return Route::NewChat;
        }
        Route::Conversation {
            id: id.to_string(),
            message,
        }
    }

    /// The hash without its `#` (empty for a new chat).
    pub fn to_hash(&self) -> String {
        match self {
            Route::NewChat => String::new(),
            Route::Conversation {
                id,
                message: Some(m),
            } => format!("c={id}&m={m}"),
            Route::Conversation { id, message: None } => format!("c={id}"),
        }
    }

    pub fn conversation(id: &str, message: Option<&str>) -> Self {
        Route::Conversation {
            id: id.to_string(),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_and_message_round_trip() {
        for r in [
            Route::NewChat,
            Route::conversation("c1", None),
            Route::conversation("c1", Some("m9")),
        ] {
            assert_eq!(Route::parse(&r.to_hash()), r);
            assert_eq!(Route::parse(&format!("#{}", r.to_hash())), r);
        }
        assert_eq!(Route::conversation("c1", Some("")).to_hash(), "c=c1");
    }

    #[test]
    fn unknown_or_empty_hashes_are_a_new_chat() {
        for h in ["", "#", "x=1", "c=", "c=&m=m1"] {
            assert_eq!(Route::parse(h), Route::NewChat, "{h}");
        }
        assert_eq!(Route::parse("c=c1&m="), Route::conversation("c1", None));
    }
}
