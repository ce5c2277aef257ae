//! A session wired to an in-process node: the whole Kafka path without sockets, for
//! tests, golden transcripts and the fuzzer.

use herald_core::wire::msg::Init;
use herald_core::wire::Body;
use herald_core::{Config, Effect, Effects, Event, Message, Node, Payload, Time};

use crate::{Session, SessionConfig};

const CLIENT: &str = "kafka-client";
const NODE: &str = "n0";

/// One Kafka connection to a single node, stepped by hand.
pub struct Loopback {
    node: Node,
    session: Session,
    effects: Effects,
    now_ms: u64,
}

impl Loopback {
    /// A fresh node with `config`, and a connection to it.
    pub fn new(config: Config, session: SessionConfig) -> Loopback {
        let mut node = Node::new(config);
        let mut effects = Effects::new();
        let init = Payload::Init(Init {
            node_id: NODE.into(),
            node_ids: vec![NODE.into()],
        });
        node.step(Time::ZERO, Event::Message(message(init, 0)), &mut effects);
        effects.clear(); // init_ok: nothing waits for it
        Loopback {
            node,
            session: Session::new(session),
            effects,
            now_ms: 0,
        }
    }

    /// Moves the clock on by `ms` and runs what is due (parked fetches end).
    pub fn advance_ms(&mut self, ms: u64) -> Result<(), String> {
        self.now_ms += ms;
        let now = Time::from_millis(self.now_ms);
        self.node.step(now, Event::Tick, &mut self.effects);
        self.deliver()?;
        self.session.handle_timeout(self.now_ms)?;
        self.pump()
    }

    /// Feeds one request frame (without its length prefix) and runs it as far as it
    /// goes; returns the response bytes that are ready, in order.
    pub fn request(&mut self, frame: &[u8]) -> Result<Vec<u8>, String> {
        let frame = bytes::Bytes::copy_from_slice(frame);
        self.session.handle_frame(self.now_ms, frame)?;
        self.pump()?;
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        Ok(out)
    }

    /// Responses that became ready since the last call (after [`Loopback::advance_ms`]).
    pub fn ready(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        out
    }

    /// Sends the session's requests to the node and its replies back, until quiet.
    fn pump(&mut self) -> Result<(), String> {
        while let Some((msg_id, payload)) = self.session.poll_request() {
            let now = Time::from_millis(self.now_ms);
            let msg = message(payload, msg_id);
            self.node.step(now, Event::Message(msg), &mut self.effects);
            self.deliver()?;
        }
        Ok(())
    }

    fn deliver(&mut self) -> Result<(), String> {
        let mut appended = false;
        for effect in std::mem::take(&mut self.effects) {
            let Effect::Send(reply) = effect else {
                continue;
            };
            appended |= matches!(reply.body.payload, Payload::KafkaProduceOk(_));
            if let (CLIENT, Some(id)) = (reply.dest.as_str(), reply.body.in_reply_to) {
                self.session
                    .handle_reply(self.now_ms, id, reply.body.payload)?;
            }
        }
        if appended && self.session.has_parked() {
            self.session.retry_parked(self.now_ms)?;
        }
        Ok(())
    }
}

fn message(payload: Payload, msg_id: u64) -> Message {
    Message {
        src: CLIENT.into(),
        dest: NODE.into(),
        body: Body {
            payload,
            msg_id: Some(msg_id),
            in_reply_to: None,
        },
    }
}
