//! The locks one owner has taken and not yet released: a component instance
//! (the WIT export), or a host's locker and its clones.
//!
//! A second acquire of a lock its owner still holds would wait for itself,
//! until its timeout or forever. [`refuse_retake`] refuses it at once with
//! [`LockError::AlreadyHeld`] instead. The record alone does not decide: a
//! lock it remembers may since have been broken as stale or released by
//! token from elsewhere, so the lock file is asked whether it still holds
//! the token, and only a lock that does is refused.

use std::collections::HashMap;

use crate::LockError;

/// Path to token of every lock an owner took and has not released.
#[derive(Debug, Default)]
pub struct Owned {
    held: HashMap<String, String>,
}

/// Refuses to take `path` again while its owner, named `who` in the
/// message ("this instance"), still holds it with `remembered`, the token
/// [`Owned::token`] gave. `holds(token)` asks the lock file whether it holds
/// `token`. (Called with no borrow of the record, which `holds` may need.)
///
/// # Errors
/// [`LockError::AlreadyHeld`]; an error of `holds`.
pub fn refuse_retake(
    path: &str,
    who: &str,
    remembered: Option<String>,
    holds: impl FnOnce(&str) -> Result<bool, LockError>,
) -> Result<(), LockError> {
    match remembered {
        Some(token) if holds(&token)? => Err(LockError::AlreadyHeld(format!(
            "{path} is already held by {who}, with token {token}; release it first"
        ))),
        _ => Ok(()),
    }
}

impl Owned {
    /// The token the owner took `path` with, unless it has released it.
    pub fn token(&self, path: &str) -> Option<String> {
        self.held.get(path).cloned()
    }

    /// Records that the owner took `path` with `token`.
    pub fn taken(&mut self, path: String, token: String) {
        self.held.insert(path, token);
    }

    /// Forgets `path` if the owner took it with `token` (a release, or an
    /// undone acquire); a release by another token leaves the record alone.
    pub fn released(&mut self, path: &str, token: &str) {
        if self.held.get(path).is_some_and(|mine| mine == token) {
            self.held.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lock_still_held_with_the_remembered_token_is_refused() {
        let mut owned = Owned::default();
        let check = |owned: &Owned, holds: fn(&str) -> Result<bool, LockError>| {
            refuse_retake("a.lock", "this instance", owned.token("a.lock"), holds)
        };
        assert!(check(&owned, |_| unreachable!("nothing taken yet")).is_ok());
        owned.taken("a.lock".into(), "t1".into());
        let refused = check(&owned, |token| Ok(token == "t1"));
        assert!(
            matches!(&refused, Err(LockError::AlreadyHeld(why)) if why.contains("this instance") && why.contains("t1"))
        );
        // Broken as stale or released elsewhere: the lock file decides.
        assert!(check(&owned, |_| Ok(false)).is_ok());
        // Another token's release leaves the record; ours clears it.
        owned.released("a.lock", "t2");
        assert!(check(&owned, |_| Ok(true)).is_err());
        owned.released("a.lock", "t1");
        assert!(check(&owned, |_| unreachable!("forgotten")).is_ok());
    }
}
