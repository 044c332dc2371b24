//! The embedded terminal: child process in a PTY, key encoding, terminal-query replies, screen
//! model, and the widget that draws it.

pub mod child;
pub mod keys;
pub mod outer;
pub mod queries;
pub mod screen;
pub mod widget;

pub use child::{ChildSpec, PtyChild, PtyEvent};
pub use keys::{KeyModes, encode_key, encode_paste};
pub use queries::{OuterColors, TerminalQuery, reply_to_terminal_query};
pub use screen::PaneScreen;
pub use widget::PaneWidget;
