//! The embedded terminal: child process in a PTY, key encoding, terminal-query replies, screen model.
