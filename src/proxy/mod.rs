//! The switching proxy: app-server lifecycle, websocket relay, protocol types, switch policy.

pub mod events;
pub mod serve;
