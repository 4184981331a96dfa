//! From a labelled file to a model pack: labelled examples ([`examples`]),
//! the train / validation / test split ([`split`]), sentence vectors cached
//! on disk ([`embedding_cache`]), fitting a head ([`fit`]), the whole run
//! ([`pipeline`]) and the figures it is judged by ([`evaluation`]).

pub mod embedding_cache;
pub mod evaluation;
pub mod examples;
pub mod fit;
pub mod pipeline;
pub mod split;
