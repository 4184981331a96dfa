//! The engine a front end holds: the model pack in use, behind its
//! inference worker, and the rule for changing packs. A new pack is loaded
//! and checked completely before it replaces the old one, so choosing a
//! broken pack leaves the app classifying with the pack it had.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::inference::worker::{Worker, DEFAULT_QUEUE};
use crate::pack::manifest::{is_safe_name, Pack};
use crate::{inference::classifier::Classifier, Error, Result};

enum Loaded {
    Ready(Arc<Worker>),
    /// No pack could be loaded yet; why, in words safe to show.
    Missing(String),
}

pub struct Engine {
    models_dir: PathBuf,
    loaded: RwLock<Loaded>,
}

impl Engine {
    /// An engine over `models_dir` with `pack` (and `head`) loaded if it
    /// can be; if not, [`Engine::worker`] explains why until a pack is chosen
    /// that loads.
    pub fn start(models_dir: &Path, pack: &str, head: Option<&str>) -> Self {
        let engine = Self {
            models_dir: models_dir.to_path_buf(),
            loaded: RwLock::new(Loaded::Missing("no model pack chosen yet".into())),
        };
        // A failure is recorded in `loaded` and reported by `worker()`.
        let _ = engine.switch(pack, head);
        engine
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// The worker of the pack in use.
    pub fn worker(&self) -> Result<Arc<Worker>> {
        match &*self.loaded.read().map_err(|_| poisoned())? {
            Loaded::Ready(worker) => Ok(Arc::clone(worker)),
            Loaded::Missing(why) => Err(Error::Engine(format!("no model pack is loaded: {why}"))),
        }
    }

    /// Loads the pack folder `pack` of the models directory with `head` and,
    /// only if that fully succeeds, makes it the pack in use. On failure the
    /// pack in use stays as it was and the error names the file and the
    /// problem. Only a plain folder name is taken, never a path: a front end
    /// cannot be made to load a pack from elsewhere.
    pub fn switch(&self, pack: &str, head: Option<&str>) -> Result<Arc<Worker>> {
        let loaded = self
            .open(pack)
            .and_then(|p| Classifier::from_pack(p, head))
            .and_then(|c| Worker::start(Arc::new(c), DEFAULT_QUEUE));
        let mut current = self.loaded.write().map_err(|_| poisoned())?;
        match loaded {
            Ok(worker) => {
                let worker = Arc::new(worker);
                *current = Loaded::Ready(Arc::clone(&worker));
                Ok(worker)
            }
            Err(e) => {
                if let Loaded::Missing(why) = &mut *current {
                    *why = e.to_string();
                }
                Err(e)
            }
        }
    }

    fn open(&self, pack: &str) -> Result<Pack> {
        let dir = self.models_dir.join(pack);
        if !is_safe_name(pack) || !dir.join("manifest.json").is_file() {
            return Err(Error::PackNotFound {
                name: pack.to_string(),
                dir: self.models_dir.clone(),
            });
        }
        Pack::open(&dir)
    }
}

fn poisoned() -> Error {
    Error::Engine("the engine stopped after an internal error; restart MedText".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::manifest::tests::write_tiny_pack;

    #[test]
    fn a_broken_pack_leaves_the_pack_in_use_working() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = write_tiny_pack(dir.path());
        let engine = Engine::start(dir.path(), "tiny-pack", None);
        let before = engine
            .worker()
            .unwrap()
            .classify(vec!["fever".into()])
            .unwrap();

        // A copy of the pack whose head file is damaged.
        let broken = dir.path().join("broken-pack");
        std::fs::create_dir(&broken).unwrap();
        for entry in std::fs::read_dir(&pack_dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
        }
        let manifest = std::fs::read_to_string(broken.join("manifest.json")).unwrap();
        let head_file = serde_json::from_str::<serde_json::Value>(&manifest).unwrap()["heads"][0]
            ["file"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::write(broken.join(&head_file), b"not weights").unwrap();

        let err = engine.switch("broken-pack", None).err().unwrap();
        assert!(err.to_string().contains(&head_file), "{err}");
        let after = engine.worker().unwrap();
        assert_eq!(after.classifier().pack().manifest.name, "tiny-pack");
        let again = after.classify(vec!["fever".into()]).unwrap();
        assert_eq!(
            before[0].as_ref().unwrap().top,
            again[0].as_ref().unwrap().top
        );
        // An unknown head, or a path instead of a pack name, is refused the
        // same way.
        assert!(engine.switch("tiny-pack", Some("no-such-head")).is_err());
        let elsewhere = pack_dir.to_str().unwrap();
        assert!(matches!(
            engine.switch(elsewhere, None),
            Err(Error::PackNotFound { .. })
        ));
        assert!(matches!(
            engine.switch("../tiny-pack", None),
            Err(Error::PackNotFound { .. })
        ));
        assert!(engine.worker().is_ok());
    }

    #[test]
    fn without_any_pack_the_engine_says_why_and_can_still_load_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::start(dir.path(), "tiny-pack", None);
        let err = engine.worker().err().unwrap();
        assert!(err.to_string().contains("no model pack"), "{err}");
        assert!(err.to_string().contains("tiny-pack"), "{err}");
        write_tiny_pack(dir.path());
        engine.switch("tiny-pack", None).unwrap();
        assert!(engine.worker().is_ok());
    }
}
