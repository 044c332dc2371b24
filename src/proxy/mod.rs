//! The switching proxy: app-server lifecycle, websocket relay, protocol types, switch policy.

pub(crate) mod app_server;
pub(crate) mod core;
pub(crate) mod directory;
pub mod events;
pub mod history;
pub(crate) mod ipc;
pub mod ledger;
pub(crate) mod metrics;
pub(crate) mod placement;
pub mod policy;
pub mod pool;
pub mod relay;
pub mod rpc;
pub mod session;
pub mod socket;
pub(crate) mod start_plan;
pub mod store_directory;
pub(crate) mod turn_guard;
pub(crate) mod upstream;
pub mod usage_store;
