//! One file per route group.

pub mod events;
pub mod export;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod proof;
pub mod stream;
pub mod tokens;
pub mod ui;
pub mod verify;
pub mod whoami;
