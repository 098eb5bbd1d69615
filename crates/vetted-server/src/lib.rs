//! Vetted's server: the axum HTTP API (tenancy by private key, admin token for operators), the
//! command pipeline that turns requests into domain commands and appended events, the
//! application/flow registry, configuration, and the `vetted` command-line interface.
#![forbid(unsafe_code)]

pub mod actor;
pub mod api;
pub mod cli;
pub mod config;
mod demo;
pub mod engine;
pub mod error;
pub mod keys;
mod operator;
pub mod registry;
pub mod service;

pub use config::Config;
pub use engine::Engine;
pub use error::ApiError;
