//! A stand-in tmux host: a fixed set of terminals, every notification recorded.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::traits::TerminalHost;
use crate::types::{AccessMode, TerminalName};

/// A host with a fixed set of terminals that records every notification.
#[derive(Default)]
pub struct FakeHost {
    /// The terminals that exist (remove one to close it).
    pub terminals: Mutex<HashSet<String>>,
    /// Every notification shown: (terminal, message).
    pub notices: Mutex<Vec<(String, String)>>,
    /// The next notify panics (in the session's notice task, which fails the session).
    pub panic_on_notify: Mutex<bool>,
    /// Each notify takes this long (a tmux that is slow to answer).
    pub notify_delay: Mutex<Duration>,
    /// What the terminals' screens hold, for handoff captures.
    pub screen: Mutex<String>,
    /// The size a check finds (80x24 unless set).
    pub size: Mutex<Option<(u16, u16)>>,
    /// The size it says it last saw, for every terminal (none unless set).
    pub size_hint: Mutex<Option<(u16, u16)>>,
    /// Each check takes this long (a slow tmux).
    pub check_delay: Mutex<Duration>,
}

impl FakeHost {
    /// A host with these terminals.
    pub fn with(terminals: &[&str]) -> Self {
        FakeHost {
            terminals: Mutex::new(terminals.iter().map(|s| s.to_string()).collect()),
            notices: Mutex::new(Vec::new()),
            panic_on_notify: Mutex::new(false),
            notify_delay: Mutex::new(Duration::ZERO),
            screen: Mutex::new(String::new()),
            size: Mutex::new(Some((80, 24))),
            size_hint: Mutex::new(None),
            check_delay: Mutex::new(Duration::ZERO),
        }
    }
}

#[async_trait]
impl TerminalHost for FakeHost {
    async fn check(&self, terminal: &TerminalName) -> Result<Option<(u16, u16)>, String> {
        let delay = *self.check_delay.lock();
        tokio::time::sleep(delay).await;
        if self.terminals.lock().contains(terminal.as_str()) {
            Ok(*self.size.lock())
        } else {
            Err(format!("no terminal named {terminal}"))
        }
    }

    fn size_hint(&self, _terminal: &TerminalName) -> Option<(u16, u16)> {
        *self.size_hint.lock()
    }

    fn attach_command(&self, terminal: &TerminalName, access: AccessMode) -> Vec<String> {
        let mut argv = vec!["attach".to_string()];
        if access == AccessMode::ReadOnly {
            argv.push("-r".into());
        }
        argv.push(terminal.to_string());
        argv
    }

    async fn capture(
        &self,
        terminal: &TerminalName,
        lines: usize,
    ) -> Result<crate::traits::TerminalContext, String> {
        self.check(terminal).await?;
        let screen = self.screen.lock().clone();
        let all: Vec<&str> = screen.lines().collect();
        Ok(crate::traits::TerminalContext {
            cwd: "/home/fake".into(),
            command: "bash".into(),
            scrollback: all[all.len().saturating_sub(lines)..].join("\n"),
            cols: 80,
            rows: 24,
        })
    }

    async fn notify(&self, terminal: &TerminalName, message: &str) -> Result<(), String> {
        if std::mem::take(&mut *self.panic_on_notify.lock()) {
            panic!("injected: notify panicked");
        }
        let delay = *self.notify_delay.lock();
        tokio::time::sleep(delay).await;
        self.notices
            .lock()
            .push((terminal.to_string(), message.to_string()));
        Ok(())
    }
}
