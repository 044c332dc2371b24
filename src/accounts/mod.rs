//! Accounts: the store, tokens, and the usage of every account.

pub mod cli;
