//! The `google.rpc` messages OTLP uses for errors: `Status` (the OTLP/HTTP error body and the
//! gRPC `grpc-status-details-bin` trailer) and `RetryInfo`, which tells a client when to retry.

use std::time::Duration;

use prost::Message;

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Status {
    /// A status that asks the client to retry after `delay`.
    pub fn retry_after(code: i32, message: &str, delay: Duration) -> Status {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        let detail = Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        };
        Status {
            code,
            message: message.into(),
            details: vec![detail],
        }
    }

    /// The delay a `RetryInfo` detail asks for, if there is one.
    pub fn retry_delay(&self) -> Option<Duration> {
        let detail = self
            .details
            .iter()
            .find(|d| d.type_url == RETRY_INFO_TYPE)?;
        let delay = RetryInfo::decode(detail.value.as_slice())
            .ok()?
            .retry_delay?;
        Some(Duration::new(
            delay.seconds.max(0) as u64,
            delay.nanos.max(0) as u32,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_round_trips() {
        let status = Status::retry_after(8, "full", Duration::from_millis(1500));
        let decoded = Status::decode(status.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.retry_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(Status::default().retry_delay(), None);
    }
}
