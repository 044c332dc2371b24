//! [`AccountId`]: the account store's id of an account, as a type of its own, so an account id
//! is never mixed up with a name, an email or a ChatGPT workspace id. A leaf: it imports
//! nothing of cs-tui.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// The store's id of an account. In JSON it is the plain string (serde transparent), so files
/// and outputs read and write as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for AccountId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by [`AccountId`] can be looked up with a `&str`.
impl Borrow<str> for AccountId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for AccountId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for AccountId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> Self {
        id.0
    }
}

impl PartialEq<str> for AccountId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AccountId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for AccountId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_plain_string_and_looks_up_by_str() {
        let id = AccountId::from("acct-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""acct-1""#);
        let back: AccountId = serde_json::from_str(r#""acct-1""#).unwrap();
        assert_eq!(back, id);
        let map = std::collections::HashMap::from([(id.clone(), 1)]);
        assert_eq!(map.get("acct-1"), Some(&1));
        assert_eq!(id.to_string(), "acct-1");
    }
}
