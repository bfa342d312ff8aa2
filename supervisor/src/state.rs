//! What the supervisor keeps on disk: the instance uid and the last config applied.

use std::path::{Path, PathBuf};

use odigos_proto::opamp::{AgentRemoteConfig, hex, new_instance_uid, parse_uid};
use prost::Message;

pub(crate) struct State {
    dir: PathBuf,
    pub uid: [u8; 16],
}

impl State {
    /// Loads the state in `dir`, creating a uid the first time.
    pub fn load(dir: &Path) -> std::io::Result<State> {
        std::fs::create_dir_all(dir)?;
        let stored = std::fs::read_to_string(dir.join("instance_uid"))
            .ok()
            .and_then(|text| parse_uid(text.trim()));
        let mut state = State {
            dir: dir.to_path_buf(),
            uid: [0; 16],
        };
        match stored {
            Some(uid) => state.uid = uid,
            None => state.set_uid(new_instance_uid())?,
        }
        Ok(state)
    }

    /// Adopts a uid (a new one, or one the server assigned) and keeps it.
    pub fn set_uid(&mut self, uid: [u8; 16]) -> std::io::Result<()> {
        self.uid = uid;
        odigos_proto::private::write(&self.dir.join("instance_uid"), hex(&uid).as_bytes())
    }

    /// The last config applied, if any.
    pub fn last_config(&self) -> Option<AgentRemoteConfig> {
        let bytes = std::fs::read(self.dir.join("last_config.pb")).ok()?;
        AgentRemoteConfig::decode(bytes.as_slice()).ok()
    }

    /// Owner-only: a remote config may carry secret values (the gateway's `secrets.json`).
    pub fn save_config(&self, config: &AgentRemoteConfig) -> std::io::Result<()> {
        odigos_proto::private::write(&self.dir.join("last_config.pb"), &config.encode_to_vec())
    }
}
