//! The embedded terminal: child process in a PTY, key encoding, terminal-query replies, screen
//! model, and the widget that draws it.

pub mod child;
pub(crate) mod keys;
pub(crate) mod outer;
pub mod queries;
pub mod screen;
pub(crate) mod widget;
