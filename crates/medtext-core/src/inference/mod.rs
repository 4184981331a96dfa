//! Classification: the [`classifier`] (encoder, pooling, heads, the lexical
//! model), the words that drove a result ([`evidence`]), and the one
//! inference thread ([`worker`]) behind the [`engine`] that every front end
//! holds. Batch results ([`batch`]) are what the Batch screen shows and saves.

pub mod batch;
pub mod classifier;
pub mod engine;
pub mod evidence;
pub mod head;
pub mod lexical;
pub mod pooling;
pub mod worker;
