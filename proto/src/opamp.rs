//! OpAMP messages (`opamp.v1`), generated from `proto/opamp.proto`, and the capability bits
//! both sides announce.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/opamp.v1.rs"));

/// The largest OpAMP message either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The WebSocket frame header: a varint that must be 0 in this version of the protocol.
pub const WS_HEADER: u8 = 0;

/// A remote config file of secret values, beside the collector's config: a JSON object of file
/// names and values. The agent writes each into its secrets directory, where the config's
/// `${file:...}` references point, and never reports, shows or logs them.
pub const SECRETS_FILE: &str = "secrets.json";

/// Capability bits as `u64`, for the `capabilities` fields.
pub fn bits(capabilities: &[AgentCapabilities]) -> u64 {
    capabilities.iter().fold(0, |all, c| all | *c as u64)
}

/// Server capability bits as `u64`.
pub fn server_bits(capabilities: &[ServerCapabilities]) -> u64 {
    capabilities.iter().fold(0, |all, c| all | *c as u64)
}

/// A new instance uid: a UUIDv7 (milliseconds since the epoch, then random bits).
pub fn new_instance_uid() -> [u8; 16] {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut uid: [u8; 16] = rand::random();
    uid[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    uid[6] = (uid[6] & 0x0f) | 0x70;
    uid[8] = (uid[8] & 0x3f) | 0x80;
    uid
}

/// Lowercase hex, as uids and hashes are shown.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a uid written as 32 hex digits, as [`hex`] writes it.
pub fn parse_uid(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut uid = [0u8; 16];
    for (i, byte) in uid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(uid)
}

/// Encodes a message as one WebSocket binary frame: the header byte, then the message.
pub fn ws_frame(message: &impl prost::Message) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + message.encoded_len());
    frame.push(WS_HEADER);
    message.encode(&mut frame).expect("a Vec grows as needed");
    frame
}

/// Splits a WebSocket binary frame into its message bytes; the header must be 0.
pub fn ws_payload(frame: &[u8]) -> Result<&[u8], &'static str> {
    match frame.split_first() {
        Some((&WS_HEADER, payload)) => Ok(payload),
        Some(_) => Err("the frame header is not 0"),
        None => Err("empty frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn frames_round_trip_and_bits_match_the_specification() {
        let message = AgentToServer {
            instance_uid: vec![7; 16],
            sequence_num: 3,
            capabilities: bits(&[
                AgentCapabilities::ReportsStatus,
                AgentCapabilities::AcceptsRemoteConfig,
                AgentCapabilities::ReportsEffectiveConfig,
                AgentCapabilities::ReportsHeartbeat,
            ]),
            ..Default::default()
        };
        let frame = ws_frame(&message);
        assert_eq!(frame[0], 0);
        let decoded = AgentToServer::decode(ws_payload(&frame).unwrap()).unwrap();
        assert_eq!(decoded, message);
        assert_eq!(decoded.capabilities, 0x2007);
        assert_eq!(AgentCapabilities::ReportsHeartbeat as u64, 0x2000);
        assert_eq!(
            AgentCapabilities::ReportsConnectionSettingsStatus as u64,
            0x8000
        );
        assert_eq!(
            ServerCapabilities::AcceptsConnectionSettingsRequest as u64,
            0x40
        );
        assert_eq!(ServerToAgentFlags::ReportFullState as u64, 1);
        assert!(ws_payload(&[1, 2, 3]).is_err());
        assert!(ws_payload(&[]).is_err());
        let uid = new_instance_uid();
        assert_eq!(parse_uid(&hex(&uid)), Some(uid));
        assert_eq!(parse_uid("xyz"), None);
        assert_eq!(parse_uid(&"zz".repeat(16)), None);
    }
}
