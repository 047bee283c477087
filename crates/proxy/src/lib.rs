//! tandem's data plane (WIP)
#![allow(dead_code)] // WIP: the Proxy that uses these lands next
pub mod balance;
pub mod health;
mod listener;
mod pool;
pub mod relay;
pub mod state;
