//! Per-user bounds on shared resources (daemon connections, link-front connections):
//! one local user who opens many only fills their own part.

use std::collections::HashMap;
use std::sync::Arc;

/// How many of something each uid holds now.
#[derive(Default)]
pub struct PerUser {
    held: parking_lot::Mutex<HashMap<u32, usize>>,
}

/// One unit of a user's part; given back on drop.
pub struct UserSlot {
    uid: u32,
    table: Arc<PerUser>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.table.held.lock();
        if let Some(n) = held.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

impl PerUser {
    /// A slot for `uid`, unless it already holds `limit`.
    pub fn take(self: &Arc<Self>, uid: u32, limit: usize) -> Option<UserSlot> {
        let mut held = self.held.lock();
        let n = held.entry(uid).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            uid,
            table: self.clone(),
        })
    }

    /// How many `uid` holds now.
    pub fn held(&self, uid: u32) -> usize {
        self.held.lock().get(&uid).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_at_most_its_limit_and_gets_slots_back() {
        let t = Arc::new(PerUser::default());
        let a: Vec<_> = (0..3).map(|_| t.take(1, 3).unwrap()).collect();
        assert!(t.take(1, 3).is_none());
        assert!(t.take(2, 3).is_some(), "another user is not held up");
        drop(a);
        assert_eq!(t.held(1), 0);
        assert!(t.take(1, 3).is_some());
    }
}
