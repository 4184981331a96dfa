//! What the workstation imposes and provides: IT's machine [`policy`], the
//! [`idle_lock`], the OS's own authentication ([`os_auth`]), the guard that
//! keeps every socket on loopback ([`network`]), the log ([`logging`]) and
//! the inference threads and allocator ([`runtime`]).

pub mod idle_lock;
pub mod logging;
pub mod network;
pub mod os_auth;
pub mod policy;
pub mod runtime;
