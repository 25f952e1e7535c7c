//! Auto-scroll that follows a streaming answer and pauses when the user scrolls up.

/// How close to the bottom (px) still counts as "at the bottom".
pub const BOTTOM_SLACK_PX: f64 = 48.0;

pub fn near_bottom(scroll_top: f64, scroll_height: f64, client_height: f64) -> bool {
    scroll_height - (scroll_top + client_height) <= BOTTOM_SLACK_PX
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoScroll {
    following: bool,
    last_top: f64,
}

impl Default for AutoScroll {
    fn default() -> Self {
        Self {
            following: true,
            last_top: 0.0,
        }
    }
}

impl AutoScroll {
    /// A scroll event on the message list.
    pub fn on_scroll(&mut self, scroll_top: f64, scroll_height: f64, client_height: f64) {
        if near_bottom(scroll_top, scroll_height, client_height) {
            self.following = true;
        } else if scroll_top < self.last_top {
            // Moving up, away from the bottom: the user wants to read.
            self.following = false;
        }
        self.last_top = scroll_top;
    }

    /// New content arrived: scroll to the bottom?
    pub fn should_follow(&self) -> bool {
        self.following
    }

    /// The user sent a message or pressed "jump to latest".
    pub fn resume(&mut self) {
        self.following = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_until_user_scrolls_up_then_resumes_at_bottom() {
        let mut s = AutoScroll::default();
        assert!(s.should_follow());
        // content grew and we scrolled to the bottom programmatically
        s.on_scroll(600.0, 1000.0, 400.0);
        assert!(s.should_follow());
        // user scrolls up
        s.on_scroll(300.0, 1200.0, 400.0);
        assert!(!s.should_follow());
        // growing content while paused doesn't change anything; scrolling down but not to the bottom neither
        s.on_scroll(500.0, 1400.0, 400.0);
        assert!(!s.should_follow());
        // reaching the bottom again resumes
        s.on_scroll(980.0, 1400.0, 400.0);
        assert!(s.should_follow());
        s.on_scroll(100.0, 1400.0, 400.0);
        s.resume();
        assert!(s.should_follow());
    }
}
