//! The encrypted history: the SQLCipher database ([`store`]) whose key lives
//! in the OS keychain ([`keychain`]), the recovery key ([`recovery`]) and its
//! escrow ([`escrow`]), the audit chain ([`audit`]) and its anchors outside
//! the database ([`anchor`]), backups ([`backup`]) and the local API's keys
//! ([`api_keys`]).

pub mod anchor;
pub mod api_keys;
pub mod audit;
pub mod backup;
pub mod escrow;
pub mod keychain;
pub mod recovery;
pub mod store;
