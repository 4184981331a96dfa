//! Model packs on disk: the manifest and the folder it describes
//! ([`manifest`]), pack archives for import and export ([`archive`]) and
//! their signatures ([`signing`]). A pack is checked whole before anything
//! uses it.

pub mod archive;
pub mod manifest;
pub mod signing;
