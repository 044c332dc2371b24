//! The switching proxy: app-server lifecycle, websocket relay, protocol types, switch policy.

pub mod app_server;
pub mod core;
pub mod directory;
pub mod events;
pub mod history;
pub mod ipc;
pub mod policy;
pub mod relay;
pub mod rpc;
pub mod session;
pub mod socket;
pub mod store_directory;
pub mod turn_guard;
pub mod upstream;
