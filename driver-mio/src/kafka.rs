//! The Kafka listener's side of a connection: its frame decoder and its
//! `herald_kafka::Session`, which turns frames into broker requests and the broker's
//! replies into response frames. The server moves bytes and steps the node; it never
//! looks inside a Kafka message.

use std::net::SocketAddr;

use herald_kafka::{FrameDecoder, Session, SessionConfig};

/// How `herald serve` speaks Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Where the Kafka listener listens.
    pub addr: SocketAddr,
    /// What Metadata and FindCoordinator tell clients to connect to (host:port);
    /// `None`: the address bound.
    pub advertised_addr: Option<String>,
    /// The largest request frame a client may send; a bigger one closes its
    /// connection.
    pub max_frame_bytes: usize,
    /// Requests in flight on one connection before it stops being read.
    pub max_in_flight: usize,
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_addr: None,
            max_frame_bytes: 64 << 20,
            max_in_flight: 1_024,
        }
    }
}

impl KafkaConfig {
    /// The session configuration of this listener, bound at `bound`, for node
    /// `node_id` (its index in the cluster).
    pub(crate) fn session(
        &self,
        bound: SocketAddr,
        node_id: i32,
        default_partitions: u32,
    ) -> Result<SessionConfig, String> {
        let (host, port) = match &self.advertised_addr {
            None => (bound.ip().to_string(), i32::from(bound.port())),
            Some(text) => {
                let (host, port) = text
                    .rsplit_once(':')
                    .ok_or_else(|| format!("--kafka-advertised-addr {text:?} is not host:port"))?;
                let port = port
                    .parse::<u16>()
                    .map_err(|e| format!("--kafka-advertised-addr {text:?}: {e}"))?;
                (host.to_owned(), i32::from(port))
            }
        };
        Ok(SessionConfig {
            node_id,
            advertised_host: host,
            advertised_port: port,
            default_partitions: default_partitions.max(1),
            max_in_flight: self.max_in_flight,
            ..SessionConfig::default()
        })
    }
}

/// A Kafka connection's protocol state.
pub(crate) struct KafkaConn {
    /// Splits the byte stream into request frames.
    pub decoder: FrameDecoder,
    /// The connection's requests in flight.
    pub session: Session,
}

impl KafkaConn {
    /// A new connection's state.
    pub(crate) fn new(config: &KafkaConfig, session: SessionConfig) -> KafkaConn {
        KafkaConn {
            decoder: FrameDecoder::new(config.max_frame_bytes),
            session: Session::new(session),
        }
    }
}
