//! Text before the model sees it: what a text must be to be classified
//! ([`validation`]), clinical abbreviations ([`abbreviations`]) and the
//! tokenizer step ([`tokenize`]). Nothing here runs a model.

pub mod abbreviations;
pub mod tokenize;
pub mod validation;
