//! A small blocking client for the broker: one request at a time, or pipelined with
//! [`Client::send`] and [`Client::recv`]. Used by the CLI, the tests and the bench.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::time::Duration;

use herald_core::wire::msg::ErrorBody;
use herald_core::wire::{self, Body};
use herald_core::{Message, Payload};

/// A connection to `herald serve`.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    next_msg_id: u64,
    line: Vec<u8>,
}
/// A reply: the `*_ok` payload, or the error the server sent.
pub type Reply = Result<Payload, ErrorBody>;

/// Writes one request line (`{"src":"","dest":"","body":{...}}` and `\n`) to `line`;
/// the server names the connection, so `src` and `dest` are left empty.
pub fn encode_request(msg_id: u64, payload: Payload, line: &mut Vec<u8>) {
    let body = Body {
        payload,
        msg_id: Some(msg_id),
        in_reply_to: None,
    };
    wire::encode(
        &Message {
            src: String::new(),
            dest: String::new(),
            body,
        },
        line,
    );
}

impl Client {
    /// Connects to `addr` (host:port).
    pub fn connect(addr: &str) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
            next_msg_id: 1,
            line: Vec::new(),
        })
    }

    /// Gives up waiting for a reply after `timeout` (None: wait for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, payload: Payload) -> io::Result<Reply> {
        let id = self.send(payload)?;
        self.flush()?;
        loop {
            let (in_reply_to, reply) = self.recv()?;
            if in_reply_to == Some(id) {
                return Ok(reply);
            }
        }
    }

    /// Buffers a request (call [`Client::flush`] to send); returns its `msg_id`.
    pub fn send(&mut self, payload: Payload) -> io::Result<u64> {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        self.line.clear();
        encode_request(msg_id, payload, &mut self.line);
        self.writer.write_all(&self.line)?;
        Ok(msg_id)
    }

    /// Sends buffered requests.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// The next reply line: (`in_reply_to`, reply).
    pub fn recv(&mut self) -> io::Result<(Option<u64>, Reply)> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let msg = wire::decode(self.line.trim_ascii_end()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad reply from the server: {e}"),
            )
        })?;
        let reply = match msg.body.payload {
            Payload::Error(e) => Err(e),
            ok => Ok(ok),
        };
        Ok((msg.body.in_reply_to, reply))
    }
}
